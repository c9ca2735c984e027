"""NFSv3 on an instant-recovery session: what the procedures share, and those that only look.

Design notes
------------
A session handle names ``(session, fileid)`` (``nfsd.programs.sessions``);
every procedure here resolves it to the session's
``instant.namespace.SessionNamespace`` and calls it by fileid.  The
read-only export's procedures (``attrs``, ``read``, ``readdir``,
``fsinfo``) are path-based and stay exactly as they are; the router
(``nfsd.programs.nfs3.router``) sends a call here when its handle is a
session's.  The pieces that do not depend on how an entry is named are
shared with them: the READ buffer pool and fill (``read._fill``), the
READDIR paging (``readdir._page``), the fattr3 encoding.

Each session is its own file system (``fsid`` from the session key), so
fileids, which are unique only within a session, never meet another
export's.  Errors raised by the namespace become ``nfsstat3`` in one place
(``nfsd.programs.errors``); a fileid that no longer exists behind a handle
is ``NFS3ERR_STALE``.

Permissions are the export's and the mode's: a client whose entry says
``ro`` gets ``NFS3ERR_ROFS`` for any change; otherwise the (squashed)
credentials are checked against the mode bits, root passing everything as
knfsd does (the default of a session is ``no_root_squash``: ESXi writes as
root).
"""

from __future__ import annotations

import mmap
import os
import struct

from merge.namespace import Attrs, Kind, NamespaceError
from nfsd.programs.access import AccessControl
from nfsd.programs.buffers import BufferPool
from nfsd.programs.errors import NfsError, nfs_error
from nfsd.programs.handles import BadHandle, StaleHandle
from nfsd.programs.listings import Listing, Row, raw_name
from nfsd.programs.nfs3.attrs import lookup3_ok
from nfsd.programs.nfs3.fastattr import _OK, LastFattr3, entryplus3_bytes, post_op_attr_bytes
from nfsd.programs.nfs3.fsinfo import fsinfo_resok, pathconf_resok
from nfsd.programs.nfs3.read import (
    MAP_MIN,
    PADDING,
    _fill,
    copy_waits,
    mapped_reply,
    referenced_reply,
    sends_by_reference,
)
from nfsd.programs.nfs3.readdir import BARE, _page, dirlist_reply, entryplus3_bare, searchable
from nfsd.programs.nfs3.service import (
    MAY_EXEC,
    MAY_READ,
    RTMAX,
    UDP_RTMAX,
    decode_name,
    fattr3_of,
    may,
    nfstime,
    stale_if_gone,
)
from nfsd.programs.sessions import Session, SessionManager
from nfsd.rpc import CallContext, Reply, WouldBlock
from nfsd.transport.tls import PLAIN
from xdr import nfs3
from xdr.nfs3 import NFS3Packer

MAY_WRITE = 2
_TAIL = struct.Struct(">III")  # READ: count, eof, opaque length
_OK_ATTRS = struct.pack(">II", nfs3.NFS3_OK, 1)  # and TRUE: a post_op_attr follows
_U32 = struct.Struct(">I")


class SessionNfs:
    """The state the session procedures share."""

    def __init__(
        self,
        manager: SessionManager,
        access: AccessControl,
        buffers: BufferPool,
        cookieverf: bytes,
    ) -> None:
        self.manager = manager
        self.access = access
        self.buffers = buffers
        self.cookieverf = cookieverf
        # WRITE/COMMIT verifier: constant for this boot (every write is FILE_SYNC anyway).
        self.write_verf = os.urandom(8)
        # GETATTR's and READ's fattr3 of the Attrs object asked last (the namespace
        # gives a file's same object again while it holds: instant.namespace).
        self.fattr3 = LastFattr3()

    # -- handles and attributes ------------------------------------------------
    def target(self, fh: nfs3.nfs_fh3) -> tuple[Session, int]:
        """(session, fileid) a handle names; BADHANDLE or STALE otherwise.  The
        session's liveness (a ``stat``): a call asks this once."""
        try:
            key, fileid = self.manager.decode(fh.data)
        except BadHandle as e:
            raise NfsError(nfs3.NFS3ERR_BADHANDLE, str(e)) from None
        try:
            return self.manager.by_key(key), fileid
        except StaleHandle as e:
            raise NfsError(nfs3.NFS3ERR_STALE, str(e)) from None

    def attrs(self, s: Session, fileid: int, version: int | None = None) -> Attrs:
        """Attributes of an entry named by a handle: gone is STALE.  ``version``:
        the session store's ``version()`` the caller just read (else asked here)."""
        try:
            return s.ns.getattr(fileid, version)
        except NamespaceError as e:
            raise stale_if_gone(e) from None

    def maybe_attrs(self, s: Session, fileid: int) -> Attrs | None:
        try:
            return s.ns.getattr(fileid)
        except NamespaceError:
            return None

    def fh(self, s: Session, fileid: int) -> nfs3.nfs_fh3:
        return nfs3.nfs_fh3(self.manager.encode(s, fileid))

    def post(self, s: Session, a: Attrs | None) -> nfs3.post_op_attr:
        if a is None:
            return nfs3.post_op_attr(False, None)
        return nfs3.post_op_attr(True, fattr3_of(a, s.fsid))

    def wcc(self, s: Session, before: Attrs | None, after: Attrs | None) -> nfs3.wcc_data:
        pre = nfs3.pre_op_attr(False, None)
        if before is not None:
            pre = nfs3.pre_op_attr(
                True,
                nfs3.wcc_attr(before.size, nfstime(before.mtime_ns), nfstime(before.ctime_ns)),
            )
        return nfs3.wcc_data(pre, self.post(s, after))

    def writable(self, ctx: CallContext, s: Session) -> bool:
        """Whether the caller's entry of the session's client list allows changes."""
        d = self.access.decide(ctx, export=s.info.export_path)
        return d.spec is not None and not d.spec.options.ro


def reply(pack, res) -> Reply:
    p = NFS3Packer()
    pack(p, res)
    return Reply([p.get_buffer()])


# RFC 1813 §3.3.1
def getattr3(svc: SessionNfs, ctx: CallContext, args: nfs3.GETATTR3args) -> Reply:
    s, fid = svc.target(args.object)
    a = svc.attrs(s, fid)
    ctx.note = f"{s.info.name} fileid={fid}"
    return Reply([_OK + svc.fattr3.get(a, s.fsid)])


# RFC 1813 §3.3.3
def lookup3(svc: SessionNfs, ctx: CallContext, args: nfs3.LOOKUP3args) -> Reply:
    s, dfid = svc.target(args.what.dir)
    d = svc.attrs(s, dfid)
    ctx.note = f"{s.info.name} dir={dfid} name={args.what.name!r}"

    def fail(status: int) -> Reply:
        ctx.status = status
        return reply(
            NFS3Packer.pack_LOOKUP3res,
            nfs3.LOOKUP3res(status, resfail=nfs3.LOOKUP3resfail(svc.post(s, d))),
        )

    if d.kind != Kind.DIR:
        return fail(nfs3.NFS3ERR_NOTDIR)
    if not may(d, ctx, MAY_EXEC):
        return fail(nfs3.NFS3ERR_ACCES)
    try:
        if args.what.name == b".":
            a = d
        elif args.what.name == b"..":
            a = s.ns.getattr(s.ns.parent(dfid))
        else:
            a = s.ns.lookup(dfid, decode_name(args.what.name))
    except (NamespaceError, NfsError) as e:
        return fail(nfs_error(e).status)
    return Reply([lookup3_ok(svc.manager.encode(s, a.fileid), a, d, s.fsid)])


# RFC 1813 §3.3.4: the mode bits for the (squashed) credentials; MODIFY,
# EXTEND and DELETE when the client's entry is not `ro`.
def access3(svc: SessionNfs, ctx: CallContext, args: nfs3.ACCESS3args) -> Reply:
    s, fid = svc.target(args.object)
    a = svc.attrs(s, fid)
    granted = 0
    if may(a, ctx, MAY_READ):
        granted |= nfs3.ACCESS3_READ
    if may(a, ctx, MAY_EXEC):
        granted |= nfs3.ACCESS3_LOOKUP if a.kind == Kind.DIR else nfs3.ACCESS3_EXECUTE
    if svc.writable(ctx, s) and may(a, ctx, MAY_WRITE):
        granted |= nfs3.ACCESS3_MODIFY | nfs3.ACCESS3_EXTEND
        if a.kind == Kind.DIR:
            granted |= nfs3.ACCESS3_DELETE
    granted &= args.access
    ctx.note = f"{s.info.name} fileid={fid} asked={args.access:#x} granted={granted:#x}"
    return Reply([_OK + post_op_attr_bytes(a, s.fsid) + _U32.pack(granted)])


# RFC 1813 §3.3.5
def readlink3(svc: SessionNfs, ctx: CallContext, args: nfs3.READLINK3args) -> Reply:
    s, fid = svc.target(args.symlink)
    a = svc.attrs(s, fid)
    if a.kind != Kind.LNK:
        ctx.status = nfs3.NFS3ERR_INVAL
        return reply(
            NFS3Packer.pack_READLINK3res,
            nfs3.READLINK3res(nfs3.NFS3ERR_INVAL, resfail=nfs3.READLINK3resfail(svc.post(s, a))),
        )
    target = s.ns.readlink(fid)
    return reply(
        NFS3Packer.pack_READLINK3res,
        nfs3.READLINK3res(nfs3.NFS3_OK, nfs3.READLINK3resok(svc.post(s, a), target)),
    )


# RFC 1813 §3.3.6: base bytes, overlay bytes and zeros in one pooled buffer,
# or, for a large READ on plain TCP whose bytes are all in the page cache,
# sent as they lie, as the read-only export's: to a peer that is not
# loopback by reference (``read.by_reference``: ``sendfile`` of a ``dup`` of
# the base's and the data logs' descriptors, no copy in user space), else
# as views of their mappings (``SessionReader.maps``, ``read.by_mapping``:
# one copy, the send's, instead of two).  A log's bytes under a committed
# map never change (append-only; a log the cleaning removes lives on behind
# a ``dup`` or a mapping), so a run or view sent later holds the bytes as of
# the runs: a WRITE racing the READ gives the old bytes or the new, never a
# mix of other bytes.
# The file's attributes, size and runs as of one look at the session database
# (``SessionNamespace.open``); a directory is ISDIR, any other non-file INVAL.
def read3(svc: SessionNfs, ctx: CallContext, args: nfs3.READ3args) -> Reply:
    s, fid = svc.target(args.file)
    try:
        reader = s.ns.open(fid)
        a = reader.attrs
    except NamespaceError as e:
        raise stale_if_gone(e) from None
    if not may(a, ctx, MAY_READ, owner_override=True):
        raise NfsError(nfs3.NFS3ERR_ACCES)
    count = min(args.count, RTMAX if ctx.transport == "tcp" else UDP_RTMAX)
    ctx.note = f"{s.info.name} fileid={fid} off={args.offset} count={args.count}"
    by_ref = sends_by_reference(ctx, count)
    mappable = not by_ref and count >= MAP_MIN and ctx.transport == "tcp" and ctx.security is PLAIN
    head = _OK_ATTRS + svc.fattr3.get(a, s.fsid)
    buf: mmap.mmap | None = None
    try:
        try:
            with reader:
                runs = reader.runs(args.offset, count)
                if by_ref:
                    referenced = referenced_reply(runs, head, args.offset, a.size)
                    if referenced is not None:
                        return referenced
                maps = reader.maps() if mappable else {}
                if maps:
                    mapped = mapped_reply(svc.buffers, maps, runs, head, args.offset, a.size)
                    if mapped is not None:
                        return mapped
                # Inline: a large copy only when the loop serves this connection
                # alone, as the read-only export's (read.copy_waits); then a free
                # buffer now, and every byte in the page cache (RWF_NOWAIT), or a
                # worker serves it.
                if copy_waits(ctx, count):
                    raise WouldBlock
                buf = svc.buffers.try_acquire() if ctx.inline else svc.buffers.acquire()
                if buf is None:
                    raise WouldBlock
                if (mappable or by_ref) and not ctx.inline:  # not all cached: copied
                    reader.read_ahead()
                n = _fill(memoryview(buf), runs, ctx.inline)
        except (OSError, NamespaceError) as e:
            raise nfs_error(e) from e
    except BaseException:
        if buf is not None:
            svc.buffers.release(buf)
        raise
    pooled = buf
    header = head + _TAIL.pack(n, args.offset + n >= a.size, n)
    return Reply(
        [header, memoryview(pooled)[:n], PADDING[n & 3]],
        release=lambda: svc.buffers.release(pooled),
    )


def _listing(svc: SessionNfs, ctx: CallContext, fh: nfs3.nfs_fh3) -> tuple[Session, Attrs, Listing]:
    s, dfid = svc.target(fh)
    d = svc.attrs(s, dfid)
    if d.kind != Kind.DIR:
        raise NfsError(nfs3.NFS3ERR_NOTDIR)
    if not may(d, ctx, MAY_READ):
        raise NfsError(nfs3.NFS3ERR_ACCES)
    try:
        entries = s.ns.readdir(dfid)
    except NamespaceError as e:
        raise nfs_error(e) from e
    return s, d, Listing(entries)


def _dir_reply(svc: SessionNfs, s: Session, d: Attrs, entries: list[bytes], eof: bool) -> Reply:
    return dirlist_reply(svc.post(s, d), svc.cookieverf, entries, eof)


# RFC 1813 §3.3.16 (cookies: hashes of names, as the read-only export's)
def readdir3(svc: SessionNfs, ctx: CallContext, args: nfs3.READDIR3args) -> Reply:
    s, d, listing = _listing(svc, ctx, args.dir)

    def encode(cookie: int, row: Row) -> bytes:
        name, a = row
        return nfs3.entry3_bytes(nfs3.entry3(a.fileid, raw_name(name), cookie))

    out, eof = _page(ctx, listing, args.cookie, "r", encode, maxsize=args.count, dir_budget=None)
    return _dir_reply(svc, s, d, out, eof)


# RFC 1813 §3.3.17
def readdirplus3(svc: SessionNfs, ctx: CallContext, args: nfs3.READDIRPLUS3args) -> Reply:
    s, d, listing = _listing(svc, ctx, args.dir)

    def encode(cookie: int, row: Row) -> bytes:
        name, a = row
        return entryplus3_bytes(cookie, raw_name(name), a, s.fsid, svc.manager.encode(s, a.fileid))

    if not searchable(ctx, d):  # r but not x: names only, as the read-only export's
        kind, encode = BARE, entryplus3_bare
    else:
        kind = "p"
    out, eof = _page(
        ctx, listing, args.cookie, kind, encode, maxsize=args.maxcount, dir_budget=args.dircount
    )
    return _dir_reply(svc, s, d, out, eof)


# RFC 1813 §3.3.18: the quota's room, or the cache file system's if smaller.
def fsstat3(svc: SessionNfs, ctx: CallContext, args: nfs3.FSSTAT3args) -> Reply:
    s, fid = svc.target(args.fsroot)
    a = svc.attrs(s, fid)
    try:
        st = s.ns.fsstat()
    except (NamespaceError, OSError) as e:
        raise nfs_error(e) from e
    return reply(
        NFS3Packer.pack_FSSTAT3res,
        nfs3.FSSTAT3res(
            nfs3.NFS3_OK,
            nfs3.FSSTAT3resok(
                svc.post(s, a),
                tbytes=st.total_bytes,
                fbytes=st.free_bytes,
                abytes=st.avail_bytes,
                tfiles=st.total_files,
                ffiles=st.free_files,
                afiles=st.avail_files,
                invarsec=0,
            ),
        ),
    )


# RFC 1813 §3.3.19: 1 MiB transfers both ways; times settable; symlinks, no hard links.
def fsinfo3(svc: SessionNfs, ctx: CallContext, args: nfs3.FSINFO3args) -> Reply:
    s, fid = svc.target(args.fsroot)
    props = nfs3.FSF3_SYMLINK | nfs3.FSF3_HOMOGENEOUS | nfs3.FSF3_CANSETTIME
    ok = fsinfo_resok(svc.post(s, svc.attrs(s, fid)), props)
    return reply(NFS3Packer.pack_FSINFO3res, nfs3.FSINFO3res(nfs3.NFS3_OK, ok))


# RFC 1813 §3.3.20
def pathconf3(svc: SessionNfs, ctx: CallContext, args: nfs3.PATHCONF3args) -> Reply:
    s, fid = svc.target(args.object)
    ok = pathconf_resok(svc.post(s, svc.attrs(s, fid)))
    return reply(NFS3Packer.pack_PATHCONF3res, nfs3.PATHCONF3res(nfs3.NFS3_OK, ok))
