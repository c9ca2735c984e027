"""Bottom layer: the storage directory, read-only (namespace.md rule 1).

Design notes
------------
* Presented path ``(a, b)`` is storage path ``root/a/b``.  Directories and
  regular files are presented; so are symbolic links *inside* the root,
  as what they point to.  Withheld, reported once (rule 5):

  ======================================  =================================
  entry                                   why
  ======================================  =================================
  symbolic link resolving outside root    rule 5, last case
  dangling symbolic link (or link loop)   nothing to present (spec silent)
  symbolic link to a directory holding    the tree would be infinite
  it (or to one of its presented parents)  (spec silent)
  FIFO, socket, device                    not a file nor a directory
  a name of more than 255 bytes (FUSE,    NFSv3 cannot send it (READDIR
  CIFS storage)                           would fail for the whole folder)
  ======================================  =================================

* Nothing in the storage is ever written, renamed or locked.  Files are
  opened ``O_RDONLY | O_NOATIME`` (without ``O_NOATIME`` where the kernel
  refuses it with ``EPERM``: files of another owner).
* Caches, all bounded: directory listings and stats of looked-up paths for
  ``ttl`` seconds (so new, removed and replaced entries show within that
  time, rule 8), a lookup answered from its directory's listing while that
  is fresh; open descriptors (LRU), each checked against a fresh
  ``stat`` of its path at every open, so a replaced file is reopened and a
  reader gets the size of the moment it opened.
* A listing costs one ``lstat`` per entry (``DirEntry.stat``, which a
  file or directory that is not a symbolic link needs no other call for).
  A folder whose every entry is a file or a folder is scanned in C
  (``merge._native.scan``: ``readdir`` and ``fstatat`` without the GIL, the
  entries made as ``attrs_of`` and ``stored_entry`` make them; 10,000
  entries ~25 ms of CPU instead of ~45); any other folder, or a folder whose
  entries lookups cached (``_looked_in``), by its twin ``_scan_py``.
  Refreshed after ``ttl``, an entry whose ``stat`` did not change keeps its
  :class:`Entry` object, and a directory in which nothing changed keeps its
  :class:`Listing` object; one in which something did, or one listed for
  the first time, is told to ``Context.changed`` (the memo at the top drops
  what it holds for it: stats taken before may be older than the listing).
* What is outside the root is never shown, even through the caches: a folder
  is listed, and a name looked up (below the root's own entries), from a
  descriptor of the folder checked to lie inside the root as opened
  (``_folder_inside``); a folder above may have been swapped for a symbolic
  link leading out since its lookup was cached.  Its cost: an uncached lookup
  ~13 -> ~21 us (open, readlink, close), a listing nothing measurable.
* Nothing is read at start-up.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping
from stat import S_ISDIR, S_ISREG
from types import ModuleType

from merge.attrs import (
    _PERMS,
    _USED,
    attrs_from_stat,
    attrs_of,
    id_hash,
    ids_in,
    stat_matches,
)
from merge.cache import TtlLru
from merge.layer import Context, Entry, Layer, Listing, Stored, stored_entry, stored_in
from merge.names import NAME_MAX, SURELY_SHORT, too_long, valid_name
from merge.namespace import (
    Attrs,
    FsStats,
    Kind,
    NamespaceError,
    NotFound,
    PresentedPath,
    Withheld,
)
from merge.native import native
from merge.sources import FileSource, Handle, os_error
from merge.watch import FolderWatches


def give_layout(compiled: ModuleType) -> None:
    """What ``merge._native.scan`` builds entries with, as ``attrs_of`` and
    ``stored_entry`` do (the types, their slots' descriptors, the shared ints)."""
    compiled.layout(
        object.__new__,
        (Attrs, Stored, Entry),
        tuple(
            vars(cls)[field]
            for cls, fields in (
                (Attrs, ("kind", "size", "used", "mode", "nlink", "uid", "gid", "fileid")),
                (Attrs, ("atime_ns", "mtime_ns", "ctime_ns")),
                (Stored, ("folder", "name")),
                (Entry, ("attrs", "origin", "depth")),
            )
            for field in fields
        ),
        (Kind.REG, Kind.DIR),
        _PERMS,
        _USED,
        0,
    )


if native is not None:
    give_layout(native)


class _Withheld:
    """A storage entry that exists but is not presented, and why."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


_Missing = _Withheld("no such file")
_WithheldListed = _Withheld("withheld from its directory's listing")


LOOKED_IN_MAX = 4096  # folders remembered in Passthrough._looked_in (then forgotten at once)


class Passthrough(Layer):
    """The storage tree under ``ctx.root``."""

    def __init__(
        self,
        ctx: Context,
        *,
        fd_cache: int = 128,
        stat_cache: int = 65536,
        watches: FolderWatches | None = None,
    ) -> None:
        super().__init__(None, ctx)
        self.root = ctx.root
        self._watches = watches  # large folders renewed without a scan (merge.watch)
        self._stats: TtlLru[PresentedPath, Entry | _Withheld] = TtlLru(
            stat_cache, ctx.ttl, ctx.clock, note=ctx.note
        )
        self._listings: TtlLru[PresentedPath, Listing] = TtlLru(
            1024, ctx.ttl, ctx.clock, note=ctx.note
        )
        self._looked_in: set[PresentedPath] = set()  # folders whose entries lookups cached
        self._last_folder: tuple[PresentedPath, str] | None = None  # see _stored
        self._files: TtlLru[PresentedPath, FileSource] = TtlLru(
            fd_cache, None, ctx.clock, on_evict=FileSource.release
        )

    def storage_path(self, path: PresentedPath) -> str:
        return os.path.join(self.root, *path)

    # -- lookup and listing ---------------------------------------------------------

    def lookup(self, path: PresentedPath) -> Entry:
        found = self._listed(path)
        if found is None:
            found = self._stats.get(path)
        if found is None:
            try:
                found = self._classify(path, None)
            except NamespaceError:
                self.ctx.volatile()  # not cached: the next lookup tries again
                raise
            if path and isinstance(found, Entry):
                listed = self._as_listed(path, found)
                if listed is not found:
                    return listed  # the listing holds it: not a second record (see below)
                if len(self._looked_in) >= LOOKED_IN_MAX:
                    self._looked_in.clear()
                self._looked_in.add(path[:-1])
            self._stats.put(path, found)
        if isinstance(found, _Withheld):
            raise (NotFound if found is _Missing else Withheld)("/" + "/".join(path))
        return found

    # One Entry for a name both looked up and listed (memory, not speed): a lookup
    # whose listing has expired hands out the listing's Entry when it is equal to
    # the one just made, and a listing takes a looked-up Entry whose attributes
    # still match the stat of its scan (only in a folder where lookups cached
    # entries, ``_looked_in``: a first listing elsewhere pays nothing).  Either way
    # the object reused equals the one that would have been made (same storage
    # path, attributes and depth), so answers are unchanged; a folder of 10,000
    # names both listed and looked up holds ~5 MB less (Attrs and its ints,
    # Entry, Stored and the storage path, once instead of twice).
    #
    # Nor a second record of it in ``_stats`` (~170 bytes a name): a lookup that
    # hands out the listing's Entry caches nothing (the stat it just made holds
    # the rule's ttl for the memo above, as a cached one would; a layer below the
    # memo asking again stats again), and a scan forgets the stats it took from
    # lookups (``taken``): while the listing is fresh lookups read it, and a stat
    # cached before the scan expires no later than the listing does, so none of
    # them would ever be handed out again.

    def _as_listed(self, path: PresentedPath, found: Entry) -> Entry:
        """The listing's own Entry for ``path`` if equal to ``found`` (fresh or not)."""
        hit = self._listings.peek(path[:-1])
        if hit is None:
            return found
        listed = hit.entries.get(path[-1])
        return listed if listed is not None and listed == found else found

    def _listed(self, path: PresentedPath) -> Entry | _Withheld | None:
        """What the listing of ``path``'s directory says of it, while fresh.

        A fresh listing is younger than any stat cached for its entries
        (a stat is cached only when the listing was not fresh, or did not
        hold the name), so it is what a lookup gets, as if the listing had
        cached a stat for each entry.
        """
        if not path:
            return None
        hit = self._listings.find(path[:-1])
        if hit is None or not hit[1]:
            return None
        listing = hit[0]
        name = path[-1]
        entry = listing.entries.get(name)
        if entry is None and name in listing.withheld:
            return _WithheldListed
        return entry

    def listing(self, path: PresentedPath) -> Listing:
        hit = self._listings.find(path)
        if hit is not None and hit[1]:
            return hit[0]
        prev = hit[0] if hit is not None else None
        watches, watched = self._watches, None
        if watches is not None and prev is not None and watches.wants(len(prev.entries)):
            if watches.renew(path, prev):  # nothing changed since its scan (merge.watch)
                self._listings.put(path, prev)
                return prev
            watched = watches.prepare(path, self.storage_path(path))
        elif watches is not None and prev is None and watches.likely_large(self.storage_path(path)):
            watched = watches.prepare(path, self.storage_path(path))
        checks: list[tuple[str, Entry]] | None = [] if watched is not None else None
        max_checks = watches.max_checks if watches is not None else 0
        before: Mapping[str, Entry] = prev.entries if prev is not None else {}
        fileid = ids_in(path)
        folder = os.path.join(self.storage_path(path), "")  # one string for every entry
        peek = None
        taken: list[PresentedPath] = []  # looked-up stats this scan makes useless
        if path in self._looked_in:
            peek = self._stats.peek
            self._looked_in.discard(path)
        withheld: set[str] = set()
        scanned = None
        try:
            fd = self._folder_inside(path, os.O_RDONLY)
        except OSError as e:
            self.ctx.volatile()  # not cached: the next listing tries again
            raise os_error(e, self.storage_path(path)) from e
        except ValueError:  # a NUL or a lone surrogate: no folder is named so
            raise NotFound(self.storage_path(path)) from None
        try:
            where = _fd_path(fd)  # the folder opened and checked, not its path again
            if native is not None and peek is None and type(before) is dict:
                # every entry a file or folder (else None): the loop below, in C
                ids = id_hash(path)  # ids_in's hash, made in C
                scanned = native.scan(where, before, ids, folder, checks is not None, max_checks)
            if scanned is not None:
                entries, checks = scanned
            else:
                entries, checks = self._scan_py(
                    path, where, before, fileid, folder, peek, taken, withheld, checks, max_checks
                )
        finally:
            os.close(fd)
        if taken:
            self._stats.discard(taken)
        found = Listing.renewed(prev, entries, withheld)
        if found is not prev:
            self.ctx.changed(path)  # changed, or listed for the first time
        self._listings.put(path, found)  # and what lookups of its entries get (_listed)
        if watched is not None and watches is not None:
            watches.scanned(watched, found, checks)
        return found

    def _scan_py(  # noqa: PLR0917
        self,
        path: PresentedPath,
        where: str,
        before: Mapping[str, Entry],
        fileid: Callable[[str], int],
        folder: str,
        peek: Callable[[PresentedPath], Entry | _Withheld | None] | None,
        taken: list[PresentedPath],
        withheld: set[str],
        checks: list[tuple[str, Entry]] | None,
        max_checks: int,
    ) -> tuple[dict[str, Entry], list[tuple[str, Entry]] | None]:
        """The scan of ``listing``: its entries (those of ``before`` whose attributes
        still match reused), and the entries to check at a renewal (``merge.watch``).

        The twin of ``merge._native.scan``, which does the same for a folder whose
        every entry is a file or a folder (no symbolic link, no special file).
        ``where``: the folder's descriptor's path (``_folder_inside``).
        """
        entries: dict[str, Entry] = {}
        try:
            with os.scandir(where) as it:
                for de in it:
                    name = de.name
                    try:  # the common case: a file or directory, one lstat
                        st = None if de.is_symlink() else de.stat()
                    except OSError:
                        st = None
                    if (
                        st is not None
                        and (S_ISREG(st.st_mode) or S_ISDIR(st.st_mode))
                        and (len(name) <= SURELY_SHORT or not too_long(name))
                    ):
                        old = before.get(name)
                        if old is None and peek is not None:
                            key = (*path, name)
                            cached = peek(key)  # what a lookup cached (_looked_in)
                            if cached is not None:
                                taken.append(key)  # now the listing's: forgotten below
                                if isinstance(cached, Entry):
                                    old = cached
                        if old is None or not stat_matches(old.attrs, st):
                            old = stored_entry(attrs_of(st, fileid(name)), folder, name)
                        entries[name] = old
                        if checks is not None and (st.st_nlink > 1 or S_ISDIR(st.st_mode)):
                            checks.append((name, old))  # no event says it changed
                            if len(checks) > max_checks:
                                checks = None  # renewing would cost what a scan does
                        continue
                    checks = None  # a link, a special file...: never renewed
                    got = self._classify_listed((*path, name), de)  # as a lookup does
                    if isinstance(got, Entry):
                        old = before.get(name)
                        entries[name] = old if old == got else got
                    elif got is not _Missing:
                        withheld.add(name)
        except OSError as e:
            self.ctx.volatile()  # not cached: the next listing tries again
            raise os_error(e, self.storage_path(path)) from e
        return entries, checks

    def _folder_inside(self, path: PresentedPath, flags: int) -> int:
        """A descriptor of the folder at ``path`` as it resolves *now*; NotFound if
        that is outside the root.

        A folder above it may have been swapped for a symbolic link leading out
        since the lookup that presented it was cached (for up to a ``ttl``): its
        path would then list, or stat, what is outside.  Checked on the folder
        opened, not on its path again, so that the scan or stat made from the
        descriptor is of the folder checked (``/proc/self/fd``; without ``/proc``
        the path's ``realpath`` at the same moment)."""
        spath = self.storage_path(path)
        flags |= os.O_DIRECTORY | os.O_CLOEXEC
        try:  # (OSError, ValueError: the caller's)
            fd = os.open(spath, flags | os.O_NOATIME)  # a listing leaves its atime be
        except PermissionError:
            fd = os.open(spath, flags)  # O_NOATIME: only the owner (or CAP_FOWNER)
        try:
            real = os.readlink(_fd_path(fd))
        except OSError:
            real = os.path.realpath(spath)
        if not _inside(real, self.root):
            os.close(fd)
            self.ctx.volatile()
            raise NotFound(spath)
        return fd

    def _classify_listed(self, path: PresentedPath, de: os.DirEntry[str]) -> Entry | _Withheld:
        try:
            return self._classify(path, de)
        except NamespaceError as e:  # this entry only (an unreadable symlink...)
            self.ctx.problems.report(5, self.storage_path(path), f"cannot stat: {e!r}")
            return _Withheld(repr(e))

    def _classify(self, path: PresentedPath, de: os.DirEntry[str] | None) -> Entry | _Withheld:
        """What the storage holds at ``path``: an entry, or why it is not presented."""
        spath = self.storage_path(path)
        if path and not valid_name(path[-1]):
            if de is None or not too_long(path[-1]):
                return _Missing
            too = f"a name longer than {NAME_MAX} bytes (NFSv3 cannot send it)"
            self.ctx.problems.report(5, spath, too)
            return _Withheld(too)
        fd = -1
        try:
            if de is None and len(path) > 1:  # (the root's own entries: the root's path)
                fd = self._folder_inside(path[:-1], os.O_PATH)
                st = os.stat(path[-1], dir_fd=fd, follow_symlinks=False)
                is_link = stat.S_ISLNK(st.st_mode)
            else:
                is_link = de.is_symlink() if de is not None else os.path.islink(spath)
            if is_link:
                reason = self._symlink_problem(path, spath)
                if reason is not None:
                    self.ctx.problems.report(5, spath, reason)
                    return _Withheld(reason)
            if de is not None:
                st = de.stat()
            elif fd < 0:
                st = os.stat(spath)
            elif is_link:
                st = os.stat(path[-1], dir_fd=fd)
        except FileNotFoundError:
            return _Missing
        except OSError as e:
            err = os_error(e, spath)
            if isinstance(err, NotFound):
                return _Missing
            raise err from e
        except ValueError:  # a NUL or a lone surrogate in a folder's name: no such path
            return _Missing
        finally:
            if fd >= 0:
                os.close(fd)
        if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
            reason = "neither a regular file nor a directory"
            self.ctx.problems.report(5, spath, reason)
            return _Withheld(reason)
        return Entry(attrs_from_stat(st, path), self._stored(path, spath))

    def _stored(self, path: PresentedPath, spath: str) -> Stored:
        """``Stored(spath)``, its folder string shared with the lookups before it in
        the same folder, its name the very one of ``path`` (memory: see ``Stored``)."""
        if not path:
            return Stored(spath)
        parent = path[:-1]
        last = self._last_folder
        if last is None or last[0] != parent:
            last = self._last_folder = (parent, os.path.join(self.storage_path(parent), ""))
        return stored_in(last[1], path[-1])

    def _symlink_problem(self, path: PresentedPath, spath: str) -> str | None:
        """Why the symbolic link at ``path`` is not presented, or ``None``."""
        real = os.path.realpath(spath)
        if not _inside(real, self.root):
            return "symbolic link leading outside the storage root"
        try:
            st = os.stat(spath)
        except OSError:
            return "dangling symbolic link"
        if stat.S_ISDIR(st.st_mode):
            for i in range(len(path)):
                above = os.path.realpath(self.storage_path(path[:i]))
                if above == real or above.startswith(real + os.sep):
                    return "symbolic link to a directory that holds it (an endless tree)"
        return None

    # -- open -----------------------------------------------------------------------

    def open_file(self, path: PresentedPath) -> Handle:
        """A handle on the file at ``path``, reusing a cached descriptor if still current."""
        spath = self.storage_path(path)
        try:
            st = os.stat(spath)
        except OSError as e:
            raise os_error(e, spath) from e
        except ValueError:  # a NUL or a lone surrogate: no file is named so
            raise NotFound(spath) from None
        cached = self._files.get(path)
        if cached is not None and cached.stamp.matches(st) and cached.try_retain():
            return Handle.adopt(cached)
        real = os.path.realpath(spath)
        if not _inside(real, self.root):
            raise NotFound(spath)
        source = FileSource.open(real, lambda fst: attrs_from_stat(fst, path))
        handle = Handle(source)  # the handle's reference; the born one goes to the cache
        self._files.put(path, source)
        return handle

    def fsstat(self) -> FsStats:
        try:
            v = os.statvfs(self.root)
        except OSError as e:
            raise os_error(e, self.root) from e
        return FsStats(
            total_bytes=v.f_blocks * v.f_frsize,
            free_bytes=v.f_bfree * v.f_frsize,
            avail_bytes=v.f_bavail * v.f_frsize,
            total_files=v.f_files,
            free_files=v.f_ffree,
            avail_files=v.f_favail,
        )

    def close(self) -> None:
        """Close every cached descriptor (handles still open keep theirs)."""
        self._files.clear()
        if self._watches is not None:
            self._watches.close()


def _fd_path(fd: int) -> str:
    """The path that names the file open at ``fd`` (the process's own ``/proc``)."""
    return f"/proc/self/fd/{fd}"


def _inside(real: str, root: str) -> bool:
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)
