"""Knowing that a large storage folder did not change, without scanning it: inotify.

Design notes
------------
Rule 8 has a change in the storage presented within a few seconds, so a
listing lasts ``ttl`` (1 s) and is then scanned again: one ``lstat`` an
entry, ~42 ms of CPU for 10,000 entries, when nothing changed.  On a
*local* file system the kernel says (inotify) when an entry of a folder is
created, deleted, moved in or out, written, truncated, closed after a
write, read (its atime), or has its attributes changed, and when the
folder itself is deleted or moved.  So the passthrough
(``merge.passthrough``) may hand out a listing again, without a scan, when
all of these hold (anything else: the folder is scanned, as without this
module):

* the folder's file system is a local one (``statfs`` ``f_type`` in
  :data:`LOCAL_FS`: ext2/3/4, xfs, btrfs, tmpfs, f2fs).  Over NFS, CIFS/SMB,
  CephFS, FUSE, overlayfs... a change made elsewhere makes no event here;
* the folder was watched *before* the scan that made the listing began,
  and its flag cleared then: an event during or after the scan flags it;
* no event on its watch since, and no queue overflow (``IN_Q_OVERFLOW``
  flags every folder);
* the listing is the very object that scan made;
* the path still leads to the same folder (``dev``, ``ino``): an ancestor
  renamed or replaced makes no event on this watch;
* every entry whose attributes change without an event on this folder
  still ``lstat``s as it did: a subdirectory (its contents change its
  mtime, nlink, size) and a file with other hard links (written through
  another name); at most ``max_checks`` (64) of them, else the listing is
  not renewed (that many ``lstat``s cost what a scan does).  A listing with a
  symbolic link or a withheld entry is never renewed (what it presents
  depends on another path);
* every entry an event named since (read, written, its attributes
  changed, closed after a write) still ``lstat``s as it did.  So a file
  read does not cost a scan: the server's own reads (``O_NOATIME``) make an
  ``IN_ACCESS`` event each but change nothing; another reader's moves the
  atime, and the entry shows it.  Past ``max_checks`` names, the folder is
  scanned;
* past ``span`` seconds (3 s) since the scan, or since the last time this
  was done, *every* entry ``lstat``s as it did: its ctime, mtime, atime and
  blocks (``_times_match``).  The loop is C (``merge/_native.c``: the names
  and kept values copied out with the GIL held, the ``fstatat`` calls made
  without it, no ``stat_result`` built): ~5 ms for 10,000 entries whose
  inodes the kernel holds, 10–12 ms just after other work evicted them from
  the CPU's caches; its Python twin (no compiler, ``RECOVERY_FS_PURE=1``)
  ~11–16 ms and ~17.  Some changes make no event on the folder
  (measured on Linux 6.18, ext4): a write through a shared ``mmap`` (mtime
  and ctime move; ``IN_CLOSE_WRITE`` comes only at the close), a hard link
  to the file made or removed elsewhere (its ctime), a read through
  ``mmap`` (atime); they show within ``ttl + span``, as rule 8's "a few
  seconds" allows, and never cost a scan when there were none.  The
  names, which only events change (a file created, deleted, renamed,
  moved), need no such pass.

Refresh ahead (``refresh_ahead``, on in the stack): a listing past the
span pays the pass (~5–14 ms for 10,000 entries), though a listing within
it costs ~2.6 ms.  So one thread per process runs the pass of a renewable
folder ``ahead`` (0.5 s) before its span ends, as a listing past the span
would, and a listing then finds it checked less than ``span`` ago.  Rule
8's bound is the same: a pass, the thread's or a listing's, counts from
its *start* (``scanned_at`` is the time taken before its first ``lstat``,
never moved back), so a change made while it ran, after it looked at the
entry, is found by the pass ``span`` after that start, the thread's or
else the next listing's, exactly as without the thread; a pass that finds
a change flags the folder (the next listing scans at once).  The C pass
makes its ``fstatat`` calls without the GIL.  Bounded: only folders listed
(scanned or renewed) in the last ``idle`` seconds (:data:`IDLE`, 10 min),
the most recently listed first, at most ``refresh_entries`` entries a
round (:data:`REFRESH_ENTRIES`, 65,536; a folder past what is left waits
for its listing's own pass), only the watched folders (an evicted or
flagged one is not refreshed).  The thread ends when no folder was listed
within ``idle`` (the next listing starts another) and at ``close``; it is a
daemon, so it never holds the process.  Its cost when idle: one pass a
folder every ``span - ahead`` (2.5 s) for 10 minutes after the last listing
(measured: docs/performance.md).  A process forked while the thread holds
the lock would inherit it held; the server's workers are new interpreters
(``nfsd.service.supervisor``), and a forked child starts its own thread.

Bounds: at most ``limit`` folders watched per process (16), only folders
whose listing had ``min_entries`` entries or more (1,000: smaller ones
cost little to scan), or, at their first scan, whose size in bytes says
they may (so a process that lists a large folder a second time, seconds
or minutes later, does not scan it again); past the limit, the folder
listed least recently is no longer watched.  One inotify descriptor per
process, non-blocking and close-on-exec, opened on first use (a forked
child opens its own); its events are read when a renewal is asked, never
waited for.  If the kernel refuses (no descriptor, no watch left),
nothing is watched: the folders are scanned.

The rest of the stack is unchanged by a renewal: the listing object is
the same, so the memo above keeps what it holds, and each layer renews
what it derives from other folders with its own caches (a link's target,
a merged image's inputs).
"""

from __future__ import annotations

import errno
import functools
import itertools
import os
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from stat import S_ISDIR
from typing import Any

from merge.attrs import stat_matches
from merge.cache import Clock
from merge.layer import Entry, Listing
from merge.namespace import PresentedPath
from merge.native import native  # the pass's loop in C, or None (then the twin below)

# linux/magic.h: file systems where every change goes through this kernel.
LOCAL_FS = frozenset(
    {
        0xEF53,  # ext2, ext3, ext4
        0x58465342,  # xfs
        0x9123683E,  # btrfs
        0x01021994,  # tmpfs
        0xF2F52010,  # f2fs
    }
)

# linux/inotify.h
IN_ACCESS = 0x1
IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_UNMOUNT = 0x2000
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

# Every event that can change what a listing of the folder presents.
MASK = (
    IN_ACCESS
    | IN_MODIFY
    | IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
    | IN_DONT_FOLLOW
)
# Events that change one entry's attributes or bytes, not the folder's names: the
# entry's lstat says what changed (IN_ISDIR: the entry is a subfolder).
IN_ISDIR = 0x40000000
_ONE_ENTRY = IN_ACCESS | IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_ISDIR
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name
_read = os.read  # the descriptor's events (a test feeds its own)

# The refresh ahead (design notes): only folders listed in the last IDLE seconds,
# at most REFRESH_ENTRIES entries passed a round.
IDLE = 600.0
REFRESH_ENTRIES = 65536


@functools.cache
def _libc() -> Any:
    """The C library's inotify and statfs, through ctypes, imported on first use (a
    worker that never watches a folder does not load ctypes); None if unavailable."""
    try:
        import ctypes  # noqa: PLC0415

        libc = ctypes.CDLL(None, use_errno=True)  # the process's own: glibc's symbols
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.statfs.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    except (OSError, AttributeError, ImportError):
        return None
    return libc


def _errno() -> int:
    import ctypes  # noqa: PLC0415

    return ctypes.get_errno()


def fs_type(path: str) -> int | None:
    """``statfs(path).f_type``, or None if it cannot be read (then: not local).

    ``f_type`` is the first field of ``struct statfs``, a C ``long``.
    """
    libc = _libc()
    if libc is None:
        return None
    import ctypes  # noqa: PLC0415

    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit Linux
    if libc.statfs(os.fsencode(path), buf) != 0:
        return None
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


class _Watched:
    """One folder's watch, and what the listing made under it needs to be renewed."""

    __slots__ = (
        "checks",
        "dev_ino",
        "dirty",
        "gen",
        "listed_at",
        "listing",
        "scanned_at",
        "spath",
        "touched",
        "wd",
    )

    def __init__(self, wd: int, spath: str) -> None:
        self.wd = wd
        self.spath = spath
        self.dirty = True  # until a scan is prepared
        self.touched: set[str] = set()  # entries events named since the scan
        self.listing: Listing | None = None  # the listing object the last scan made
        self.scanned_at = float("-inf")
        self.dev_ino: tuple[int, int] | None = None
        self.checks: tuple[tuple[str, Entry], ...] | None = None  # None: never renewed
        self.gen = 0  # scans prepared: only the last one's listing is recorded
        self.listed_at = float("-inf")  # the last listing asked (scan or renewal)


class FolderWatches:
    """The inotify watches of one process's passthrough, and its renewals."""

    def __init__(
        self,
        clock: Clock,
        *,
        limit: int = 16,
        min_entries: int = 1000,
        span: float = 3.0,
        max_checks: int = 64,
        first_size: float | None = None,
        fs_type_of: Callable[[str], int | None] = fs_type,
        refresh_ahead: bool = False,
        ahead: float = 0.5,
        idle: float = IDLE,
        refresh_entries: int = REFRESH_ENTRIES,
    ) -> None:
        """``first_size``: the folder's size in bytes from which its first scan is
        watched (``likely_large``; 16 bytes a name of ``min_entries`` by default).
        ``refresh_ahead``: a thread runs the pass of a folder listed in the last
        ``idle`` seconds ``ahead`` seconds before its span ends, ``refresh_entries``
        entries at most a round (see the design notes); ``refresh_due`` runs one
        round (the thread's, or a test's)."""
        self._clock = clock
        self.limit = limit
        self.min_entries = min_entries
        self.span = span
        self.max_checks = max_checks
        self.first_size = 16 * min_entries if first_size is None else first_size
        self._fs_type_of = fs_type_of
        self._lock = threading.Lock()
        self._fd = -1
        self._pid = 0
        self._off = False  # the kernel refused once (or no libc): nothing is watched
        self._by_path: OrderedDict[PresentedPath, _Watched] = OrderedDict()
        self._by_wd: dict[int, _Watched] = {}
        self.renewed = 0  # listings handed out again without a scan (for tests, stats)
        self.verified = 0  # of them, after every entry was lstat'd (past the span)
        self.refresh_ahead = refresh_ahead
        self.ahead = ahead
        self.idle = idle
        self.refresh_entries = refresh_entries
        self.refreshed = 0  # passes run ahead that renewed a listing (for tests, stats)
        self._thread_pid = 0  # the process whose refresh thread runs (0: none)
        self._wake = threading.Event()  # close(), or a listing recorded: look again
        self._stopped = False

    # -- the passthrough's calls ------------------------------------------------------

    def wants(self, entries: int) -> bool:
        """Whether a folder whose last listing had ``entries`` entries is worth a watch."""
        return not self._off and entries >= self.min_entries

    def likely_large(self, spath: str) -> bool:
        """Whether a folder never listed is worth a watch from its first scan on: its
        size in bytes says it may hold ``min_entries`` names (ext4, xfs, btrfs and
        tmpfs count at least 16 bytes a name of 8 characters or more).  Only saves the
        second scan: a folder said small is watched from its second scan, as any."""
        if self._off:
            return False
        try:
            return os.stat(spath).st_size >= self.first_size
        except OSError:
            return False

    def prepare(self, path: PresentedPath, spath: str) -> tuple[_Watched, int] | None:
        """Before a scan of ``path``: watch it (if allowed) and clear its flag; what
        ``scanned`` takes after the scan."""
        with self._lock:
            if not self._ready():
                return None
            self._drain()
            w = self._by_path.get(path)
            if w is None:
                w = self._add(path, spath)
                if w is None:
                    return None
            else:
                self._by_path.move_to_end(path)
            try:
                st = os.stat(spath)
            except OSError:
                return None
            w.dirty = False
            w.touched = set()
            w.listing = None
            w.checks = None
            w.dev_ino = (st.st_dev, st.st_ino)
            w.scanned_at = w.listed_at = self._clock()
            w.gen += 1
            return w, w.gen

    def scanned(
        self,
        prepared: tuple[_Watched, int],
        listing: Listing,
        checks: Sequence[tuple[str, Entry]] | None,
    ) -> None:
        """The scan ``prepare`` allowed made ``listing``; ``checks``: the entries to
        ``lstat`` before renewing it (None: never renew it).  Not recorded if another
        scan was prepared since (its clearing of the flag may hide an event this
        scan missed)."""
        w, gen = prepared
        if checks is not None and len(checks) > self.max_checks:
            checks = None  # as dear as a scan: scanned (a folder of hard links...)
        with self._lock:
            if self._by_wd.get(w.wd) is w and w.gen == gen:
                if len(listing.entries) < self.min_entries:  # watched at its first scan
                    self._unlist(w)
                    self._forget(w)  # small after all: no slot taken
                    return
                w.listing = listing
                w.checks = None if checks is None else tuple(checks)
                if w.checks is not None and self.refresh_ahead:
                    self._start_refresh()

    def renew(self, path: PresentedPath, listing: Listing) -> bool:
        """Whether ``listing`` (of ``path``, past its ttl) still presents the storage."""
        with self._lock:
            w = self._by_path.get(path)
            if w is None:
                return False
            w.listed_at = self._clock()
            if self.refresh_ahead and w.listing is listing and w.checks is not None:
                self._start_refresh()
        if not self._verify(w, listing, ahead=False):
            return False
        self.renewed += 1
        return True

    def refresh_due(self) -> float | None:
        """One round of the refresh ahead: the pass of every folder listed in the last
        ``idle`` seconds whose span ends within ``ahead`` seconds, the most recently
        listed first, ``refresh_entries`` entries at most.  Returns the seconds until
        the next one is due, or None when no folder was listed recently (the thread
        ends; the next listing recorded starts another)."""
        with self._lock:
            if self._stopped or not self._ready():
                return None
            self._drain()
            now = self._clock()
            due: list[tuple[_Watched, Listing]] = []
            budget = self.refresh_entries
            wake: float | None = None
            for w in sorted(self._by_path.values(), key=lambda w: -w.listed_at):
                listing = w.listing
                if (
                    listing is None
                    or w.checks is None
                    or w.dirty
                    or self._by_wd.get(w.wd) is not w
                    or now - w.listed_at >= self.idle
                ):
                    continue
                at = w.scanned_at + self.span - self.ahead
                if at > now:
                    wake = at - now if wake is None else min(wake, at - now)
                elif len(listing.entries) <= budget:
                    budget -= len(listing.entries)
                    due.append((w, listing))
            if not due and wake is None and self._thread_pid == os.getpid():
                self._thread_pid = 0  # this round the last: a listing starts another thread
        for w, listing in due:
            if self._verify(w, listing, ahead=True):
                self.refreshed += 1
            else:  # changed (or about to be scanned): the next listing scans, no pass first
                with self._lock:
                    if w.listing is listing:
                        w.dirty = True
        if due:
            return 0.0 if wake is None else wake  # the next round looks at the rest again
        return wake

    def _verify(self, w: _Watched, listing: Listing, *, ahead: bool) -> bool:
        """Whether ``listing``, ``w``'s, still presents the storage: the checks, the
        entries events named, and past the span (or ``ahead``) every entry's times."""
        with self._lock:
            if w.listing is not listing or w.checks is None:
                return False
            if not self._ready():
                return False
            self._drain()
            if w.dirty:
                return False
            now = self._clock()
            every = ahead or now - w.scanned_at >= self.span  # every entry lstat'd, not a scan
            touched = tuple(w.touched)
            checks, spath, dev_ino = w.checks, w.spath, w.dev_ino
        entries = listing.entries
        try:  # the entries looked up in the very folder whose dev and inode are checked
            fd = os.open(spath, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != dev_ino:
                return False
            for name, entry in itertools.chain(checks, ((n, entries.get(n)) for n in touched)):
                if entry is None or not stat_matches(entry.attrs, os.lstat(name, dir_fd=fd)):
                    return False  # another entry, or one not in the listing: a scan
            if every and not _times_match(fd, entries):
                return False
        except OSError:
            return False
        finally:
            os.close(fd)
        with self._lock:  # no event while the checks ran (but on the names checked)
            self._drain()
            if w.dirty or self._by_wd.get(w.wd) is not w or w.listing is not listing:
                return False
            if not every and len(w.touched) > len(touched):
                return False  # a name not checked: it is, next time
            if every:
                # As good as a scan begun now; never moved back (the thread's pass
                # and a listing's may overlap: each began after the other's start).
                w.scanned_at = max(w.scanned_at, now)
                self.verified += not ahead
            return True

    def close(self) -> None:
        with self._lock:
            self._stopped = True
            self._wake.set()
            if self._fd >= 0 and self._pid == os.getpid():
                os.close(self._fd)
            self._fd = -1
            self._by_path.clear()
            self._by_wd.clear()

    # -- the refresh ahead --------------------------------------------------------------------

    def _start_refresh(self) -> None:
        """(lock held) The process's refresh thread, started if none runs (a forked
        child starts its own); else woken to look at the listing just recorded."""
        pid = os.getpid()
        if self._thread_pid == pid or self._stopped:
            self._wake.set()
            return
        self._thread_pid = pid
        self._wake = threading.Event()  # a child's own (the parent's may be set)
        threading.Thread(
            target=self._refresh_loop, args=(self._wake,), name="folder-refresh", daemon=True
        ).start()

    def _refresh_loop(self, wake: threading.Event) -> None:
        """Rounds until no folder was listed in the last ``idle`` seconds, or close()."""
        try:
            while True:
                wake.clear()  # a listing recorded during the round: another round at once
                wait = self.refresh_due()
                if wait is None:
                    return  # refresh_due let another thread start
                wake.wait(wait)
        except Exception:  # never a crash: the listings run their own passes
            with self._lock:
                if self._wake is wake:
                    self._thread_pid = 0

    # -- inotify ----------------------------------------------------------------------------

    def _ready(self) -> bool:
        """The process's descriptor open (a forked child opens its own)."""
        if self._off:
            return False
        if self._fd >= 0 and self._pid == os.getpid():
            return True
        self._by_path.clear()
        self._by_wd.clear()
        libc = _libc()
        fd = -1 if libc is None else libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            self._off = True
            return False
        self._fd, self._pid = fd, os.getpid()
        return True

    def _add(self, path: PresentedPath, spath: str) -> _Watched | None:
        if self._fs_type_of(spath) not in LOCAL_FS:
            return None
        while len(self._by_path) >= self.limit:
            _, old = self._by_path.popitem(last=False)
            self._forget(old)
        wd = _libc().inotify_add_watch(self._fd, os.fsencode(spath), MASK)
        if wd < 0:
            if _errno() in {errno.ENOSPC, errno.ENOMEM, errno.EMFILE}:
                self._off = True  # the kernel's limits: scan, as without watches
            return None
        known = self._by_wd.get(wd)  # the same folder under another path (a link)
        if known is not None:
            known.dirty = True
            self._unlist(known)
        w = _Watched(wd, spath)
        self._by_path[path] = w
        self._by_wd[wd] = w
        return w

    def _forget(self, w: _Watched) -> None:
        self._by_wd.pop(w.wd, None)
        w.dirty = True
        _libc().inotify_rm_watch(self._fd, w.wd)

    def _drain(self) -> None:
        """Read every queued event, flag the folders they name (never blocks)."""
        while True:
            try:
                data = _read(self._fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                self._flag_all()
                return
            if not data:
                return
            at = 0
            while at + _EVENT.size <= len(data):
                wd, mask, _cookie, size = _EVENT.unpack_from(data, at)
                at += _EVENT.size + size
                if mask & IN_Q_OVERFLOW:
                    self._flag_all()
                    continue
                w = self._by_wd.get(wd)
                if w is None or (mask & IN_ACCESS and not size):
                    continue  # the folder itself read (a scan is one): not its entries
                if size and not mask & ~_ONE_ENTRY and len(w.touched) < self.max_checks:
                    name = data[at - size : at].rstrip(b"\0")
                    w.touched.add(os.fsdecode(name))  # its lstat says at the renewal
                    continue
                w.dirty = True  # any other event kind in MASK, the folder's own ones too
                if mask & IN_IGNORED:  # the kernel dropped the watch (deleted, unmounted)
                    self._by_wd.pop(wd, None)
                    self._unlist(w)

    def _unlist(self, w: _Watched) -> None:
        """(lock held) Every path that names ``w`` forgotten."""
        for p in [p for p, v in self._by_path.items() if v is w]:
            del self._by_path[p]

    def _flag_all(self) -> None:
        for w in self._by_wd.values():
            w.dirty = True


def _times_match(folder_fd: int, entries: Mapping[str, Entry]) -> bool:
    """Whether every entry's ``lstat`` shows what a change without an event would move:
    ``merge._native.times_match`` (the same loop in C, its ``fstatat`` calls made
    without the GIL), or its twin :func:`_times_match_py` (no extension,
    ``RECOVERY_FS_PURE=1``, or a value the C loop does not hold in 64 bits)."""
    if native is not None and type(entries) is dict:
        found = native.times_match(folder_fd, entries)
        if found is not None:
            return bool(found)
    return _times_match_py(folder_fd, entries)


def _times_match_py(folder_fd: int, entries: Mapping[str, Entry]) -> bool:
    """Whether every entry's ``lstat`` shows what a change without an event would move.

    Such a change (see the design notes) moves the ctime (a write through
    ``mmap``: the mtime too; a hard link elsewhere), the atime (a read through
    ``mmap``) or the blocks used (written back later); it cannot change the
    size, mode, owner or kind (those make an event, and the entry named is
    checked whole).  So four fields, not ``stat_matches``'s ten: a third of the
    pass's Python work.
    """
    lstat = os.lstat
    for name, entry in entries.items():
        a = entry.attrs
        st = lstat(name, dir_fd=folder_fd)
        if (
            st.st_ctime_ns != a.ctime_ns
            or st.st_mtime_ns != a.mtime_ns
            or st.st_atime_ns != a.atime_ns
            or st.st_blocks * 512 != a.used
        ):
            return False
    return True


def needs_check(st: os.stat_result) -> bool:
    """Whether an entry's attributes can change without an event on its folder's
    watch: a subdirectory (its contents), a file with other hard links."""
    return S_ISDIR(st.st_mode) or st.st_nlink > 1
