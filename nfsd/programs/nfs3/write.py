"""The NFSv3 procedures that change a session: SETATTR, WRITE, CREATE ... COMMIT.

Design notes
------------
* Durable before the reply (RFC 1813 §3.3.7, §4.7): every namespace call
  commits before it returns (``instant.namespace``), so WRITE is always
  answered ``FILE_SYNC`` and COMMIT has nothing left to do; the write
  verifier is constant for the server's boot.  libnfs (QEMU) never checks
  the verifier, so an acknowledged write must never depend on it.
* ``wcc_data``: the attributes before the change and after it, read just
  around the change (another client's change in between makes the client
  refetch, which is what wcc is for).  A failure carries them too.
* A change on a client entry marked ``ro`` is ``NFS3ERR_ROFS``; a change
  the mode bits forbid ``NFS3ERR_ACCES`` (root passes, as in knfsd).  In a
  sticky directory, REMOVE, RMDIR and RENAME (of the entry, and of one it
  replaces) by neither root nor the directory's nor the entry's owner are
  ``NFS3ERR_PERM`` (Linux's ``may_delete``; the namespace checks it).
* A new object's owner is the caller's (squashed) uid and gid; the ones
  the client asks for in its attributes are honoured only for root, as
  knfsd's ``nfsd_create_setattr`` (``_new_owner``).  In a set-group-ID
  folder it takes the folder's group, and a new folder the bit (Linux's
  ``inode_init_owner``).  An id of 0xFFFFFFFF is no id (chown(2)'s -1,
  which knfsd ignores): never stored.
* SETATTR's owner and mode as Linux's ``setattr_prepare`` decides them: the
  owner may change a file's group to one of its own groups, only root its
  owner (``NFS3ERR_PERM``); a set-group-ID bit for a group the caller is
  not in is dropped, not kept; a change of owner or group drops a
  non-folder's set-ID bits (knfsd's ``nfsd_sanitize_attrs``: a file chowned
  to root never keeps a user's set-user-ID).
* A WRITE or a truncate (SETATTR's size, a CREATE over a file) by a caller
  who is not root drops the file's set-ID bits (``without_setid``), as
  Linux's ``file_remove_privs``: a WRITE in a transaction before its bytes
  are logged, only when the file has them (``_drop_setid``).
* LINK and MKNOD are refused with ``NFS3ERR_NOTSUPP`` (no hypervisor needs
  them; one name per node keeps the namespace simple); MKNOD of a file,
  folder or link type with ``NFS3ERR_BADTYPE`` (RFC 1813 §3.3.11).
* CREATE UNCHECKED over an existing file applies only the size (knfsd's
  rule: a re-create truncates, it does not chmod); EXCLUSIVE keeps its
  verifier with the file (a retransmission succeeds, another verifier gets
  EXIST), and the client sends the attributes by SETATTR after it.  The
  initial size and times are set in the create's own transaction, which
  also records the call's key (``nfs3.router``): a crash between a create
  and its truncate would leave a recorded call whose retransmission is
  answered success, the old bytes kept.
"""

from __future__ import annotations

import struct
from typing import Any

from instant.callvalues import NOW, S_ISGID, S_IXGRP, CreateHow, without_setid
from merge.namespace import Attrs, Kind, NamespaceError
from nfsd.programs.errors import NfsError, nfs_error
from nfsd.programs.nfs3.fastattr import _BILLION, _OK, post_op_attr_bytes
from nfsd.programs.nfs3.service import MAY_EXEC, decode_name, may
from nfsd.programs.nfs3.session import MAY_WRITE, SessionNfs
from nfsd.programs.sessions import Session, is_session_handle
from nfsd.rpc import CallContext, Later, Reply, at_end, batched
from xdr import nfs3
from xdr.base import XdrError
from xdr.nfs3 import NFS3Packer

_NO_ID = 0xFFFFFFFF  # chown(2)'s -1: "no change", an id nobody has (knfsd: invalid, ignored)

_HOW = {
    nfs3.UNCHECKED: CreateHow.UNCHECKED,
    nfs3.GUARDED: CreateHow.GUARDED,
    nfs3.EXCLUSIVE: CreateHow.EXCLUSIVE,
}


class Refused(NfsError):
    """A change refused with a status, answered with the wcc data gathered so far."""


def _ns_time(t: nfs3.nfstime3 | None) -> int:
    assert t is not None
    return t.seconds * 1_000_000_000 + t.nseconds


def _client_time(t: nfs3.nfstime3 | None) -> int:
    """A time to set, as the client gave it: ``nseconds`` is the part of a second
    below one (RFC 1813 §2.6, nfstime3), so 10^9 or more is ``NFS3ERR_INVAL``, as
    ganesha answers; carried into the seconds it would wrap a time near 2^32 s
    to 1970 (a guard's ctime is only compared: a wrong one is ``NOT_SYNC``)."""
    assert t is not None
    if t.nseconds >= 1_000_000_000:
        raise Refused(nfs3.NFS3ERR_INVAL)
    return _ns_time(t)


def sattr_changes(sa: nfs3.sattr3) -> dict[str, Any]:
    """The keyword arguments of ``SessionNamespace.setattr`` a sattr3 asks for."""
    kw: dict[str, Any] = {}
    if sa.mode.set_it:
        kw["mode"] = sa.mode.mode
    if sa.uid.set_it and sa.uid.uid != _NO_ID:
        kw["uid"] = sa.uid.uid
    if sa.gid.set_it and sa.gid.gid != _NO_ID:
        kw["gid"] = sa.gid.gid
    if sa.size.set_it:
        kw["size"] = sa.size.size
    for name, how, t in (
        ("atime_ns", sa.atime.set_it, sa.atime.atime),
        ("mtime_ns", sa.mtime.set_it, sa.mtime.mtime),
    ):
        if how == nfs3.SET_TO_SERVER_TIME:
            kw[name] = NOW
        elif how == nfs3.SET_TO_CLIENT_TIME:
            kw[name] = _client_time(t)
    return kw


def _owner(ctx: CallContext) -> tuple[int, int]:
    return ctx.uid, (ctx.cred.gid if ctx.cred else 65534)


def _new_owner(ctx: CallContext, kw: dict[str, Any], d: Attrs) -> tuple[int, int]:
    """The owner of a new object in folder ``d``, taking ``uid``/``gid`` out of ``kw``
    (``sattr_changes``).

    The caller's (squashed) uid, and its gid or, in a set-group-ID folder, the
    folder's (Linux's ``inode_init_owner``); the ones the client asked for only
    when that caller is root.  As knfsd's ``nfsd_create_setattr``, which drops
    ``ATTR_UID|ATTR_GID`` unless the fsuid is 0: otherwise a squashed root, or
    anyone, could CREATE a setuid file owned by root (SETATTR refuses the same
    change with ``NFS3ERR_PERM``).
    """
    uid, gid = _owner(ctx)
    if d.mode & S_ISGID:
        gid = d.gid
    asked_uid, asked_gid = kw.pop("uid", uid), kw.pop("gid", gid)
    if ctx.uid != 0:
        return uid, gid
    return asked_uid, asked_gid


def _new_mode(ctx: CallContext, mode: int, gid: int, d: Attrs, *, folder: bool) -> int:
    """A new object's mode: a folder made in a set-group-ID folder gets the bit
    too; anything else, set-group-ID and group-executable, keeps the bit only
    for a group of the caller's (or root's), as Linux's ``inode_init_owner``
    (``mode_strip_sgid``; without group execute the bit is a locking mark)."""
    if folder:
        return mode | S_ISGID if d.mode & S_ISGID else mode
    return _sgid_checked(ctx, mode, gid) if mode & S_IXGRP else mode


def _sgid_checked(ctx: CallContext, mode: int, gid: int) -> int:
    """``mode`` without its set-group-ID bit when ``gid`` is none of the caller's
    groups and the caller is not root (Linux's ``setattr_prepare``: dropped, not
    refused)."""
    if mode & S_ISGID and ctx.uid != 0 and gid not in ctx.gids:
        return mode & ~S_ISGID
    return mode


def _may_chown(ctx: CallContext, a: Attrs, kw: dict[str, Any]) -> bool:
    """Whether the caller may set the owner and group ``kw`` asks for (Linux's
    ``chown_ok`` and ``chgrp_ok``): root anything; the owner its own uid again
    and a group of its own (or the file's again); nobody else either."""
    if ctx.uid == 0 or ("uid" not in kw and "gid" not in kw):
        return True
    if ctx.uid != a.uid:
        return False
    if "uid" in kw and kw["uid"] != a.uid:
        return False
    return "gid" not in kw or kw["gid"] == a.gid or kw["gid"] in ctx.gids


def _drops_setid(ctx: CallContext) -> bool:
    """Whether a truncate by this caller drops a file's set-ID bits: anyone's but
    root's (``CAP_FSETID``), as truncate(2) does (``do_truncate``: Linux's
    ``should_remove_suid``).  The stricter rule: knfsd's ``nfsd_setattr`` asks
    ``notify_change`` for the size alone, with no ``ATTR_KILL_SUID``."""
    return ctx.uid != 0


def _may_change_dir(svc: SessionNfs, ctx: CallContext, s: Session, d: Attrs) -> None:
    if not svc.writable(ctx, s):
        raise Refused(nfs3.NFS3ERR_ROFS)
    if d.kind != Kind.DIR:
        raise Refused(nfs3.NFS3ERR_NOTDIR)
    if not may(d, ctx, MAY_WRITE | MAY_EXEC):
        raise Refused(nfs3.NFS3ERR_ACCES)


def _wcc_reply(svc: SessionNfs, ctx: CallContext, status: int, *wccs: nfs3.wcc_data) -> Reply:
    ctx.status = status
    p = NFS3Packer()
    p.pack_uint(status)
    for w in wccs:
        p.pack_wcc_data(w)
    return Reply([p.get_buffer()])


def _dir_change(svc: SessionNfs, ctx: CallContext, fh: nfs3.nfs_fh3, run) -> Reply:
    """Run ``run(s, dfid, before)`` on a directory; failures carry its wcc_data.

    ``run`` returns the reply's body after the status (or raises).
    """
    s, dfid = svc.target(fh)
    before = svc.attrs(s, dfid)
    try:
        _may_change_dir(svc, ctx, s, before)
        body = run(s, dfid, before)
    except (NfsError, NamespaceError) as e:
        status = nfs_error(e).status
        return _wcc_reply(svc, ctx, status, svc.wcc(s, before, svc.maybe_attrs(s, dfid)))
    p = NFS3Packer()
    p.pack_uint(nfs3.NFS3_OK)
    return Reply([p.get_buffer() + body])


def created_body(svc: SessionNfs, s: Session, a: Attrs, dfid: int, before: Attrs) -> bytes:
    p = NFS3Packer()
    p.pack_post_op_fh3(nfs3.post_op_fh3(True, svc.fh(s, a.fileid)))
    p.pack_post_op_attr(svc.post(s, a))
    p.pack_wcc_data(svc.wcc(s, before, svc.maybe_attrs(s, dfid)))
    return p.get_buffer()


# RFC 1813 §3.3.8
def create3(svc: SessionNfs, ctx: CallContext, args: nfs3.CREATE3args) -> Reply:
    how = args.how

    def run(s: Session, dfid: int, before: Attrs) -> bytes:
        name = decode_name(args.where.name)
        uid, gid = _owner(ctx)
        ctx.note = f"{s.info.name} dir={dfid} name={name!r} how={how.mode}"
        if how.mode == nfs3.EXCLUSIVE:
            a = s.ns.create(
                dfid, name, how=CreateHow.EXCLUSIVE, verifier=bytes(how.verf or b""),
                uid=uid, gid=gid,
            )  # fmt: skip
            return created_body(svc, s, a, dfid, before)
        assert how.obj_attributes is not None
        kw = sattr_changes(how.obj_attributes)
        uid, gid = _new_owner(ctx, kw, before)
        mode = _new_mode(ctx, kw.get("mode", 0o644), gid, before, folder=False)
        # The rest of obj_attributes: the new (or truncated) file's initial size
        # and times (RFC 1813 §3.3.8), as knfsd's nfsd_create_setattr applies them;
        # in the create's own transaction, with the call's recorded key.
        a = s.ns.create(
            dfid, name, how=_HOW[how.mode], mode=mode, uid=uid, gid=gid,
            size=kw.get("size"), atime_ns=kw.get("atime_ns"), mtime_ns=kw.get("mtime_ns"),
            drop_setid=_drops_setid(ctx),
        )  # fmt: skip
        return created_body(svc, s, a, dfid, before)

    return _dir_change(svc, ctx, args.where.dir, run)


# RFC 1813 §3.3.9
def mkdir3(svc: SessionNfs, ctx: CallContext, args: nfs3.MKDIR3args) -> Reply:
    def run(s: Session, dfid: int, before: Attrs) -> bytes:
        name = decode_name(args.where.name)
        kw = sattr_changes(args.attributes)
        uid, gid = _new_owner(ctx, kw, before)
        mode = _new_mode(ctx, kw.get("mode", 0o755), gid, before, folder=True)
        ctx.note = f"{s.info.name} dir={dfid} name={name!r}"
        a = s.ns.mkdir(dfid, name, mode=mode, uid=uid, gid=gid)
        return created_body(svc, s, a, dfid, before)

    return _dir_change(svc, ctx, args.where.dir, run)


# RFC 1813 §3.3.10
def symlink3(svc: SessionNfs, ctx: CallContext, args: nfs3.SYMLINK3args) -> Reply:
    def run(s: Session, dfid: int, before: Attrs) -> bytes:
        name = decode_name(args.where.name)
        kw = sattr_changes(args.symlink.symlink_attributes)
        uid, gid = _new_owner(ctx, kw, before)
        a = s.ns.symlink(
            dfid, name, bytes(args.symlink.symlink_data), mode=kw.get("mode", 0o777),
            uid=uid, gid=gid,
        )  # fmt: skip
        return created_body(svc, s, a, dfid, before)

    return _dir_change(svc, ctx, args.where.dir, run)


# RFC 1813 §3.3.11: device nodes, sockets and FIFOs have no place in a datastore
# (NOTSUPP); a regular file, a directory or a link is no type MKNOD makes
# (BADTYPE, as the RFC says and knfsd answers).
_NOT_MKNOD = frozenset((nfs3.NF3REG, nfs3.NF3DIR, nfs3.NF3LNK))


def mknod3(svc: SessionNfs, ctx: CallContext, args: nfs3.MKNOD3args) -> Reply:
    def run(s: Session, dfid: int, before: Attrs) -> bytes:
        if args.what.type in _NOT_MKNOD:
            raise Refused(nfs3.NFS3ERR_BADTYPE, "MKNOD makes no file, directory or link")
        raise Refused(nfs3.NFS3ERR_NOTSUPP, "MKNOD is not supported in a session")

    return _dir_change(svc, ctx, args.where.dir, run)


def _unlink(svc: SessionNfs, ctx: CallContext, args: Any, *, directory: bool) -> Reply:
    def run(s: Session, dfid: int, before: Attrs) -> bytes:
        name = decode_name(args.object.name)
        ctx.note = f"{s.info.name} dir={dfid} name={name!r}"
        if name in (".", ".."):
            raise Refused(nfs3.NFS3ERR_INVAL if name == "." else nfs3.NFS3ERR_EXIST)
        (s.ns.rmdir if directory else s.ns.remove)(dfid, name, caller=ctx.uid)
        p = NFS3Packer()
        p.pack_wcc_data(svc.wcc(s, before, svc.maybe_attrs(s, dfid)))
        return p.get_buffer()

    return _dir_change(svc, ctx, args.object.dir, run)


# RFC 1813 §3.3.12: a base file too (the session forgets it; the storage keeps it).
def remove3(svc: SessionNfs, ctx: CallContext, args: nfs3.REMOVE3args) -> Reply:
    return _unlink(svc, ctx, args, directory=False)


# RFC 1813 §3.3.13
def rmdir3(svc: SessionNfs, ctx: CallContext, args: nfs3.RMDIR3args) -> Reply:
    return _unlink(svc, ctx, args, directory=True)


# RFC 1813 §3.3.14: over an existing name, across folders of the same session.
def rename3(svc: SessionNfs, ctx: CallContext, args: nfs3.RENAME3args) -> Reply:
    s, fdid = svc.target(args.from_.dir)
    fbefore = svc.attrs(s, fdid)
    tbefore: Attrs | None = None
    tdid = fdid
    try:
        if not is_session_handle(args.to.dir.data):
            raise Refused(nfs3.NFS3ERR_XDEV)
        s2, tdid = svc.target(args.to.dir)
        if s2 is not s:
            raise Refused(nfs3.NFS3ERR_XDEV)
        tbefore = svc.attrs(s, tdid)
        _may_change_dir(svc, ctx, s, fbefore)
        _may_change_dir(svc, ctx, s, tbefore)
        src, dst = decode_name(args.from_.name), decode_name(args.to.name)
        ctx.note = f"{s.info.name} {fdid}/{src!r} -> {tdid}/{dst!r}"
        if src in (".", "..") or dst in (".", ".."):
            raise Refused(nfs3.NFS3ERR_INVAL)
        s.ns.rename(fdid, src, tdid, dst, caller=ctx.uid)
        status = nfs3.NFS3_OK
    except (NfsError, NamespaceError) as e:
        status = nfs_error(e).status
    return _wcc_reply(
        svc, ctx, status,
        svc.wcc(s, fbefore, svc.maybe_attrs(s, fdid)),
        svc.wcc(s, tbefore, svc.maybe_attrs(s, tdid) if tbefore is not None else None),
    )  # fmt: skip


# RFC 1813 §3.3.15: hard links are refused by design.
def link3(svc: SessionNfs, ctx: CallContext, args: nfs3.LINK3args) -> Reply:
    s, fid = svc.target(args.file)
    a = svc.attrs(s, fid)
    d: Attrs | None = None
    if is_session_handle(args.link.dir.data):
        s2, dfid = svc.target(args.link.dir)
        d = svc.attrs(s2, dfid) if s2 is s else None
    status = nfs3.NFS3ERR_NOTSUPP if svc.writable(ctx, s) else nfs3.NFS3ERR_ROFS
    ctx.status = status
    p = NFS3Packer()
    p.pack_uint(status)
    p.pack_post_op_attr(svc.post(s, a))
    p.pack_wcc_data(svc.wcc(s, d, d))
    return Reply([p.get_buffer()])


_PRE_OP = struct.Struct(">IQ4I")  # TRUE, then a wcc_attr: size, mtime, ctime
_WRITE_TAIL = struct.Struct(">II8s")  # count, committed, verifier


def wcc_ok_bytes(before: Attrs, after: Attrs, fsid: int) -> bytes:
    """``NFS3_OK`` and the ``wcc_data`` of a change: the bytes ``NFS3Packer`` writes for
    ``svc.wcc(s, before, after)``, without building its objects (a WRITE's reply)."""
    m, c = before.mtime_ns, before.ctime_ns
    try:
        pre = _PRE_OP.pack(
            1, before.size, m // _BILLION & 0xFFFFFFFF, m % _BILLION,
            c // _BILLION & 0xFFFFFFFF, c % _BILLION,
        )  # fmt: skip
    except struct.error as e:
        raise XdrError(f"wcc_attr: {e}") from None
    return _OK + pre + post_op_attr_bytes(after, fsid)


def _file_change(svc: SessionNfs, ctx: CallContext, fh: nfs3.nfs_fh3, run) -> Reply:
    """Run ``run(s, fid, before) -> (after, tail bytes)`` on an object; wcc either way."""
    s, fid = svc.target(fh)
    before = svc.attrs(s, fid)
    try:
        if not svc.writable(ctx, s):
            raise Refused(nfs3.NFS3ERR_ROFS)
        after, tail = run(s, fid, before)
    except (NfsError, NamespaceError) as e:
        status = nfs_error(e).status
        return _wcc_reply(svc, ctx, status, svc.wcc(s, before, svc.maybe_attrs(s, fid)))
    return Reply([wcc_ok_bytes(before, after, s.fsid) + tail])


# RFC 1813 §3.3.2: size up and down, times, mode, owner; guarded by ctime.
def setattr3(svc: SessionNfs, ctx: CallContext, args: nfs3.SETATTR3args) -> Reply:
    def run(s: Session, fid: int, a: Attrs) -> tuple[Attrs, bytes]:
        kw = sattr_changes(args.new_attributes)
        ctx.note = f"{s.info.name} fileid={fid} {sorted(kw)}"
        owner = ctx.uid in (0, a.uid)
        if not _may_chown(ctx, a, kw):
            raise Refused(nfs3.NFS3ERR_PERM)
        if "mode" in kw and not owner:
            raise Refused(nfs3.NFS3ERR_PERM)
        if "mode" in kw:
            kw["mode"] = _sgid_checked(ctx, kw["mode"], kw.get("gid", a.gid))
        if ("uid" in kw or "gid" in kw) and a.kind != Kind.DIR:
            if "mode" in kw:  # knfsd's nfsd_sanitize_attrs: a chown drops set-ID bits
                kw["mode"] = without_setid(kw["mode"])
            else:
                kw["drop_setid"] = True
        times = [kw[k] for k in ("atime_ns", "mtime_ns") if k in kw]
        if times and not owner:  # as utimensat(2): a time of one's choosing is the owner's
            if any(t != NOW for t in times):
                raise Refused(nfs3.NFS3ERR_PERM)
            if not may(a, ctx, MAY_WRITE):  # "now": anyone who may write the file
                raise Refused(nfs3.NFS3ERR_ACCES)
        if "size" in kw and not (owner or may(a, ctx, MAY_WRITE)):
            raise Refused(nfs3.NFS3ERR_ACCES)
        if args.guard.check:
            kw["guard_ctime_ns"] = _ns_time(args.guard.obj_ctime)
        if "size" in kw and a.kind == Kind.DIR:
            raise Refused(nfs3.NFS3ERR_ISDIR)
        if "size" in kw and a.kind != Kind.REG:
            raise Refused(nfs3.NFS3ERR_INVAL)
        if "size" in kw and _drops_setid(ctx):
            kw["drop_setid"] = True
        return s.ns.setattr(fid, **kw), b""

    return _file_change(svc, ctx, args.object, run)


# RFC 1813 §3.3.7: on stable storage before the reply, always FILE_SYNC.
def write3(
    svc: SessionNfs, ctx: CallContext, args: nfs3.WRITE3args, *,
    out: Later[Reply | None] | None = None,
) -> Reply:  # fmt: skip
    """Answered later (``nfsd.rpc.Later``): once the write's group is durable, on the
    store's committer thread; no worker waits for it.  What is refused before a byte
    is written is answered now; either way with wcc.  ``out``: the Later to settle
    with the reply's body (the fast path's, which records it in the reply cache and
    puts the RPC header on as it settles: ``nfs3.router``); else a new one."""
    s, fid = svc.target(args.file)
    return write_to(svc, ctx, args, s, fid, out=out)


_SETID = 0o6000


def _drop_setid(s: Session, fid: int) -> int:
    """A WRITE by a caller who is not root (no ``CAP_FSETID``) to a set-ID file: the
    bits dropped first, in a transaction of their own, durable before a byte is
    logged, as Linux's ``file_remove_privs`` before the write (a write that fails
    after it leaves them dropped there too).  Only such a WRITE pays a transaction,
    and once: the next finds the bits gone.  On the loop (``nowait``) it is
    ``WouldWait`` before anything changed, and a worker serves the call.  The
    store's version after it: the write's answer then carries the new mode."""
    s.ns.setattr(fid, drop_setid=True)
    return s.ns.store.version()


def write_to(
    svc: SessionNfs, ctx: CallContext, args: nfs3.WRITE3args, s: Session, fid: int, *,
    out: Later[Reply | None] | None = None,
) -> Reply:  # fmt: skip
    """:func:`write3` on the handle's (session, fileid), resolved by the caller."""
    version = s.ns.store.version()  # once for the wcc read and the write
    before = svc.attrs(s, fid, version)
    settled: Later[Reply | None] = Later() if out is None else out
    tail = b""

    def answer(outcome: Attrs | Exception) -> None:
        """The store's ``done``, on its committer: the reply, settled straight into
        ``settled`` (not a Later mapped onto another: one fewer hop per WRITE)."""
        try:
            if isinstance(outcome, (NfsError, NamespaceError)):
                status = nfs_error(outcome).status
                wcc = svc.wcc(s, before, svc.maybe_attrs(s, fid))
                reply = _wcc_reply(svc, ctx, status, wcc)
            elif isinstance(outcome, Exception):
                raise outcome
            else:
                reply = Reply([wcc_ok_bytes(before, outcome, s.fsid) + tail])
        except BaseException as e:  # handed on, raised where it is read
            settled.fail(e)
            return
        settled.resolve(reply)

    try:
        if not svc.writable(ctx, s):
            raise Refused(nfs3.NFS3ERR_ROFS)
        if before.kind == Kind.DIR:
            raise Refused(nfs3.NFS3ERR_ISDIR)
        if before.kind != Kind.REG:
            raise Refused(nfs3.NFS3ERR_INVAL)
        if not (ctx.uid == before.uid or may(before, ctx, MAY_WRITE)):
            raise Refused(nfs3.NFS3ERR_ACCES)
        if before.mode & _SETID and ctx.uid != 0 and without_setid(before.mode) != before.mode:
            version = _drop_setid(s, fid)
        data = memoryview(args.data)[: args.count]
        ctx.note = f"{s.info.name} fileid={fid} off={args.offset} count={len(data)}"
        tail = _WRITE_TAIL.pack(len(data), nfs3.FILE_SYNC, svc.write_verf)
        s.ns.write_async(
            fid, args.offset, data, answer, version=version, gather=batched, wake_later=at_end
        )
        # In the log now: the deferred chain (reply cache, dispatcher) keeps ``args``
        # until the group commits, and must not keep the record its data views.
        args.data = b""
    except (NfsError, NamespaceError) as e:
        status = nfs_error(e).status
        return _wcc_reply(svc, ctx, status, svc.wcc(s, before, svc.maybe_attrs(s, fid)))
    return Reply([], later=settled)


# RFC 1813 §3.3.21: every WRITE was FILE_SYNC; nothing is left to flush.  COMMIT
# names a regular file: a directory is ISDIR, anything else INVAL, as WRITE's
# (knfsd's ``fh_verify`` for S_IFREG).
def commit3(svc: SessionNfs, ctx: CallContext, args: nfs3.COMMIT3args) -> Reply:
    s, fid = svc.target(args.file)
    a = svc.attrs(s, fid)
    if a.kind != Kind.REG:
        status = nfs3.NFS3ERR_ISDIR if a.kind == Kind.DIR else nfs3.NFS3ERR_INVAL
        return _wcc_reply(svc, ctx, status, svc.wcc(s, a, a))
    s.ns.commit(fid)
    p = NFS3Packer()
    p.pack_uint(nfs3.NFS3_OK)
    p.pack_wcc_data(svc.wcc(s, a, a))
    p.pack_fopaque(nfs3.NFS3_WRITEVERFSIZE, svc.write_verf)
    return Reply([p.get_buffer()])
