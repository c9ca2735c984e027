"""Top of the stack: each presented path's answer, kept while it holds.

Design notes
------------
Below this layer, one ``getattr`` walks every parent through every layer,
and every hop of a link chain, with a cache lookup at each step: tens of
microseconds for a merged image behind links.  The server asks the same
paths again and again (GETATTR, LOOKUP, and per READ a ``getattr`` then an
``open``), so this layer keeps, per presented path, what the stack answered,
and gives it again while it holds:

=====================  ======================================================
kept for a path        a hit
=====================  ======================================================
its attributes         one dict lookup, one clock reading
``NotFound``,          the same, and the exception raised anew
``NotADirectory``
how to open it         the source the stack opened (a prepared merge, or a
                       plain file's cached descriptor) taken again with
                       ``Source.handle``, and the link sources of a chain above
                       it made again (as ``LinksLayer.open_file`` does); a
                       plain file is re-``stat``ed first, as the passthrough
                       does at every open
a directory's entries  the very object the stack returned: the server keeps
                       its sorted copy while it gets the same object
=====================  ======================================================

How long an answer holds.  Every cache below says, through ``Context.note``,
until when the value it hands out holds (its birth plus ``ttl``; for a
prepared merge, its last check plus ``recheck``).  An answer is computed
inside ``Context.validity`` and kept until the earliest of those deadlines,
never longer than ``ttl``.  So nothing is served longer than the caches
below would have served it, and rule 8 holds as before: a change shows
within ``ttl`` (``recheck`` for a merge's inputs) of when the layers below
would show it.  One clock reading per call, and no lock, on a hit.

Renewed by one ``lstat``.  An answer past its deadline is made again by
walking every layer, unless it is a storage file or directory presented as
it is (a :class:`Stored` entry, not a ``NAME-flat.vmdk``: see
``_renewable_at``): what the stack answers for such a path depends on that
entry's own ``stat`` alone, so when an ``lstat`` of it still matches the
kept attributes, and every parent's answer holds or is renewed the same
way, the answer is kept ``ttl`` more.  A change to the entry (rewritten,
replaced, touched, removed, a link or a folder now) shows as soon as its
answer expires, as before; a new pancbt beside a flat image too, since a
flat image is never renewed.  The layers below are then not walked, so their
caches are refreshed at other moments than without the memo, and a change
may show a little later or sooner than it would there: never later than the
ttl after the storage changed (``tests/unit/test_layer_memo.py``, the
differential test, checks both).  Under a busy client (LOOKUPs of random
names of a large folder, each coming back after its answer expired) this
is one system call instead of a walk of every layer (14 against 3 µs,
``bench/namespace_micro.py``).

Dropped at once.  When a directory's listing is seen to change, or is
listed for the first time (the passthrough scans it: ``Context.changed``; a
merge found changed; ``readdir`` here gets another object from below), the
answers kept for its entries are dropped, and with them every answer below
them: an answer holds the one for its parent it was made with, and holds
only while that one is alive.  So ``getattr`` agrees with the listing a
client just read, as it does without the memo.  An answer computed while
anything was dropped is returned but not kept (a count of drops, compared
before storing): it may have been made from what was dropped.  A listing
is kept regardless: it is the object the caches below hand out until its
deadline anyway.

Not kept: ``AccessDenied``, ``StorageIOError``, ``InputChanged``, nor any
answer made from something the layers below did not cache (a failed
``stat`` or listing, a merge that could not be prepared: they say so with
``Context.volatile``); the next call asks again, as without the memo.  Only
the server's calls come here: link targets and a merge's inputs are looked
up below this layer (``LinksLayer.top`` is the hide layer), so loop
detection and ``Context.fresh`` never meet a memoized answer.

Readers.  The memo holds no reference on a source, so it keeps no descriptor
open: a hit takes one with ``Source.handle`` (``try_retain`` and a handle in
one call), which fails on a source the caches have closed since; the stack
then opens the path as it always did.  A plain file's reopen is one
``os.stat``, its four numbers compared one by one, and one lock taken on
the source to open and one to close (1.6 µs with the close, 0.9 of it the
``stat``; the memo's ``open`` and the close 2.2, 2.8 before).

Shared listings.  Given a :class:`merge.shared.SharedListings`, a large
listing computed here is also written there, with the deadline it holds
until, and one another process wrote is read there (if it still holds)
before the stack is asked to scan: see that module.

Bounds: ``size`` paths and ``dirs`` listings, the oldest stored going first
(paths a 64th at a time; an answer made again keeps its place and its key,
so an answer in use may go, and is then made again: one walk).  Lookups take
no lock (a dict read); stores and drops take one.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from stat import S_ISDIR, S_ISREG
from typing import NoReturn

from merge.attrs import stat_matches
from merge.layer import Context, Entry, Layer, Linked, Merged, Stored
from merge.names import FLAT_SUFFIX
from merge.namespace import (
    Attrs,
    IsADirectory,
    Kind,
    NamespaceError,
    NotADirectory,
    NotFound,
    PresentedPath,
)
from merge.shared import SharedListings, folder_stamp
from merge.sources import FileSource, Handle, LinkSource, MergedSource, Source

_KEPT_ERRORS = (NotFound, NotADirectory)
_stat = os.stat  # a plain file's, at each reopen
_DIR = Kind.DIR


class _Kept:
    """What the stack answered for one path, and until when it holds.

    ``parent`` is the answer for the path's parent that it was made with
    (``None`` for an entry of the root, which ``Layer.resolve`` does not
    check): an answer holds only while every answer up its chain is alive,
    so dropping a directory's entries drops everything below them too.

    Memory: one is kept per path asked (65,536 at most), so it has only the
    slots every answer needs; an error (:class:`_Failed`) and how to open a
    file again (:class:`_Opened`) are subclasses with their own.
    """

    __slots__ = ("attrs", "dead", "parent", "renewable", "until")

    # What the subclasses hold, for an answer that is neither.
    error: tuple[type[NamespaceError], tuple] | None = None
    source: Source | None = None  # a regular file's bytes below its links, once opened
    spath: str | None = None  # a plain file's storage path, re-stat'ed at each open
    links: tuple[tuple[Source, Attrs], ...] = ()  # (link file, attrs), outermost first

    def __init__(self, attrs: Attrs | None, parent: _Kept | None) -> None:
        self.until = float("-inf")  # set once computed
        self.attrs = attrs  # None: `error` is the answer
        self.parent = parent
        self.dead = False  # dropped, replaced or evicted
        self.renewable: Stored | None = None  # the entry whose lstat alone decides: see renew

    def current(self, now: float, ttl: float) -> bool:
        """Whether the answer holds now: unexpired, or expired and renewed, and so
        every expired answer up its chain (:meth:`renew`).

        A loop up the chain, then down it, not a recursion: a folder nested
        ~500 deep (a client's or a tree's) went past Python's recursion limit
        once its parents' answers had expired, and every call on it was a
        SERVERFAULT with a traceback of thousands of lines in the log."""
        if self.holds(now):
            return True
        expired: list[_Kept] = []  # self first, then the parents whose answers expired
        kept: _Kept | None = self
        while kept is not None and now >= kept.until:
            if kept.renewable is None or kept.dead:
                return False
            expired.append(kept)
            kept = kept.parent
        if not self.holds_above(kept):
            return False
        return all(k.renew(now, ttl) for k in reversed(expired))  # outermost first

    @staticmethod
    def holds_above(kept: _Kept | None) -> bool:
        """Whether no answer from ``kept`` up was dropped (an unexpired one holds)."""
        while kept is not None:
            if kept.dead:
                return False
            kept = kept.parent
        return True

    def renew(self, now: float, ttl: float) -> bool:
        """Whether this expired answer still holds, its parents' held or renewed
        (:meth:`current`), and if so keep it ``ttl`` more.

        Only for an answer :func:`_renewable_at` chose: a storage file or
        directory presented as it is, under a name no sibling can change the
        presentation of.  What the stack would answer for it now depends on
        that entry's own ``stat`` alone, so an ``lstat`` that matches the kept
        attributes (a symbolic link never does) is the stack's answer again,
        for one system call instead of a walk through every layer.
        """
        stored = self.renewable
        if stored is None or self.dead:
            return False
        try:
            st = os.lstat(stored.folder + stored.name)
        except OSError:
            return False
        assert self.attrs is not None
        if not (S_ISREG(st.st_mode) or S_ISDIR(st.st_mode)) or not stat_matches(self.attrs, st):
            return False
        self.until = now + ttl
        return True

    def holds(self, now: float) -> bool:
        if now >= self.until:
            return False
        kept: _Kept | None = self
        while kept is not None:
            if kept.dead:
                return False
            kept = kept.parent
        return True

    def raise_error(self) -> NoReturn:
        assert self.error is not None
        cls, args = self.error
        raise cls(*args)

    def reopen(self) -> Handle | None:
        """A handle on the same bytes, or ``None`` if the stack must open it again."""
        source = self.source
        if source is None:
            return None
        spath = self.spath
        if spath is not None:
            try:
                st = _stat(spath)
            except OSError:
                return None
            # a FileSource (spath is set for no other): no cast() called at run time
            if not source.stamp.matches(st):  # type: ignore[attr-defined]
                return None  # replaced: the passthrough opens the new file
        handle = source.handle()
        if handle is None:
            return None  # closed by the caches since
        for link_file, attrs in reversed(self.links):
            handle = Handle.adopt(LinkSource(handle, link_file, attrs))
        return handle


class _Failed(_Kept):
    """``NotFound`` or ``NotADirectory`` as the answer."""

    __slots__ = ("error",)

    def __init__(self, error: NamespaceError, parent: _Kept | None) -> None:
        super().__init__(None, parent)
        # Its class and arguments only: a traceback would keep the frames alive.
        self.error = (type(error), error.args)


class _Opened(_Kept):
    """A file's answer, and how ``reopen`` hands out its bytes again."""

    __slots__ = ("links", "source", "spath")

    def __init__(
        self, attrs: Attrs, parent: _Kept | None, how: tuple[Source, str | None, tuple]
    ) -> None:
        super().__init__(attrs, parent)
        self.source, self.spath, self.links = how


# What a dropped path's key holds until its answer is made again (``MemoLayer._drop``):
# an answer that never holds, and nothing below it was made with it.
_DROPPED = _Kept(None, None)
_DROPPED.dead = True


def _how_to_reopen(entry: Entry, handle: Handle) -> tuple[Source, str | None, tuple] | None:
    """What ``_Kept.reopen`` needs to hand out ``handle``'s bytes again, if it can."""
    source = handle.source
    origin = entry.origin
    links = []
    while isinstance(source, LinkSource) and isinstance(origin, Linked):
        links.append((source.link_file, source.attrs))
        source = source.target.source
        origin = origin.target_origin
    if isinstance(source, MergedSource) and isinstance(origin, Merged):
        return source, None, tuple(links)
    if isinstance(source, FileSource) and isinstance(origin, Stored):
        return source, origin.path, tuple(links)
    return None  # not what this layer knows how to reopen: always ask the stack


def _renewable_at(path: PresentedPath, entry: Entry) -> Stored | None:
    """The storage entry whose ``lstat`` alone decides ``entry``'s answer, if there is one.

    A :class:`Stored` entry is the passthrough's, unchanged by every layer
    above: no link presents it (a real file wins a name clash, rule 6), no
    layer hides it (only ``*-pancbt.vmdk`` names, which are never found).
    One name is an exception: ``NAME-flat.vmdk`` becomes a merged image
    when a pancbt appears beside it (rule 4), which its own ``stat`` does not
    show; it is always looked up again.  So is the root, which ``resolve``
    does not check.
    """
    if not path or path[-1].endswith(FLAT_SUFFIX) or not isinstance(entry.origin, Stored):
        return None
    return entry.origin  # its path joined at each renewal: no string of it kept


class MemoLayer(Layer):
    """Keeps each presented path's attributes, error or opened source while they hold."""

    def __init__(
        self,
        lower: Layer,
        ctx: Context,
        *,
        size: int = 65536,
        dirs: int = 1024,
        shared: SharedListings | None = None,
    ) -> None:
        super().__init__(lower, ctx)
        self._shared = shared if shared is not None and shared.enabled else None
        if size < 1 or dirs < 1:
            raise ValueError("size and dirs must be at least 1")
        self._clock = ctx.clock
        self._ttl = ctx.ttl
        self._size = size
        self._dirs = dirs
        # A plain dict (an OrderedDict costs ~45 bytes more a path): the oldest
        # stored go first, a 64th of them at a time once full (popping the first of
        # a dict one at a time costs more each time: it skips the slots emptied
        # before, until the dict compacts).  An answer made again keeps its place.
        self._kept: dict[PresentedPath, _Kept] = {}
        # directory -> names kept in it (a dict of None: ~30 bytes a name less than a set)
        self._names: dict[PresentedPath, dict[str, None]] = {}
        # A directory's entries, until when, and the answer for the directory.
        self._listings: OrderedDict[
            PresentedPath, tuple[float, Sequence[tuple[str, Attrs]], _Kept]
        ] = OrderedDict()
        self._drops = 0
        self._lock = threading.Lock()
        ctx.watch(self.changed)

    # -- the server's calls ---------------------------------------------------------

    def getattr(self, path: PresentedPath) -> Attrs:
        now = self._clock()
        kept = self._kept.get(path)
        if kept is None or not kept.current(now, self._ttl):
            kept = self._compute(path, now)
        if kept.attrs is None:
            kept.raise_error()
        return kept.attrs

    def open(self, path: PresentedPath) -> Handle:
        now = self._clock()
        kept = self._kept.get(path)
        if kept is not None and kept.current(now, self._ttl):
            if kept.attrs is None:
                kept.raise_error()
            if kept.attrs.kind == _DIR:
                raise IsADirectory("/" + "/".join(path))
            handle = kept.reopen()
            if handle is not None:
                return handle
        return self._open(path, now)

    def readdir(self, path: PresentedPath) -> Sequence[tuple[str, Attrs]]:
        now = self._clock()
        kept = self._listings.get(path)
        if kept is not None and now < kept[0] and kept[2].current(now, self._ttl):
            return kept[1]
        shared, stamp, got = self._shared, None, None
        with self.ctx.validity(now + self._ttl) as valid:
            d = self._kept_for(path, now)
            if d.attrs is None:
                d.raise_error()
            if d.attrs.kind != Kind.DIR:
                raise NotADirectory("/" + "/".join(path))
            if shared is not None:  # another process's listing, if it holds
                stamp = folder_stamp(os.path.join(self.ctx.root, *path))
                got = None if stamp is None else shared.load(path, now, stamp)
            if got is not None:
                items, until = got
                self.ctx.note(until)
            else:
                items = self.lower.listing(path).items
        if shared is not None and got is None and valid[0] > now:
            items = shared.store(path, items, valid[0], stamp)
        # The object the caches below hand out until valid[0] whatever is
        # dropped meanwhile: kept with no check of the drops.
        with self._lock:
            if kept is None or kept[1] is not items:
                self._drop(path)  # what was kept for its entries may disagree with it
            self._listings.pop(path, None)
            self._listings[path] = (valid[0], items, d)
            while len(self._listings) > self._dirs:
                self._listings.popitem(last=False)
        return items

    # -- dropping ---------------------------------------------------------------------

    def changed(self, path: PresentedPath) -> None:
        """The listing of directory ``path`` changed: drop what was kept for its entries."""
        with self._lock:
            self._drop(path)

    def clear(self) -> None:
        with self._lock:
            self._drops += 1
            self._kept.clear()
            self._names.clear()
            self._listings.clear()

    def _drop(self, path: PresentedPath) -> None:
        self._drops += 1
        kept_at = self._kept
        for name in self._names.get(path, ()):
            key = (*path, name)
            kept = kept_at.get(key)
            if kept is not None and kept is not _DROPPED:
                kept.dead = True  # and so everything made with it, below it
                # The key stays (and so its name in _names): the answer made again
                # is stored under the same tuple, not one more copy of the path.
                kept_at[key] = _DROPPED

    # -- computing and keeping answers ----------------------------------------------------

    def _kept_for(self, path: PresentedPath, now: float) -> _Kept:
        """The answer for ``path``, kept or computed; how long it holds noted."""
        kept = self._kept.get(path)
        if kept is not None and kept.current(now, self._ttl):
            self.ctx.note(kept.until)
            return kept
        return self._compute(path, now)

    def _compute(self, path: PresentedPath, now: float) -> _Kept:
        """The answer for ``path`` from the stack, after its parents' (``Layer.resolve``).

        From the nearest ancestor whose answer holds, each path below it is
        computed in turn, with its parent's answer: no recursion, whatever
        the depth.
        """
        i = len(path) - 1
        parent = None
        while i >= 1:
            kept = self._kept.get(path[:i])
            if kept is not None and kept.current(now, self._ttl):
                parent = kept
                break
            i -= 1
        for j in range(i + 1, len(path) + 1):
            parent = self._lookup(path[:j], parent, now)
        assert parent is not None
        return parent

    def _lookup(self, path: PresentedPath, parent: _Kept | None, now: float) -> _Kept:
        drops = self._drops
        if len(path) < 2:
            parent = None  # as Layer.resolve: the root is not checked
        with self.ctx.validity(now + self._ttl) as valid:
            try:
                entry = self._entry(path, parent)
                kept = _Kept(entry.attrs, parent)
                kept.renewable = _renewable_at(path, entry)
            except _KEPT_ERRORS as e:
                kept = _Failed(e, parent)
        kept.until = valid[0]
        self._keep(path, kept, drops, now)
        return kept

    def _entry(self, path: PresentedPath, parent: _Kept | None) -> Entry:
        """``path``'s entry from the stack, ``parent`` (the answer for its parent) checked."""
        if parent is not None:
            self.ctx.note(parent.until)
            if parent.attrs is None:
                parent.raise_error()
            if parent.attrs.kind != Kind.DIR:
                raise NotADirectory("/" + "/".join(path[:-1]))
        return self.lower.lookup(path)

    def _open(self, path: PresentedPath, now: float) -> Handle:
        drops = self._drops
        handle = None
        parent = None
        with self.ctx.validity(now + self._ttl) as valid:
            try:
                if len(path) > 1:
                    parent = self._kept_for(path[:-1], now)
                entry = self._entry(path, parent)
            except _KEPT_ERRORS as e:
                error = _Failed(e, parent)
                error.until = valid[0]
                self._keep(path, error, drops, now)
                raise
            if entry.attrs.kind != Kind.DIR:
                handle = self.lower.open_file(path)
        how = None if handle is None else _how_to_reopen(entry, handle)
        kept = _Kept(entry.attrs, parent) if how is None else _Opened(entry.attrs, parent, how)
        kept.until = valid[0]
        kept.renewable = _renewable_at(path, entry)
        self._keep(path, kept, drops, now)
        if handle is None:
            raise IsADirectory("/" + "/".join(path))
        return handle

    def _keep(self, path: PresentedPath, kept: _Kept, drops: int, now: float) -> None:
        """Keep ``kept``; or not, and then nothing made with it holds either."""
        if kept.until <= now:
            kept.dead = True  # made from something not cached below (Context.volatile)
            return
        with self._lock:
            if self._drops != drops:
                kept.dead = True  # something was dropped since it was computed: maybe stale
                return
            old = self._kept.get(path)
            if old is not None:
                old.dead = True  # what was made with it is made again with this one
                # Replaced in place (or a dropped one, _DROPPED): the dict keeps the
                # key it holds, so a path asked again is one tuple (and name), not one
                # more per answer made again.
                self._kept[path] = kept
            else:
                if path:
                    self._names.setdefault(path[:-1], {})[path[-1]] = None
                self._kept[path] = kept  # last in the order of eviction
            if len(self._kept) > self._size:
                self._evict(len(self._kept) - self._size + self._size // 64)

    def _evict(self, count: int) -> None:
        """Drop the ``count`` answers stored first (the lock held)."""
        kept_at = self._kept
        for gone in list(itertools.islice(kept_at, count)):
            kept_at.pop(gone).dead = True  # out of reach of drops: nor what was made with it
            if gone:
                names = self._names.get(gone[:-1])
                if names is not None:
                    names.pop(gone[-1], None)
                    if not names:
                        del self._names[gone[:-1]]
