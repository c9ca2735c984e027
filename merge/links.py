"""SmartMotion links (namespace.md rules 3, 5 and 6): ``.json`` files become their target.

Design notes
------------
A directory is seen in two steps, each cached for ``ttl`` seconds:

1. its *index*: the lower layer's entries, each ``*.json`` read once (and
   again only when its size, mtime or ctime changes) and split into real
   entries and links by presented name.  Clashes are settled here: a real
   entry wins over a link (rule 6), and two links presenting one name are
   both ignored (spec silent: showing either could be wrong).  No target is
   looked at.
2. its *listing*: the index with every link *resolved*.

Resolving a link looks its target up *as presented*, through the top of the
stack (``self.top``), so the target may be another link or a merged image,
and is never a hidden pancbt nor a link's own ``.json``.  The target path is
taken relative to the link's directory after its symbolic links are
resolved (``cd -P``), so a link reached through a symbolically linked
directory names the same file; a ``..`` above the storage root fails.

Depth and loops.  A link's *depth* is the number of links followed to reach
its bytes, counted through merged images (a merged image's depth is its
base's): rule 3 allows 16.  A thread-local stack holds the links being
resolved on this thread:

=========================================  ===================================
found while resolving                      outcome
=========================================  ===================================
a link already on the stack                a loop: every link on it fails
                                           ("in a loop"), cached
17 links on the stack                      too deep *from the outermost link*
                                           only: nothing cached below it, the
                                           outermost fails ("more than 16")
a resolved target of depth 16              this link is 17 deep: fails
=========================================  ===================================

The stack also bounds recursion, so a hostile chain never exhausts Python's
stack.  Lower layers (the merge layer between two links of a chain) let the
two internal errors through untouched, so nothing caches a failure that
depends on where the resolution started.

Opening a link opens its target through the top and wraps it in a
:class:`~merge.sources.LinkSource`, which is current while the link file
and the target are.

Refreshed after ``ttl``, an index whose lower listing is the same object is
kept; a resolved link equal to the one cached is kept as it was; a listing
equal to the last is handed out again (the same object), and a directory
without a link file is listed as the layer below lists it.  Only ``*.json``
entries are looked at (and only those of at most 64 KiB are read).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from collections import defaultdict
from collections.abc import Iterator
from typing import NamedTuple

from merge import stamps
from merge.attrs import fileid_for
from merge.cache import TtlLru
from merge.layer import Context, Entry, Layer, Linked, Listing
from merge.names import is_pancbt
from merge.namespace import (
    AccessDenied,
    InputChanged,
    Kind,
    NamespaceError,
    NotADirectory,
    NotFound,
    PresentedPath,
    Withheld,
)
from merge.smartmotion import MAX_LINK_SIZE, SUFFIX, BadLink, LinkDoc, parse_link, target_path
from merge.sources import Handle, LinkSource, Source, read_at

MAX_LINK_DEPTH = 16


class _LinkLoop(NamespaceError):
    """Internal: the link being resolved is already being resolved on this thread."""


class _TooDeep(NamespaceError):
    """Internal: 16 links are already being resolved on this thread."""


class _Failed(NamedTuple):
    reason: str


_StatKey = tuple[int, int, int]  # size, mtime_ns, ctime_ns of a link file


class _Spec(NamedTuple):
    """A link file as read: its name, storage path, what it says, and its version."""

    file: str
    spath: str
    doc: LinkDoc
    key: _StatKey
    source: Source  # the link file's (closed) source: its stamp and attributes


class _Index(NamedTuple):
    real: dict[str, Entry]  # presented as they are
    links: dict[str, _Spec]  # presented name -> the one link presenting it
    withheld: frozenset[str]
    low: Listing  # the lower listing it was made from
    racy: bool = False  # a link file of it was read while racy (merge.stamps): read again


_Doc = LinkDoc | None | BadLink  # what a .json file is: a link, an ordinary file, a bad link


class LinksLayer(Layer):
    """Presents each SmartMotion link under its name, with its target's bytes."""

    def __init__(self, lower: Layer, ctx: Context, *, cache_size: int = 65536) -> None:
        super().__init__(lower, ctx)
        self.top: Layer = self  # set to the top of the stack once it is built
        self._docs: TtlLru[str, tuple[_Doc, _StatKey, Source | None]] = TtlLru(
            cache_size, None, ctx.clock
        )
        self._indexes: TtlLru[PresentedPath, _Index] = TtlLru(
            1024, ctx.ttl, ctx.clock, note=ctx.note
        )
        self._listings: TtlLru[PresentedPath, Listing] = TtlLru(
            1024, ctx.ttl, ctx.clock, note=ctx.note
        )
        self._resolved: TtlLru[tuple[PresentedPath, str], tuple[_StatKey, Entry | _Failed]] = (
            TtlLru(cache_size, ctx.ttl, ctx.clock, note=ctx.note)
        )
        self._local = threading.local()

    # -- the layer's calls ------------------------------------------------------------

    def lookup(self, path: PresentedPath) -> Entry:
        if not path:
            return self.lower.lookup(path)
        real = self._real(path)
        if real is not None:
            return real  # rule 6: a real entry wins over a link of the same name
        try:
            spec = self._spec(path)
        except NotFound:
            self.lower.lookup(path)  # Withheld when the storage holds the name
            raise
        try:
            return self._resolve(path[:-1], spec)
        except Withheld:
            raise
        except NotFound as e:  # a link presents the name, but cannot be followed
            raise Withheld(str(e)) from None

    def listing(self, path: PresentedPath) -> Listing:
        hit = self._listings.find(path)
        if hit is not None and hit[1]:
            return hit[0]
        index = self._index(path)
        low = index.low
        if not index.links and len(index.real) == len(low.entries):
            # No link file here: the listing below, as it is.
            self._listings.put(path, low)
            return low
        entries = dict(index.real)
        withheld = set(index.withheld)
        for name, spec in index.links.items():
            try:
                entries[name] = self._resolve(path, spec)
            except NotFound:
                withheld.add(name)
            except (_LinkLoop, _TooDeep):  # pragma: no cover - a listing is never nested
                raise
            except NamespaceError as e:  # a target unreadable now: withhold this one only
                withheld.add(name)
                self.ctx.problems.report(5, spec.spath, f"target cannot be read: {e!r}")
        found = Listing.renewed(hit[0] if hit else None, entries, withheld)
        self._listings.put(path, found)
        return found

    def open_file(self, path: PresentedPath) -> Handle:
        if self._real(path) is not None:
            return self.lower.open_file(path)
        d = path[:-1]
        spec = self._spec(path)
        if self.ctx.forced() and not spec.source.is_current():
            spec = self._reread(d, spec, path[-1])
        entry = self._resolve(d, spec)
        assert isinstance(entry.origin, Linked)
        outermost = not self._stack()
        try:
            with self._pushed(spec.spath):
                target = self.top.open(entry.origin.target)
        except (_LinkLoop, _TooDeep):
            if not outermost:
                raise
            # Resolution found no loop, so a link changed since: say so, serve nothing.
            raise InputChanged(f"{spec.spath}: links changed while being opened") from None
        return Handle.adopt(LinkSource(target, spec.source, entry.attrs))

    # -- real entries and link files ----------------------------------------------------

    def _real(self, path: PresentedPath) -> Entry | None:
        """The lower entry at ``path`` if it is presented as it is, else ``None``."""
        try:
            entry = self.lower.lookup(path)
        except NotFound:
            return None
        if path and self._doc(path, entry) is not None:
            return None  # a link file (or a bad one): not presented under its own name
        return entry

    def _doc(self, path: PresentedPath, entry: Entry) -> _Doc:
        """What the file at ``path`` is, read again only when its stat changed."""
        doc, _, _ = self._read_doc(path, entry, fresh=False)
        return doc

    def _read_doc(
        self, path: PresentedPath, entry: Entry, *, fresh: bool
    ) -> tuple[_Doc, _StatKey, Source | None]:
        a = entry.attrs
        if not path[-1].endswith(SUFFIX) or a.kind != Kind.REG or a.size > MAX_LINK_SIZE:
            return None, (0, 0, 0), None
        spath = entry.origin.where
        key = (a.size, a.mtime_ns, a.ctime_ns)
        cached = self._docs.get(spath)
        if cached is not None and cached[1] == key and not fresh:
            return cached
        opened = stamps.now_ns()
        try:
            with self.lower.open_file(path) as handle:
                raw = read_at(handle, 0, MAX_LINK_SIZE + 1)
                source = handle.source
        except NotFound:
            self.ctx.volatile()  # not cached: read again next time
            return None, key, None  # gone since it was listed: nothing to present
        except NamespaceError as e:
            self.ctx.volatile()
            doc: _Doc = BadLink(f"link file cannot be read: {type(e).__name__}")
            return doc, key, None
        key = (source.attrs.size, source.attrs.mtime_ns, source.attrs.ctime_ns)
        try:
            doc = parse_link(path[-1], raw)
        except BadLink as e:
            doc = e
        found = (doc, key, source)
        if not stamps.racy(source.attrs.ctime_ns, opened):
            self._docs.put(spath, found)  # a racy one is read again next time (merge.stamps)
        return found

    # -- the index of a directory ----------------------------------------------------------

    def _index(self, path: PresentedPath) -> _Index:
        hit = self._indexes.find(path)
        if hit is not None and hit[1]:
            return hit[0]
        low = self.lower.listing(path)
        if hit is not None and hit[0].low is low and not hit[0].racy:  # nothing changed below
            self._indexes.put(path, hit[0])
            return hit[0]
        withheld = set(low.withheld)
        by_name: defaultdict[str, list[_Spec]] = defaultdict(list)
        if type(low.entries) is dict and not any(n.endswith(SUFFIX) for n in low.entries):
            # no link file: the entries below, as they are (not a copy of 10,000)
            found = _Index(low.entries, {}, frozenset(withheld), low)
            self._indexes.put(path, found)
            return found
        real: dict[str, Entry] = {}
        # A link file read in its last change's tick may have changed again in it, after
        # the read, with the same stat: the index made now is not reused as it is for an
        # unchanged listing below, but made again (its files read again) once expired.
        opened, racy = stamps.now_ns(), False
        for name, entry in low.entries.items():
            if not name.endswith(SUFFIX):
                real[name] = entry  # not a link file (_read_doc would say so)
                continue
            racy = racy or stamps.racy(entry.attrs.ctime_ns, opened)
            doc, key, source = self._read_doc((*path, name), entry, fresh=False)
            if doc is None:
                real[name] = entry
            elif isinstance(doc, BadLink):
                self.ctx.problems.report(5, entry.origin.where, str(doc))
            elif source is not None:
                by_name[doc.name].append(_Spec(name, entry.origin.where, doc, key, source))
        links: dict[str, _Spec] = {}
        for name, specs in by_name.items():
            if name in real:
                for s in specs:
                    self.ctx.problems.report(
                        6, s.spath, f'link ignored: a real entry "{name}" has the name it presents'
                    )
            elif len(specs) > 1:
                for s in specs:
                    self.ctx.problems.report(
                        6, s.spath, f'link ignored: {len(specs)} links present the name "{name}"'
                    )
                withheld.add(name)
            else:
                links[name] = specs[0]
        found = _Index(real, links, frozenset(withheld), low, racy)
        self._indexes.put(path, found)
        return found

    def _spec(self, path: PresentedPath) -> _Spec:
        spec = self._index(path[:-1]).links.get(path[-1])
        if spec is None:
            raise NotFound("/" + "/".join(path))
        return spec

    def _reread(self, d: PresentedPath, spec: _Spec, name: str) -> _Spec:
        """``spec`` read again from its file (a merge is being prepared and it changed)."""
        try:
            entry = self.lower.lookup((*d, spec.file))
        except NotFound:
            raise NotFound("/" + "/".join((*d, name))) from None
        doc, key, source = self._read_doc((*d, spec.file), entry, fresh=True)
        if not isinstance(doc, LinkDoc) or doc.name != name or source is None:
            raise NotFound("/" + "/".join((*d, name)))
        return _Spec(spec.file, spec.spath, doc, key, source)

    # -- resolution ---------------------------------------------------------------------

    def _stack(self) -> list[str]:
        stack: list[str] | None = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    @contextlib.contextmanager
    def _pushed(self, spath: str) -> Iterator[None]:
        """``spath`` on this thread's stack of links being followed, while inside."""
        stack = self._stack()
        if spath in stack:
            raise _LinkLoop(spath)
        if len(stack) >= MAX_LINK_DEPTH:
            raise _TooDeep(spath)
        stack.append(spath)
        try:
            yield
        finally:
            stack.pop()

    def _resolve(self, d: PresentedPath, spec: _Spec) -> Entry:
        """The entry ``spec`` presents in ``d``; ``NotFound`` (reported) when it cannot."""
        outermost = not self._stack()
        key = (d, spec.file)
        with self._pushed(spec.spath):  # _LinkLoop / _TooDeep go to the link that follows us
            hit = self._resolved.find(key)
            if hit is not None and hit[1] and hit[0][0] == spec.key:
                return self._outcome(hit[0][1])
            try:
                result = self._follow(d, spec)
            except _LinkLoop:
                result = _Failed("in a loop of SmartMotion links")
                if not outermost:
                    self._settle(key, spec, result)
                    raise  # every link on the loop, and those leading to it, fail
            except _TooDeep:
                if not outermost:
                    raise  # too deep only as seen from the outermost link: cache nothing
                result = _Failed(f"more than {MAX_LINK_DEPTH} links deep")
        return self._outcome(self._settle(key, spec, result))

    def _settle(
        self, key: tuple[PresentedPath, str], spec: _Spec, result: Entry | _Failed
    ) -> Entry | _Failed:
        """Cache ``result``; the object cached before if equal (listings keep theirs)."""
        value = (spec.key, result)
        old = self._resolved.find(key)
        if old is not None and old[0] == value:
            value = old[0]
        self._resolved.put(key, value)
        if isinstance(result, _Failed):
            self.ctx.problems.report(5, spec.spath, result.reason)
        return value[1]

    @staticmethod
    def _outcome(result: Entry | _Failed) -> Entry:
        if isinstance(result, _Failed):
            raise NotFound(result.reason)
        return result

    def _follow(self, d: PresentedPath, spec: _Spec) -> Entry | _Failed:
        """Look the target up through the top of the stack and present it."""
        parts = None
        link_dir = self._physical_dir(spec.spath)
        if link_dir is not None:
            parts = target_path(link_dir, spec.doc.target)
        if parts is None:
            return _Failed(f"target {spec.doc.target!r} leads outside the storage root")
        if not parts:
            return _Failed(f"target {spec.doc.target!r} is the storage root, not a file")
        try:
            target = self.top.resolve(parts)
        except (NotFound, NotADirectory):
            return _Failed(self._why_missing(spec.doc.target, parts))
        except AccessDenied:
            return _Failed(f"target {spec.doc.target!r} cannot be read")
        if target.attrs.kind != Kind.REG:
            return _Failed(f"target {spec.doc.target!r} is a directory, not a file or link")
        depth = target.depth + 1
        if depth > MAX_LINK_DEPTH:
            return _Failed(f"more than {MAX_LINK_DEPTH} links deep")
        own = spec.source.attrs
        attrs = dataclasses.replace(
            target.attrs,
            fileid=fileid_for((*d, spec.doc.name)),
            mtime_ns=max(target.attrs.mtime_ns, own.mtime_ns),
            ctime_ns=max(target.attrs.ctime_ns, own.ctime_ns),
        )
        return Entry(attrs, Linked(spec.spath, parts, target.origin), depth)

    def _physical_dir(self, spath: str) -> PresentedPath | None:
        """The link's directory, symbolic links resolved, as a path below the root."""
        real = os.path.realpath(os.path.dirname(spath))
        root = self.ctx.root
        if real == root:
            return ()
        if not real.startswith(root.rstrip(os.sep) + os.sep):
            return None
        return tuple(real[len(root) :].strip(os.sep).split(os.sep))

    def _why_missing(self, written: str, parts: PresentedPath) -> str:
        name = parts[-1]
        if is_pancbt(name):
            return f"target {written!r} is a pancbt file, never presented (rule 2)"
        try:
            real = os.path.realpath(os.path.join(self.ctx.root, *parts))
        except ValueError:  # a NUL, a lone surrogate: no such file (parse_link refuses them)
            return f"target {written!r} is missing (no such presented file)"
        if real != self.ctx.root and not real.startswith(self.ctx.root.rstrip(os.sep) + os.sep):
            return f"target {written!r} leads outside the storage root through a symbolic link"
        if name.endswith(SUFFIX):
            try:
                entry = self.lower.resolve(parts)
                if self._doc(parts, entry) is not None:
                    return f"target {written!r} is the .json file of a link, not a presented file"
            except NamespaceError:
                pass
        return f"target {written!r} is missing (no such presented file)"
