"""The bytes behind an opened presented file, and the handles the server reads with.

Design notes
------------
A *source* is immutable once built and holds what its bytes need: a file
descriptor, or other sources' handles.  It is reference counted; the
descriptors close when the last reference goes, never earlier:

===================  =======================================================
holder               reference it holds
===================  =======================================================
a cache entry        the one the source was born with; dropped on eviction
a :class:`Handle`    one, taken when opened, dropped by ``close``/``__exit__``
a merged/link source a handle on each source it reads from
===================  =======================================================

So a source evicted from a cache while a server thread is mid-read keeps
its descriptors until that thread closes its handle: a descriptor number is
never closed, and so never reused for another file, under a reader.

``try_retain`` refuses a source whose count already reached zero; a cache
that loses that race treats it as a miss.

==================  ==========================================================
source              ``runs(offset, count)``
==================  ==========================================================
:class:`FileSource`   ``[Run(fd, offset, n)]``, bounded by the size at open
:class:`MergedSource` the extent map's runs, each BASE / OVERLAY run replaced
                      by the base's / pancbt's own runs (composes: a base may
                      itself be merged or a link)
:class:`LinkSource`   the target's runs
==================  ==========================================================

Every source can say whether its inputs are still the files it was built
from (``is_current``: a ``stat`` per input, no reads).

``maps()`` gives a read-only shared mapping of each descriptor its runs
name (a :class:`FileSource` maps its file once, on first asking, over the
size it had at open), so that a READ reply can be sent from the page cache
by ``sendmsg`` without a copy into a buffer (``nfsd.programs.nfs3.read``).
A mapping outlives the source's descriptor for as long as a view of it is
held (a queued reply): the kernel keeps the inode.  It costs address space
(none of memory until a send touches its pages), and one descriptor more
(Python's ``mmap`` keeps a ``dup``) for as long as it lives; one that
cannot be made (out of address space or descriptors: ``OSError``) leaves
the READ to the copying path.  Nothing here reads
through a mapping: a file cut short under it makes a user-space read of
the lost pages fault (SIGBUS), while the kernel's own copy (``sendmsg``)
only fails with EFAULT; so only code that hands the views to the kernel
may take them.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
import threading
from collections.abc import Callable

from merge.extents import BASE, OVERLAY, ExtentMap, append_run
from merge.namespace import (
    ZERO_FD,
    AccessDenied,
    Attrs,
    InputChanged,
    NamespaceError,
    NotADirectory,
    NotFound,
    Run,
    StorageIOError,
)
from merge.stamps import Stamp


class Source:
    """Bytes of a presented file; born with one reference, closed at zero."""

    def __init__(self, size: int, attrs: Attrs) -> None:
        self.size = size
        self.attrs = attrs
        self._refs = 1
        self._lock = threading.Lock()

    def try_retain(self) -> bool:
        """Take a reference, unless the source is already closed."""
        with self._lock:
            if self._refs <= 0:
                return False
            self._refs += 1
            return True

    def handle(self) -> Handle | None:
        """A handle holding a reference taken now, or None if the source is closed.

        ``try_retain`` and ``Handle.adopt`` in one: a memoized READ's open
        (``merge.memo``) takes its handle this way, in one call.
        """
        with self._lock:
            if self._refs <= 0:
                return None
            self._refs += 1
        handle = _new_handle(Handle)
        handle.source = self
        handle._closed = False
        return handle

    def release(self) -> None:
        """Drop a reference; the last one closes the source."""
        with self._lock:
            if self._refs <= 0:
                return  # already closed: a stray release must not close twice
            self._refs -= 1
            last = self._refs == 0
        if last:
            self._close()

    def _release_from(self, handle: Handle) -> None:
        """``handle``'s reference dropped, once however often it is closed.

        Its ``_closed`` is tested and set under this source's lock, the one
        its reference count takes anyway: one lock per close, and none made
        per handle.
        """
        with self._lock:
            if handle._closed or self._refs <= 0:  # closed twice, or a stray close
                handle._closed = True
                return
            handle._closed = True
            self._refs -= 1
            last = self._refs == 0
        if last:
            self._close()

    @property
    def closed(self) -> bool:
        return self._refs <= 0

    def runs(self, offset: int, count: int) -> list[Run]:
        raise NotImplementedError

    def maps(self) -> dict[int, memoryview]:
        """A read-only mapping of each descriptor of the runs, where there is one
        (see the notes above); valid while a reference is held."""
        return {}

    def direct(self) -> tuple[int, int] | None:
        """``(fd, size)`` when byte ``p`` is byte ``p`` of one descriptor, else None.

        Lets a merged image map its extent map's runs straight to
        descriptors, without asking its inputs piece by piece.
        """
        return None

    def is_current(self) -> bool:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError


class Handle:
    """An opened presented file (``merge.namespace.Reader``): one reference on a source.

    Closed once, whatever the threads: ``close`` tests and sets ``_closed``
    under the source's lock (``Source._release_from``).
    """

    __slots__ = ("_closed", "source")

    def __init__(self, source: Source) -> None:
        if not source.try_retain():
            raise InputChanged("the file was closed while being opened")
        self.source = source
        self._closed = False

    @classmethod
    def adopt(cls, source: Source) -> Handle:
        """A handle that takes over the reference ``source`` was born with."""
        handle = _new_handle(cls)
        handle.source = source
        handle._closed = False
        return handle

    @property
    def size(self) -> int:
        return self.source.size

    @property
    def attrs(self) -> Attrs:
        return self.source.attrs

    def runs(self, offset: int, count: int) -> list[Run]:
        if self._closed:
            raise InputChanged("read on a closed handle")
        return self.source.runs(offset, count)

    def maps(self) -> dict[int, memoryview]:
        return self.source.maps()

    def is_current(self) -> bool:
        return self.source.is_current()

    def close(self) -> None:
        self.source._release_from(self)

    def __enter__(self) -> Handle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.source._release_from(self)


_new_handle = object.__new__  # a Handle without __init__: its reference is taken already
# ``Run(fd, pos, length)`` without the NamedTuple's Python-level ``__new__``, which
# does just this (0.1 against 0.35 µs: a READ makes one or more).
_run = tuple.__new__


# --- plain files ------------------------------------------------------------

_NOATIME = getattr(os, "O_NOATIME", 0)
_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK


def open_readonly(path: str) -> int:
    """Open a storage file for reading, without touching its atime when allowed.

    ``O_NOATIME`` is refused (``EPERM``) on files the process does not own
    unless it has CAP_FOWNER; then the open is retried without it.
    ``O_NOFOLLOW``: ``path`` is already resolved, a symbolic link appearing
    there since is not followed.  ``O_NONBLOCK``: a FIFO swapped in cannot
    block the server (and is then refused as not a regular file).
    """
    try:
        try:
            return os.open(path, _FLAGS | _NOATIME)
        except PermissionError as e:
            if e.errno != errno.EPERM or not _NOATIME:
                raise
            return os.open(path, _FLAGS)
    except OSError as e:
        raise os_error(e, path) from e


class FileSource(Source):
    """A regular storage file, read through one descriptor."""

    def __init__(self, fd: int, stamp: Stamp, attrs: Attrs) -> None:
        super().__init__(stamp.size, attrs)
        self.fd = fd
        self.stamp = stamp
        self._map: dict[int, memoryview] | None = None  # {fd: the mapping}, once asked

    @classmethod
    def open(cls, path: str, make_attrs: Callable[[os.stat_result], Attrs]) -> FileSource:
        """Open ``path``; its size, stamp and attributes come from ``fstat`` of the fd."""
        fd = open_readonly(path)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise NotFound(f"{path}: not a regular file")
            return cls(fd, Stamp.of(path, st), make_attrs(st))
        except BaseException:
            os.close(fd)
            raise

    def runs(self, offset: int, count: int) -> list[Run]:
        end = min(offset + count, self.size)
        if offset >= end:
            return []
        return [_run(Run, (self.fd, offset, end - offset))]

    def direct(self) -> tuple[int, int] | None:
        return self.fd, self.size

    def maps(self) -> dict[int, memoryview]:
        mapped = self._map
        if mapped is None:
            with self._lock:
                mapped = self._map
                if mapped is None:
                    mapped = self._map = self._mapping()
        return mapped

    def _mapping(self) -> dict[int, memoryview]:
        """The file mapped over its size at open ({} when it cannot be: empty,
        shorter now, or a file system without mappings)."""
        if self.closed or not self.size:
            return {}
        try:
            view = memoryview(mmap.mmap(self.fd, self.size, mmap.MAP_SHARED, mmap.PROT_READ))
        except (OSError, ValueError):
            return {}
        return {self.fd: view}

    def is_current(self) -> bool:
        return self.stamp.current()

    def _close(self) -> None:
        os.close(self.fd)
        self._map = None  # unmapped once the last view of it (a queued reply) goes


# --- composed sources -------------------------------------------------------


class MergedSource(Source):
    """A base with a pancbt's extents spliced in (pancbt.md, "The merged image")."""

    def __init__(self, base: Handle, overlay: Handle, emap: ExtentMap, attrs: Attrs) -> None:
        super().__init__(emap.disk_size, attrs)
        self.base = base
        self.overlay = overlay
        self.emap = emap
        self._base_direct = base.source.direct()
        self._overlay_direct = overlay.source.direct()

    def runs(self, offset: int, count: int) -> list[Run]:
        if self._base_direct is not None and self._overlay_direct is not None:
            return self._direct_runs(offset, count)
        out: list[Run] = []
        for tag, pos, length in self.emap.runs(offset, count):
            if tag == BASE:
                pieces = self.base.runs(pos, length)
            elif tag == OVERLAY:
                pieces = self.overlay.runs(pos, length)
            else:
                pieces = [Run(ZERO_FD, 0, length)]
            if sum(p.length for p in pieces) != length:
                raise InputChanged(f"an input of the merged image is shorter than {pos + length}")
            for piece in pieces:
                append_run(out, piece)
        return out

    def _direct_runs(self, offset: int, count: int) -> list[Run]:
        """The runs when base and pancbt are each one descriptor: tags become fds."""
        assert self._base_direct is not None and self._overlay_direct is not None
        base_fd, base_size = self._base_direct
        over_fd, over_size = self._overlay_direct
        out: list[Run] = []
        for tag, pos, length in self.emap.runs(offset, count):
            if tag == BASE:
                if pos + length > base_size:
                    raise InputChanged(f"the base is shorter than {pos + length}")
                out.append(_run(Run, (base_fd, pos, length)))
            elif tag == OVERLAY:
                if pos + length > over_size:
                    raise InputChanged(f"the pancbt is shorter than {pos + length}")
                out.append(_run(Run, (over_fd, pos, length)))
            else:
                out.append(_run(Run, (ZERO_FD, 0, length)))
        return out

    def maps(self) -> dict[int, memoryview]:
        return self.base.maps() | self.overlay.maps()

    def is_current(self) -> bool:
        return self.overlay.is_current() and self.base.is_current()

    def _close(self) -> None:
        self.base.close()
        self.overlay.close()


class LinkSource(Source):
    """A SmartMotion link: the target's bytes, and the link file it depends on."""

    def __init__(self, target: Handle, link_file: Source, attrs: Attrs) -> None:
        super().__init__(target.size, attrs)
        self.target = target
        self.link_file = link_file  # the .json's source, maybe closed: only re-stat

    def runs(self, offset: int, count: int) -> list[Run]:
        return self.target.runs(offset, count)

    def direct(self) -> tuple[int, int] | None:
        return self.target.source.direct()

    def maps(self) -> dict[int, memoryview]:
        return self.target.maps()

    def is_current(self) -> bool:
        return self.link_file.is_current() and self.target.is_current()

    def _close(self) -> None:
        self.target.close()


# --- helpers ----------------------------------------------------------------


def read_runs(runs: list[Run]) -> bytes:
    """The bytes the runs stand for (small reads only: link files, pancbt tables)."""
    out = bytearray()
    for fd, start, length in runs:
        if fd == ZERO_FD:
            out += bytes(length)
            continue
        pos, left = start, length
        while left:
            chunk = os.pread(fd, left, pos)
            if not chunk:
                raise InputChanged(f"short read: {left} bytes missing at {pos}")
            out += chunk
            pos += len(chunk)
            left -= len(chunk)
    return bytes(out)


def read_at(handle: Handle, pos: int, count: int) -> bytes:
    """Up to ``count`` bytes of ``handle`` at ``pos`` (fewer only at its end)."""
    return read_runs(handle.runs(pos, count))


def os_error(e: OSError, path: str) -> NamespaceError:
    """The namespace error for an ``OSError`` on a storage path (one place)."""
    code = e.errno
    if code in (errno.ENOENT, errno.ELOOP, errno.ENAMETOOLONG):
        return NotFound(path)
    if code == errno.ENOTDIR:
        return NotADirectory(path)
    if code in (errno.EACCES, errno.EPERM):
        return AccessDenied(path)
    return StorageIOError(f"{path}: {e.strerror}")
