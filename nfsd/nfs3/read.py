"""READ (RFC 1813 §3.3.6): the path users wait on.

The data flow, in order::

    handle -> presented path -> Reader (cached by the namespace)
           -> runs(offset, count): [file range | zeros, ...]
           -> preadv each file run into one pooled buffer, zero-fill the rest
           -> reply = [header, buffer[:n], padding], sent as it lies

No reply allocates its data: the buffer comes from ``nfsd.buffers`` and
goes back once the writer has sent it.  A small READ whose bytes are all in
the page cache is served on the connection's reader thread (``RWF_NOWAIT``
proves they are); any other goes to a worker, so that a read waiting on
the disk holds up nothing else.  Base bytes, overlay bytes and
zeros of a merged image all land in the same buffer, in one pass, so a
merged image costs what a plain file costs plus one ``preadv`` per
extent boundary.  A short read inside a run means an input changed under
the server: the READ fails with ``NFS3ERR_IO`` rather than send bytes it
is not sure of.
"""

from __future__ import annotations

import os
import struct

from merge.namespace import ZERO_FD, InputChanged, Kind, NamespaceError
from nfsd.errors import NfsError, nfs_error
from nfsd.nfs3.service import RTMAX, UDP_RTMAX, Nfs3Service, post_op_attr_of
from nfsd.rpc import CallContext, Reply, WouldBlock
from xdr import nfs3
from xdr.nfs3 import NFS3Packer

ZEROS = bytes(RTMAX)
PADDING = (b"", b"\0\0\0", b"\0\0", b"\0")
_TAIL = struct.Struct(">III")  # count, eof, opaque length


INLINE_MAX = 64 * 1024  # larger READs always go to a worker: their copies overlap there


def read3(svc: Nfs3Service, ctx: CallContext, args: nfs3.READ3args) -> Reply:
    path = svc.path_of(args.file)
    attrs = svc.attrs(path)
    if attrs.kind == Kind.DIR:
        raise NfsError(nfs3.NFS3ERR_ISDIR)
    count = min(args.count, RTMAX if ctx.transport == "tcp" else UDP_RTMAX)
    offset = args.offset
    ctx.note = f"/{'/'.join(path)} off={offset} count={args.count}"

    # Served inline on the connection's reader only when it cannot wait:
    # a free buffer now, and every byte already in the page cache.
    if ctx.inline:
        if count > INLINE_MAX:
            raise WouldBlock
        buf = svc.buffers.try_acquire()
        if buf is None:
            raise WouldBlock
    else:
        buf = svc.buffers.acquire()
    try:
        try:
            with svc.namespace.open(path) as reader:
                size = reader.size
                n = _fill(memoryview(buf), reader.runs(offset, count), ctx.inline)
        except (OSError, NamespaceError) as e:
            raise nfs_error(e) from e
        head = NFS3Packer()
        head.pack_uint(nfs3.NFS3_OK)
        head.pack_post_op_attr(post_op_attr_of(attrs))
        eof = offset + n >= size
        header = head.get_buffer() + _TAIL.pack(n, eof, n)
    except BaseException:
        svc.buffers.release(buf)
        raise
    return Reply(
        [header, memoryview(buf)[:n], PADDING[n & 3]],
        release=lambda: svc.buffers.release(buf),
    )


def _fill(view: memoryview, runs: list, nowait: bool) -> int:
    """Copy the runs into ``view``, in order; return the bytes filled.

    With ``nowait``, data not in the page cache raises WouldBlock instead of
    waiting for the disk (RWF_NOWAIT).
    """
    flags = os.RWF_NOWAIT if nowait else 0
    pos = 0
    for fd, start, length in runs:
        end = pos + length
        if fd == ZERO_FD:
            view[pos:end] = ZEROS[:length]
        else:
            at = start
            while pos < end:
                try:
                    got = os.preadv(fd, [view[pos:end]], at, flags)
                except BlockingIOError:
                    raise WouldBlock from None
                if got < end - pos and nowait:
                    raise WouldBlock  # partly cached: read it all on a worker
                if got <= 0:
                    raise InputChanged(f"short read: {end - pos} bytes missing at {at}")
                pos += got
                at += got
        pos = end
    return pos
