"""The merge layer (namespace.md rule 4): ``NAME-flat.vmdk`` beside a pancbt is merged.

Design notes
------------
When a directory holds ``NAME-pancbt.vmdk`` and presents ``NAME-flat.vmdk``
(a real file or a link, from the layer below), this layer presents, under
that name, the merged image of pancbt.md.  Its attributes:

=========  ==============================================================
size       the pancbt's ``disk_size``
mtime      the later of the base's and the pancbt's (rule 7); ctime and
           atime likewise
mode       the base's (the disk's permissions; the pancbt is an input)
used       base's plus pancbt's
depth      the base's: links followed through a merge count (rule 3)
=========  ==============================================================

A merge is *prepared* on first use (lookup, listing or open): base and
pancbt opened, the pancbt read and validated against the base's actual size
(rule 8 of pancbt.md), the extent map built.  An invalid pancbt withholds
the flat image (rule 5: an older disk must never be shown as the newer one)
and is reported once.

Prepared merges live in a bounded LRU.  Each holds its inputs' handles, so
its descriptors stay valid; an evicted merge closes them when its last
reader is done.  At most every ``recheck`` seconds a merge in use re-stats
its inputs (base, pancbt and, through links and merged bases, everything
below): any change of size, mtime or inode and it is prepared again, from
inputs opened fresh (``Context.fresh``).  A merge that is not current right
after being prepared (an input replaced meanwhile) is prepared again; after
three tries the caller gets ``InputChanged``.  The map and the descriptors of
a merge are never mixed with those of another.

For the memo at the top (``merge.memo``): an answer made from a prepared
merge holds until the merge's next check (``Context.note``); a merge found
changed tells its directory changed; a merge that could not be prepared is
not cached, nor may an answer made from it be (``Context.volatile``).  A
directory without a pancbt is listed as the layer below lists it (the same
object), and a listing that did not change is handed out again.
"""

from __future__ import annotations

from merge.attrs import fileid_for
from merge.cache import TtlLru
from merge.extents import ExtentMap
from merge.layer import Context, Entry, Layer, Listing, Merged
from merge.names import PANCBT_SUFFIX, flat_of, is_flat, pancbt_of
from merge.namespace import (
    Attrs,
    InputChanged,
    Kind,
    NamespaceError,
    NotFound,
    PresentedPath,
    Withheld,
)
from merge.pancbt import PancbtError, read_pancbt
from merge.sources import Handle, MergedSource, read_at

PREPARE_TRIES = 3


class _Prepared:
    """A merge ready to read: the source (holding the inputs) and its entry."""

    __slots__ = ("checked_at", "entry", "source")

    def __init__(self, source: MergedSource, entry: Entry, checked_at: float) -> None:
        self.source = source
        self.entry = entry
        self.checked_at = checked_at

    def is_current(self) -> bool:
        return self.source.is_current()

    def drop(self) -> None:
        self.source.release()


class _Rejected:
    """A merge whose pancbt is invalid; remembered until an input changes."""

    __slots__ = ("base", "checked_at", "overlay", "reason", "where")

    def __init__(
        self, base: Handle, overlay: Handle, where: str, reason: str, checked_at: float
    ) -> None:
        self.base = base  # closed: kept to re-stat the inputs
        self.overlay = overlay
        self.where = where  # the pancbt's storage path
        self.reason = reason
        self.checked_at = checked_at

    def is_current(self) -> bool:
        return self.overlay.is_current() and self.base.is_current()

    def drop(self) -> None:
        pass


class MergeLayer(Layer):
    """Splices each pancbt into the flat image beside it."""

    def __init__(self, lower: Layer, ctx: Context, *, cache_size: int = 64) -> None:
        super().__init__(lower, ctx)
        self._merges: TtlLru[PresentedPath, _Prepared | _Rejected] = TtlLru(
            cache_size, None, ctx.clock, on_evict=lambda m: m.drop()
        )
        self._listings: TtlLru[PresentedPath, Listing] = TtlLru(
            1024, ctx.ttl, ctx.clock, note=ctx.note
        )

    # -- the layer's calls ----------------------------------------------------------

    def lookup(self, path: PresentedPath) -> Entry:
        if self._is_merged(path):
            return self._merge(path).entry
        return self.lower.lookup(path)

    def listing(self, path: PresentedPath) -> Listing:
        hit = self._listings.find(path)
        if hit is not None and hit[1]:
            return hit[0]
        low = self.lower.listing(path)
        if hit is not None and hit[0] is low:  # the same listing below, which had no
            self._listings.put(path, low)  # pancbt (else a listing of ours is kept)
            return low  # (not a loop over 10,000 names: merge.watch renews it often)
        pancbts = [name for name in low.entries if name.endswith(PANCBT_SUFFIX)]
        pancbts += [name for name in low.withheld if name.endswith(PANCBT_SUFFIX)]
        if not pancbts:  # nothing to merge here: the listing below, as it is
            self._listings.put(path, low)
            return low
        entries = dict(low.entries)
        withheld = set(low.withheld)
        for name in pancbts:
            entry = low.entries.get(name)
            flat = flat_of(name)
            base = entries.get(flat)
            if base is None or base.attrs.kind != Kind.REG:
                continue  # an orphan: the hide layer reports it
            if entry is None or entry.attrs.kind != Kind.REG:  # not a file: as _is_merged
                del entries[flat]
                withheld.add(flat)
                self._not_a_file(base, flat, name)
                continue
            try:
                entries[flat] = self._merge((*path, flat)).entry
            except NotFound:
                del entries[flat]
                withheld.add(flat)
            except NamespaceError as e:  # unreadable inputs: withhold this one, list the rest
                del entries[flat]
                withheld.add(flat)
                self.ctx.problems.report(5, entry.origin.where, f"{flat} not presented: {e!r}")
        found = Listing.renewed(hit[0] if hit else None, entries, withheld)
        self._listings.put(path, found)
        return found

    def open_file(self, path: PresentedPath) -> Handle:
        if self._is_merged(path):
            return Handle.adopt(self._merge(path, retain=True).source)
        return self.lower.open_file(path)

    def close(self) -> None:
        """Drop every prepared merge (readers still open keep their inputs)."""
        self._merges.clear()

    # -- preparing and checking merges --------------------------------------------------

    def _is_merged(self, path: PresentedPath) -> bool:
        """Whether ``path`` is a flat image (a file) with a pancbt (a file) beside it.

        A pancbt the directory holds but that is no regular file the layers
        below present (a folder, a FIFO, a symbolic link leading nowhere or
        out of the storage: ``Withheld``) withholds the flat image: NotFound,
        reported (rule 5: the unmerged base is an older disk than its name
        says).  An unmounted volume behind a link to the pancbts served every
        merged image as the day before."""
        if not path or not is_flat(path[-1]):
            return False
        name = pancbt_of(path[-1])
        try:
            base = self.lower.lookup(path)
        except NotFound:
            return False
        if base.attrs.kind != Kind.REG:
            return False
        try:
            pancbt = self.lower.lookup((*path[:-1], name))
        except Withheld:
            pancbt = None
        except NotFound:
            return False
        if pancbt is None or pancbt.attrs.kind != Kind.REG:
            self._not_a_file(base, path[-1], name)
            raise NotFound(f"{'/'.join(path)}: its pancbt is not a regular file")
        return True

    def _not_a_file(self, base: Entry, flat: str, pancbt: str) -> None:
        """Report a flat image withheld for its pancbt, which is no regular file."""
        self.ctx.problems.report(
            5, base.origin.where, f"{flat} not presented: {pancbt} is not a regular file"
        )

    def _merge(self, path: PresentedPath, *, retain: bool = False) -> _Prepared:
        """The prepared merge at ``path``, re-prepared if an input changed.

        With ``retain``, the caller gets a reference on its source: taken on
        a cached merge (which another thread may have evicted and closed
        meanwhile: then it is prepared again), or on a new one *before* it
        is published in the cache, where an eviction could close it.
        """
        merge: _Prepared | _Rejected | None = self._merges.get(path)
        if merge is not None and self.ctx.due(merge.checked_at):
            if merge.is_current():
                merge.checked_at = self.ctx.clock()
            else:
                self._merges.pop(path, merge)
                merge = None
                self.ctx.changed(path[:-1])  # seen early when forced: the memo drops its answer
        if retain and isinstance(merge, _Prepared) and not merge.source.try_retain():
            merge = None
        if merge is None:
            try:
                merge = self._prepare(path)
            except BaseException:
                self.ctx.volatile()  # nothing cached: the next call prepares again
                raise
            if retain and isinstance(merge, _Prepared):
                merge.source.try_retain()  # not yet shared: cannot fail
            self._merges.put(path, merge)
        self.ctx.note(merge.checked_at + self.ctx.recheck)  # checked again after that
        if isinstance(merge, _Rejected):
            raise NotFound(merge.reason)
        return merge

    def _prepare(self, path: PresentedPath) -> _Prepared | _Rejected:
        for _ in range(PREPARE_TRIES):
            merge = self._prepare_once(path)
            if merge.is_current():
                if isinstance(merge, _Rejected):
                    self.ctx.problems.report(5, merge.where, merge.reason)
                return merge
            merge.drop()
        raise InputChanged(f"/{'/'.join(path)}: inputs keep changing")

    def _prepare_once(self, path: PresentedPath) -> _Prepared | _Rejected:
        pancbt_path = (*path[:-1], pancbt_of(path[-1]))
        with self.ctx.fresh():
            base_entry = self.lower.lookup(path)
            pancbt_entry = self.lower.lookup(pancbt_path)
            if base_entry.attrs.kind != Kind.REG:
                raise NotFound("/" + "/".join(path))
            base = self.lower.open_file(path)
            try:
                overlay = self.lower.open_file(pancbt_path)
            except BaseException:
                base.close()
                raise
        now = self.ctx.clock()
        where = pancbt_entry.origin.where
        try:
            pancbt = read_pancbt(
                lambda pos, n: read_at(overlay, pos, n), overlay.size, where, base.size
            )
            emap = ExtentMap(pancbt.extents, pancbt.header.disk_size, base.size)
        except PancbtError as e:
            base.close()
            overlay.close()
            reason = f"{path[-1]} not presented: invalid pancbt, rule {e.rule}: {e.message}"
            return _Rejected(base, overlay, where, reason, now)
        except BaseException:
            base.close()
            overlay.close()
            raise
        attrs = _merged_attrs(path, emap.disk_size, base.attrs, overlay.attrs)
        entry = Entry(attrs, Merged(base_entry.origin, pancbt_entry.origin), base_entry.depth)
        return _Prepared(MergedSource(base, overlay, emap, attrs), entry, now)


def _merged_attrs(path: PresentedPath, size: int, base: Attrs, pancbt: Attrs) -> Attrs:
    return Attrs(
        kind=Kind.REG,
        size=size,
        used=base.used + pancbt.used,
        mode=base.mode,
        nlink=1,
        uid=base.uid,
        gid=base.gid,
        fileid=fileid_for(path),
        atime_ns=max(base.atime_ns, pancbt.atime_ns),
        mtime_ns=max(base.mtime_ns, pancbt.mtime_ns),
        ctime_ns=max(base.ctime_ns, pancbt.ctime_ns),
    )
