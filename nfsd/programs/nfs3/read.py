"""READ (RFC 1813 §3.3.6): the path users wait on.

The data flow, in order::

    handle -> presented path -> Reader (cached by the namespace)
           -> runs(offset, count): [file range | zeros, ...]
           -> preadv each file run into one pooled buffer, zero-fill the rest
           -> reply = [header, buffer[:n], padding], sent as it lies

No reply allocates its data: the buffer comes from ``nfsd.programs.buffers`` and
goes back once the writer has sent it.  A plain file's one run is read by
one C call (:func:`read_full`: ``nfsd._fastcall.pread_full``, or ``_read``
without the extension).  A small READ whose bytes are all in
the page cache is served on the connection's reader thread (``RWF_NOWAIT``
proves they are); any other goes to a worker, so that a read waiting on
the disk holds up nothing else.  Base bytes, overlay bytes and
zeros of a merged image all land in the same buffer, in one pass, so a
merged image costs what a plain file costs plus one ``preadv`` per
extent boundary.  A short read inside a run means an input changed under
the server: the READ fails with ``NFS3ERR_IO`` rather than send bytes it
is not sure of.

From the file's mapping: a READ of at least :data:`MAP_MIN` bytes on
plain TCP whose file bytes are all in the page cache (``mincore``) is
answered as ``[header, view | zeros ..., padding]`` (:func:`by_mapping`),
each view a slice of the storage file's read-only mapping
(``merge.sources``: ``maps()``): ``sendmsg`` copies the page-cache pages
into the socket, where the copying path copies them into a buffer first
and then into the socket.  One worker, 1 MiB READs 4 in flight on one
loopback connection: the server's CPU per READ fell from ~370 to ~210 µs
(a merged image's ~430 to ~310), the client's did not rise (it reads the socket's copy, as before;
compare by reference, below).  Only the kernel may read a view (a page
the file lost since would fault in user space): not under TLS, never
copied by the transport (a stalled queue keeps read-only parts as they
are).  The pages a send maps into the process count in its RSS until
:meth:`~nfsd.programs.buffers.BufferPool.mapped` unmaps them, past
:data:`~nfsd.programs.buffers.MAP_BUDGET` bytes or at rest.

By reference: a READ of at least :data:`SENDFILE_MIN` bytes whose context
allows it (``CallContext.sendfile``: plain TCP to a remote peer, see
``nfsd.transport.server``) and whose file bytes are all in the page cache
is answered as ``[header, FileRun | bytes | zeros ..., padding]``
(:func:`by_reference`): the transport sends the file runs with
``os.sendfile``, so they are read when sent, not now.  The same bytes: the
storage is read-only to us and each run holds a ``dup`` of its descriptor
(a file replaced by rename keeps its inode); a file cut short meanwhile
closes the connection rather than send what it no longer holds.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import struct
from functools import partial

from merge.namespace import (
    ZERO_FD,
    InputChanged,
    Kind,
    NamespaceError,
    PresentedPath,
    Run,
    reader_maps,
)
from nfsd.native import fastcall
from nfsd.programs.buffers import BufferPool
from nfsd.programs.errors import NfsError, nfs_error
from nfsd.programs.nfs3.fastattr import post_op_attr_bytes
from nfsd.programs.nfs3.service import MAY_READ, RTMAX, UDP_RTMAX, Nfs3Service, may
from nfsd.rpc import CallContext, FileRun, Part, Reply, WouldBlock
from nfsd.transport.tls import PLAIN
from xdr import nfs3

ZEROS = bytes(RTMAX)
_ZEROS_VIEW = memoryview(ZEROS)
PADDING = (b"", b"\0\0\0", b"\0\0", b"\0")
_TAIL = struct.Struct(">III")  # count, eof, opaque length
_OK = struct.pack(">I", nfs3.NFS3_OK)


# Larger READs copied into a buffer go to a worker, where their copies
# overlap other connections' calls, unless the loop serves one connection
# alone (``CallContext.alone``): then the hand-off buys no overlap and costs
# a third of a 1 MiB READ's CPU (one worker, 1 MiB READs 4 in flight: 0.62
# -> 0.43 ms a call, the same throughput; on 4 connections inline halved the
# throughput).  A READ sent from the file's mapping stays inline on any
# connection: its only copy is the send's, which the loop makes anyway for
# what a worker's send leaves queued (2 workers, 1 MiB READs from the
# mapping on 4 connections, on workers -> inline: 390 -> 280 µs of CPU a
# call plain, 440 -> 300 merged, and 3,448 -> 4,111 and 1,896 -> 2,567
# calls a second).
INLINE_MAX = 64 * 1024  # MAP_MIN and SENDFILE_MIN are above it: tested only past it


def read3(svc: Nfs3Service, ctx: CallContext, args: nfs3.READ3args) -> Reply:
    path = svc.path_of(args.file)
    attrs = svc.attrs(path)
    if attrs.kind == Kind.DIR:
        raise NfsError(nfs3.NFS3ERR_ISDIR)
    if not may(attrs, ctx, MAY_READ, owner_override=True):
        raise NfsError(nfs3.NFS3ERR_ACCES)
    count = min(args.count, RTMAX if ctx.transport == "tcp" else UDP_RTMAX)
    offset = args.offset
    ctx.note = f"/{'/'.join(path)} off={offset} count={args.count}"
    head = _OK + post_op_attr_bytes(attrs, svc.fsid)
    return read_reply(svc, path, offset, count, ctx, head)


def copy_waits(ctx: CallContext, count: int) -> bool:
    """Whether a READ of ``count`` bytes to be copied (not sent from a mapping) goes
    to a worker: on the loop, a copy past :data:`INLINE_MAX` only while the loop
    serves this connection alone (no other connection waits behind it)."""
    return ctx.inline and not ctx.alone and count > INLINE_MAX


def read_reply(  # noqa: PLR0917
    svc: Nfs3Service, path: PresentedPath, offset: int, count: int, ctx: CallContext, head: bytes
) -> Reply:
    """The READ3resok of ``count`` bytes at ``offset`` of a file the caller may read.

    ``head`` is what goes before the count: the status and the file's
    post_op_attr (and, from the fast path, ``nfsd.programs.nfs3.fastpath``,
    the RPC reply header before them: one buffer fewer to send).
    """
    # Served inline on the connection's reader only when it cannot wait:
    # a free buffer now, and every byte already in the page cache.
    inline = ctx.inline
    by_ref = False
    if count > INLINE_MAX:  # (a small READ, the commonest, skips these tests)
        by_ref = sends_by_reference(ctx, count)
        if count >= MAP_MIN and not by_ref and ctx.transport == "tcp" and ctx.security is PLAIN:
            reply = _mapped(svc, path, offset, count, head)  # inline on any connection
            if reply is not None:
                return reply
        if copy_waits(ctx, count):
            raise WouldBlock
    if by_ref:
        try:
            with svc.namespace.open(path) as reader:
                referenced = referenced_reply(reader.runs(offset, count), head, offset, reader.size)
        except (OSError, NamespaceError) as e:
            raise nfs_error(e) from e
        if referenced is not None:
            return referenced
    if inline:
        buf = svc.buffers.try_acquire()
        if buf is None:
            raise WouldBlock
    else:
        buf = svc.buffers.acquire()
    view = memoryview(buf)
    try:
        try:
            with svc.namespace.open(path) as reader:
                size = reader.size
                n = _fill(view, reader.runs(offset, count), inline)
        except (OSError, NamespaceError) as e:
            raise nfs_error(e) from e
        header = head + _TAIL.pack(n, offset + n >= size, n)
    except BaseException:
        svc.buffers.release(buf)
        raise
    return Reply([header, view[:n], PADDING[n & 3]], release=partial(svc.buffers.release, buf))


# READs of at least this many bytes on plain TCP are sent from the file's
# mapping when its bytes are in the page cache (``by_mapping``).  At 64 KiB
# the residency check (~3-4 µs through ctypes) ate the copy it saves (one
# worker, random 64 KiB READs 16 in flight: 32.4 -> 34.5 µs of CPU a call);
# at 256 KiB 97.5 -> 68.2, at 1 MiB 370 -> 211.
MAP_MIN = 128 * 1024


def _mapped(
    svc: Nfs3Service, path: PresentedPath, offset: int, count: int, head: bytes
) -> Reply | None:
    """The READ3resok sent from the file's mapping; None when it cannot be (no
    mapping, bytes not all in the page cache): the caller copies instead."""
    try:
        with svc.namespace.open(path) as reader:
            maps = reader_maps(reader)
            if not maps:
                return None
            runs = reader.runs(offset, count)
            return mapped_reply(svc.buffers, maps, runs, head, offset, reader.size)
    except (OSError, NamespaceError) as e:
        raise nfs_error(e) from e


def mapped_reply(  # noqa: PLR0917
    buffers: BufferPool,
    maps: dict[int, memoryview],
    runs: list[Run],
    head: bytes,
    offset: int,
    size: int,
) -> Reply | None:
    """The READ3resok of ``runs`` (at ``offset`` of a file of ``size`` bytes)
    as views of ``maps`` (:func:`by_mapping`), ``head`` before its count;
    None when they cannot be sent from the mappings."""
    parts = by_mapping(maps, runs)
    if parts is None:
        return None
    n = sum(map(len, parts))
    parts[:0] = [head + _TAIL.pack(n, offset + n >= size, n)]
    parts.append(PADDING[n & 3])
    # Counted once sent (the release): the pages a send maps in are there by then.
    return Reply(parts, release=partial(buffers.mapped, list(maps.values()), n))


def by_mapping(maps: dict[int, memoryview], runs: list[Run]) -> list[Part] | None:
    """The data of a READ as views of the files' mappings (``maps``, by
    descriptor) and of :data:`ZEROS`; None unless every run's file has a
    mapping that covers it and all its bytes are in the page cache, up to
    date (:func:`mapped_resident`), so that the thread that sends the views
    (maybe the loop) does not wait for the disk.

    One ``mincore`` per span of a file's runs no more than :data:`BRIDGE`
    apart (a merged image's base runs, its pancbt's runs): the bytes
    between them must be cached too, or the READ is copied instead.
    """
    parts: list[Part] = []
    spans: list[list[int]] = []  # [fd, start, end] to check
    last: dict[int, list[int]] = {}  # fd: its span being extended
    for fd, start, length in runs:
        if fd == ZERO_FD:
            parts.append(_ZEROS_VIEW[:length])
            continue
        view = maps.get(fd)
        end = start + length
        if view is None or end > len(view):
            return None
        parts.append(view[start:end])
        span = last.get(fd)
        if span is not None and span[2] <= start <= span[2] + BRIDGE:
            span[2] = end
        else:
            span = last[fd] = [fd, start, end]
            spans.append(span)
    for fd, start, end in spans:
        if not mapped_resident(maps[fd][start:end]):
            return None
    return parts


# READs of at least this many bytes on plain TCP send their file runs by
# reference (``FileRun``: sendfile from the page cache) instead of copying
# them into a pooled buffer; file runs shorter than RUN_MIN are copied.
# The sending thread's CPU per READ, by reference / copied (cached file,
# TCP socket, 5 alternating rounds, twice): 64 KiB 1.10-1.14, 128 KiB
# 1.05-1.13, 256 KiB 0.89-0.96, 1 MiB 0.64-0.70.
SENDFILE_MIN = 256 * 1024
RUN_MIN = 16 * 1024


def sends_by_reference(ctx: CallContext, count: int) -> bool:
    """Whether a READ of ``count`` bytes sends its file runs by reference: a large
    one, on a transport that takes :class:`FileRun` parts (plain TCP to a peer
    that is not loopback: ``CallContext.sendfile``), where ``cachestat`` can
    tell that their bytes are in the page cache."""
    return count >= SENDFILE_MIN and ctx.sendfile and cachestat_works()


def referenced_reply(runs: list[Run], head: bytes, offset: int, size: int) -> Reply | None:
    """The READ3resok of ``runs`` (at ``offset`` of a file of ``size`` bytes) with
    its file runs by reference (:func:`by_reference`), ``head`` before its count;
    None, nothing held, when a byte is not in the page cache (the caller copies)."""
    parts = by_reference(runs)
    if parts is None:
        return None
    n = sum(map(len, parts))
    parts[:0] = [head + _TAIL.pack(n, offset + n >= size, n)]
    parts.append(PADDING[n & 3])
    return Reply(parts, release=partial(_free_runs, parts))


def by_reference(runs: list[Run]) -> list[Part] | None:
    """The data of a READ as parts to send: a FileRun (a ``dup`` of the run's
    descriptor) per file run of at least :data:`RUN_MIN`, the bytes of a
    shorter one, zeros as a view of :data:`ZEROS`.  None, with nothing
    held, unless every file byte is in the page cache (``cachestat``): the
    run is read when it is sent, possibly by the loop, which must not wait
    for the disk; the copying path reads it on a worker instead.

    Short runs whose bytes follow one another in their file (a pancbt's
    DATA extents, between base runs) are read by one ``preadv`` into a
    buffer each, with one ``cachestat`` for them all, as ``_fill`` does.
    """
    parts: list[Part] = []
    chains: dict[int, list] = {}  # fd: [start, end, buffers] of the chain it continues
    reads: list[list] = []
    try:
        for fd, start, length in runs:
            if fd == ZERO_FD:
                parts.append(_ZEROS_VIEW[:length])
            elif length >= RUN_MIN:
                if not resident(fd, start, length):
                    _free_runs(parts)
                    return None
                parts.append(FileRun(os.dup(fd), start, length))
            else:
                buf = bytearray(length)
                parts.append(buf)
                chain = chains.get(fd)
                if chain is not None and chain[1] == start:
                    chain[1] += length
                    chain[2].append(buf)
                else:
                    chain = chains[fd] = [start, start + length, [buf]]
                    reads.append([fd, *chain[:2], chain])
        for fd, start, _, chain in reads:
            length = chain[1] - start
            if not resident(fd, start, length):
                _free_runs(parts)
                return None
            got = os.preadv(fd, chain[2], start)
            if got != length:
                raise InputChanged(f"short read: {length - got} bytes missing at {start + got}")
    except BaseException:
        _free_runs(parts)
        raise
    return parts


def _free_runs(parts: list[Part]) -> None:
    """Close the descriptors of a reply's FileRuns (those not closed yet)."""
    for p in parts:
        if type(p) is FileRun:
            p.free()


_PAGE = mmap.PAGESIZE
_CACHESTAT = 451  # the system call's number, the same on every architecture (Linux 6.5)
_libc = ctypes.CDLL(None, use_errno=True)
_cachestat_state: list[bool | None] = [
    None
]  # [None]: not tried yet; [True]/[False]: the system has it or not


def resident(fd: int, start: int, length: int) -> bool:
    """Whether every page of ``length`` bytes of ``fd`` at ``start`` is in the page cache.

    One ``cachestat`` call (0.6 µs): it counts the range's cached pages
    without touching them.  False where it cannot tell (no cachestat, a
    file system without a page cache).
    """
    rng = (ctypes.c_uint64 * 2)(start, length)
    stat = (ctypes.c_uint64 * 5)()
    if _libc.syscall(_CACHESTAT, fd, rng, stat, 0) != 0:
        if ctypes.get_errno() in (errno.ENOSYS, errno.EPERM):
            _cachestat_state[0] = False
        return False
    pages = (start + length - 1) // _PAGE - start // _PAGE + 1
    return stat[0] >= pages


class _PyBuffer(ctypes.Structure):
    """CPython's ``Py_buffer``: how a view's address is asked for (a read-only
    buffer has no ctypes ``from_buffer``)."""

    _fields_ = (
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.c_void_p),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    )


_get_buffer = ctypes.pythonapi.PyObject_GetBuffer
_get_buffer.argtypes = (ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int)
_release_buffer = ctypes.pythonapi.PyBuffer_Release
_release_buffer.argtypes = (ctypes.POINTER(_PyBuffer),)
_mincore = _libc.mincore
_mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p)


def mapped_resident(view: memoryview) -> bool:
    """Whether every page under ``view`` (a slice of a file's mapping) is in the
    page cache and up to date: ``mincore``, which, unlike ``cachestat``, does
    not count a page whose read is still under way (readahead), so that the
    thread that sends the view (maybe the loop) never waits for the disk.
    It looks at the page cache, not at this process's page tables, and
    touches nothing (~2 µs with the address asked through ctypes)."""
    info = _PyBuffer()
    _get_buffer(view, ctypes.byref(info), 0)
    try:
        addr = info.buf or 0
        first = addr - addr % _PAGE
        pages = (addr + len(view) - first + _PAGE - 1) // _PAGE
        vec = ctypes.create_string_buffer(pages)
        if _mincore(first, pages * _PAGE, vec) != 0:
            return False
    finally:
        _release_buffer(ctypes.byref(info))
    return b"\0" not in vec.raw


def cachestat_works() -> bool:
    """Whether this system has ``cachestat`` (asked once, on a file of our own)."""
    state = _cachestat_state[0]
    if state is None:
        with open(__file__, "rb") as f:
            f.read(1)
            resident(f.fileno(), 0, 1)
        state = _cachestat_state[0] = _cachestat_state[0] is not False
    return state


BRIDGE = 64 * 1024  # base gaps up to this size are read through, then overwritten


def _fill(view: memoryview, runs: list, nowait: bool) -> int:
    """Copy the runs into ``view``; return the bytes filled.

    Head, body and tail of a merged image's READ arrive as runs of the base
    interleaved with small overlay runs.  Reading each base piece on its own
    costs a system call per extent boundary, so the base runs that lie at
    the same distance from their place in the reply, with gaps up to
    :data:`BRIDGE` between them, are read as one span first, and every other
    run is then written over the gaps (runs never overlap one another, so
    the order of the two passes cannot change a byte).  Overlay runs whose
    bytes are adjacent in their file are read by one scattering preadv: a
    READ of a merged image then costs about two system calls, as many as a
    plain file's.

    With ``nowait``, data not in the page cache raises WouldBlock instead of
    waiting for the disk (RWF_NOWAIT).
    """
    if len(runs) == 1 and runs[0][0] != ZERO_FD:  # a plain file's READ: what follows, shorter
        fd, start, length = runs[0]
        read_full(view, fd, start, length, nowait)
        return length
    flags = os.RWF_NOWAIT if nowait else 0
    placed: list[tuple[int, int, int, int]] = []  # (view offset, fd, file pos, length)
    total = 0
    for fd, start, length in runs:
        placed.append((total, fd, start, length))
        total += length
    if len(placed) > 2:
        spans, rest = _spans(placed)
        for at, fd, start, length in spans:
            _read(view, at, fd, start, length, flags)
    else:
        rest = placed
    i = 0
    while i < len(rest):
        at, fd, start, length = rest[i]
        i += 1
        if fd == ZERO_FD:
            view[at : at + length] = ZEROS[:length]
            continue
        # Overlay runs whose bytes follow one another in their file (a
        # pancbt stores DATA extents in order) scatter in one preadv.
        pieces = [view[at : at + length]]
        end = start + length
        while i < len(rest) and rest[i][1] == fd and rest[i][2] == end:
            r_at, _, _, r_len = rest[i]
            pieces.append(view[r_at : r_at + r_len])
            end += r_len
            i += 1
        if len(pieces) == 1:
            _read(view, at, fd, start, length, flags)
        else:
            _scatter(pieces, fd, start, end - start, flags)
    return total


def _scatter(pieces: list[memoryview], fd: int, start: int, length: int, flags: int) -> None:
    """One preadv of ``length`` contiguous file bytes into several places."""
    got = _preadv(fd, pieces, start, flags)
    if got != length:
        if flags:
            raise WouldBlock  # partly cached: read it all on a worker
        raise InputChanged(f"short read: {length - got} bytes missing at {start + got}")


def _preadv(fd: int, pieces: list[memoryview], start: int, flags: int) -> int:
    """``os.preadv``, with "would wait for the disk" turned into WouldBlock."""
    try:
        return os.preadv(fd, pieces, start, flags)
    except BlockingIOError:
        raise WouldBlock from None
    except OSError as e:
        if flags and e.errno in (errno.EOPNOTSUPP, errno.EINVAL):
            raise WouldBlock from None  # no RWF_NOWAIT on this file system
        raise


def _spans(
    placed: list[tuple[int, int, int, int]],
) -> tuple[list[tuple[int, int, int, int]], list[tuple[int, int, int, int]]]:
    """Split runs into spans of the largest run's file, and the rest."""
    files = [r for r in placed if r[1] != ZERO_FD]
    if not files:
        return [], placed
    big = max(files, key=lambda r: r[3])
    fd, delta = big[1], big[2] - big[0]
    spans: list[tuple[int, int, int, int]] = []
    rest: list[tuple[int, int, int, int]] = []
    for run in placed:
        at, rfd, start, length = run
        if rfd != fd or start - at != delta:
            rest.append(run)
        elif spans and at - (spans[-1][0] + spans[-1][3]) <= BRIDGE:
            s_at, _, s_start, _ = spans[-1]
            spans[-1] = (s_at, fd, s_start, at + length - s_at)
        else:
            spans.append(run)
    return spans, rest


def read_full(view: memoryview, fd: int, start: int, length: int, nowait: bool) -> None:
    """``_read`` of ``length`` bytes at the start of ``view`` (a plain file's
    READ), in one C call (``nfsd._fastcall.pread_full``) when there is one."""
    if fastcall is None:
        _read(view, 0, fd, start, length, os.RWF_NOWAIT if nowait else 0)
        return
    got = fastcall.pread_full(fd, view, start, length, nowait)
    if got != length:
        if got < 0 or nowait:
            raise WouldBlock  # not all cached, or no RWF_NOWAIT here: on a worker
        raise InputChanged(f"short read: {length - got} bytes missing at {start + got}")


def _read(view: memoryview, at: int, fd: int, start: int, length: int, flags: int) -> None:  # noqa: PLR0917
    """preadv ``length`` bytes of ``fd`` at ``start`` into ``view[at:]``, whole."""
    end = at + length
    while at < end:
        got = _preadv(fd, [view[at:end]], start, flags)
        if got < end - at and flags:
            raise WouldBlock  # partly cached: read it all on a worker
        if got <= 0:
            raise InputChanged(f"short read: {end - at} bytes missing at {start}")
        at += got
        start += got
