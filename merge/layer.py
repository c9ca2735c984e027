"""The filter stack: what every layer shares, and the defaults a filter inherits.

Design notes
------------
The namespace is a stack of layers, nbdkit-style.  Each holds the layer
below it and overrides only the calls whose answer it changes; the others
fall through to the lower layer:

==================  ====================================================
layer               changes
==================  ====================================================
``MemoLayer``       top: nothing but the speed: keeps each path's answer
                    while the caches below hold (``merge.memo``)
``HideLayer``       drops ``*-pancbt.vmdk`` names, reports orphans; the
                    top as link targets see it
``MergeLayer``      ``NAME-flat.vmdk`` beside a pancbt becomes merged
``LinksLayer``      SmartMotion ``.json`` links become their target
``Passthrough``     bottom: the storage directory, read-only
==================  ====================================================

Inside the stack a layer speaks in :class:`Entry` (attributes, where the
bytes come from, how many links deep) and :class:`Listing` (a directory's
entries, and the names withheld by rule 5 so that upper layers can tell "not
there" from "there but wrong").  The server's four calls
(:class:`merge.namespace.Namespace`) are built once, here, on three
internal ones a filter may override:

=====================  ==================================================
``lookup(path)``       the entry of ``path``, whose parent is known to be
                       a presented directory
``listing(dir)``       the entries of a presented directory
``open_file(path)``    a :class:`~merge.sources.Handle` on a presented file
=====================  ==================================================

``resolve(path)`` checks every parent of ``path`` is a presented directory
before looking ``path`` up; ``getattr``, ``readdir``, ``open`` and the link
layer's target lookups go through it, so nothing below a hidden or
non-directory entry is ever reached.

What the layers share for the memo at the top (:class:`Context`): caches
``note`` until when what they hand out holds, a layer that hands out
something it did not cache says so (``volatile``), and a layer that sees a
directory's entries change early says so (``changed``).  A listing that did
not change is handed out again as the same object.
"""

from __future__ import annotations

import contextlib
import operator
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from merge.cache import Clock
from merge.namespace import (
    Attrs,
    FsStats,
    IsADirectory,
    Kind,
    NotADirectory,
    PresentedPath,
)
from merge.problems import Problems
from merge.sources import Handle

# --- where an entry's bytes come from (for ``ls`` and messages) ---


@dataclass(frozen=True, slots=True, init=False)
class Stored:
    """A storage file or directory, presented as it is, at ``folder + name``.

    Kept as two strings, not one path: ``folder`` (up to and with the last
    separator) is one string shared by every entry of a listing, and ``name``
    is the listing's own (its dict key).  A folder of 10,000 names holds no
    whole storage path each (~110 bytes a name).  ``Stored(path)`` splits it.
    """

    folder: str
    name: str

    def __init__(self, path: str) -> None:
        i = path.rfind(os.sep) + 1
        _set_folder(self, path[:i])
        _set_name(self, path[i:])

    @property
    def path(self) -> str:
        return self.folder + self.name

    @property
    def where(self) -> str:
        return self.path


@dataclass(frozen=True, slots=True)
class Linked:
    """A SmartMotion link file, presenting its target."""

    link: str
    target: PresentedPath
    target_origin: Origin

    @property
    def where(self) -> str:
        return self.link


@dataclass(frozen=True, slots=True)
class Merged:
    """A base image with a pancbt's extents spliced in."""

    base: Origin
    pancbt: Origin

    @property
    def where(self) -> str:
        return self.pancbt.where


Origin = Stored | Linked | Merged


@dataclass(frozen=True, slots=True)
class Entry:
    """A presented entry inside the stack."""

    attrs: Attrs
    origin: Origin
    depth: int = 0  # SmartMotion links followed to reach its bytes (rule 3: at most 16)


# Entry and Stored are frozen dataclasses with slots: their __init__ sets each
# slot with object.__setattr__.  A listing makes one of each per entry, and
# setting the slots with their own descriptors is a third of the cost (as
# merge.attrs.attrs_of does for Attrs; tests/unit/test_layer_memo.py checks
# that the two agree).
_new = object.__new__
_set_folder, _set_name = (vars(Stored)[n].__set__ for n in ("folder", "name"))
_set_attrs, _set_origin, _set_depth = (vars(Entry)[n].__set__ for n in ("attrs", "origin", "depth"))


def stored_in(folder: str, name: str) -> Stored:
    """``Stored(folder + name)`` without splitting it: ``folder`` ends with a separator."""
    origin = _new(Stored)
    _set_folder(origin, folder)
    _set_name(origin, name)
    return origin


def stored_entry(attrs: Attrs, folder: str, name: str) -> Entry:
    """``Entry(attrs, Stored(folder + name))``, made quicker: the passthrough's entry of a
    listing (``folder`` ends with a separator, and is the same string for all of them)."""
    origin = _new(Stored)
    _set_folder(origin, folder)
    _set_name(origin, name)
    entry = _new(Entry)
    _set_attrs(entry, attrs)
    _set_origin(entry, origin)
    _set_depth(entry, 0)
    return entry


_ITEMS_LOCK = threading.Lock()
_attrs_of = operator.attrgetter("attrs")


class Listing:
    """A presented directory: its entries, and the names rule 5 withholds.

    Immutable once built, and shared: a layer that changes nothing in a
    directory hands the lower layer's listing on, and a layer refreshing a
    listing whose content did not change hands out the previous object again,
    so the server's sorted copy (cached by identity) stays valid.
    """

    __slots__ = ("_items", "entries", "withheld")

    def __init__(self, entries: Mapping[str, Entry], withheld: frozenset[str] = frozenset()):
        self.entries = entries
        self.withheld = withheld
        self._items: tuple[tuple[str, Attrs], ...] | None = None

    @property
    def items(self) -> tuple[tuple[str, Attrs], ...]:
        """``(name, attrs)`` of every entry: built on first use, then always this object."""
        items = self._items
        if items is None:
            with _ITEMS_LOCK:
                items = self._items
                if items is None:
                    entries = self.entries
                    items = tuple(zip(entries, map(_attrs_of, entries.values()), strict=True))
                    self._items = items
        return items

    @classmethod
    def renewed(
        cls, previous: Listing | None, entries: Mapping[str, Entry], withheld: set[str]
    ) -> Listing:
        """A listing of ``entries``: ``previous`` itself when it presents the same."""
        if previous is not None and previous.same(entries, withheld):
            return previous
        return cls(entries, frozenset(withheld))

    def same(self, entries: Mapping[str, Entry], withheld: frozenset[str] | set[str]) -> bool:
        """Whether this listing presents exactly ``entries`` and ``withheld``.

        Fast when the entries are the same objects (a dict comparison checks
        identity before equality).
        """
        return self.withheld == withheld and self.entries == entries


# --- what all layers share -------------------------------------------------------


class Context:
    """Settings, clock and problem registry shared by the layers of one stack."""

    def __init__(
        self,
        root: str,
        clock: Clock,
        problems: Problems,
        ttl: float = 1.0,
        recheck: float = 1.0,
    ) -> None:
        self.root = root
        self.clock = clock
        self.problems = problems
        self.ttl = ttl  # listings and stats are at most this old
        self.recheck = recheck  # prepared merges re-stat their inputs this often
        self._local = threading.local()
        self._watchers: list[Callable[[PresentedPath], None]] = []

    def due(self, checked_at: float) -> bool:
        """Whether something checked at ``checked_at`` must be checked again now."""
        return self.forced() or self.clock() - checked_at >= self.recheck

    def forced(self) -> bool:
        return getattr(self._local, "fresh", 0) > 0

    @contextlib.contextmanager
    def fresh(self) -> Iterator[None]:
        """Inside, on this thread, cached inputs are re-stat'ed before use.

        A merge being prepared opens its inputs in this mode, so that a base
        that is itself merged is not taken from a cache checked up to a
        second ago: the new merge never pairs a new pancbt with an old base.
        """
        self._local.fresh = getattr(self._local, "fresh", 0) + 1
        try:
            yield
        finally:
            self._local.fresh -= 1

    # -- how long an answer holds (for the memo at the top, ``merge.memo``) ------

    @contextlib.contextmanager
    def validity(self, until: float) -> Iterator[list[float]]:
        """Inside, on this thread, ``note`` lowers the deadline in the yielded cell.

        The cell starts at ``until``; on leaving, an enclosing cell is
        lowered too (an answer holds no longer than the answers it used).
        """
        outer = getattr(self._local, "valid", None)
        cell = [until]
        self._local.valid = cell
        try:
            yield cell
        finally:
            self._local.valid = outer
            if outer is not None and cell[0] < outer[0]:
                outer[0] = cell[0]

    def note(self, until: float) -> None:
        """What is being computed on this thread used something valid until ``until``."""
        cell = getattr(self._local, "valid", None)
        if cell is not None and until < cell[0]:
            cell[0] = until

    def volatile(self) -> None:
        """What is being computed on this thread used something not cached: keep it not."""
        self.note(float("-inf"))

    def watch(self, listener: Callable[[PresentedPath], None]) -> None:
        """Call ``listener(directory)`` whenever a directory's listing is seen to change."""
        self._watchers.append(listener)

    def changed(self, path: PresentedPath) -> None:
        for listener in self._watchers:
            listener(path)


class Layer:
    """A namespace filter; by default every call goes to the layer below."""

    def __init__(self, lower: Layer | None, ctx: Context) -> None:
        self._lower = lower
        self.ctx = ctx

    @property
    def lower(self) -> Layer:
        assert self._lower is not None, "the bottom layer overrides every call"
        return self._lower

    # -- what a filter overrides --------------------------------------------------

    def lookup(self, path: PresentedPath) -> Entry:
        return self.lower.lookup(path)

    def listing(self, path: PresentedPath) -> Listing:
        return self.lower.listing(path)

    def open_file(self, path: PresentedPath) -> Handle:
        return self.lower.open_file(path)

    def fsstat(self) -> FsStats:
        return self.lower.fsstat()

    # -- merge.namespace.Namespace, built once on the calls above ------------------

    def resolve(self, path: PresentedPath) -> Entry:
        """The entry of ``path``, each parent checked to be a presented directory."""
        for i in range(1, len(path)):
            if self.lookup(path[:i]).attrs.kind != Kind.DIR:
                raise NotADirectory("/" + "/".join(path[:i]))
        return self.lookup(path)

    def getattr(self, path: PresentedPath) -> Attrs:
        return self.resolve(path).attrs

    def readdir(self, path: PresentedPath) -> Sequence[tuple[str, Attrs]]:
        if self.resolve(path).attrs.kind != Kind.DIR:
            raise NotADirectory("/" + "/".join(path))
        return self.listing(path).items

    def open(self, path: PresentedPath) -> Handle:
        if self.resolve(path).attrs.kind == Kind.DIR:
            raise IsADirectory("/" + "/".join(path))
        return self.open_file(path)
