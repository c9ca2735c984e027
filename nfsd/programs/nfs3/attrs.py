"""GETATTR, LOOKUP, ACCESS, READLINK: the procedures that only look."""

from __future__ import annotations

import struct

from merge.namespace import Attrs, Kind, NamespaceError
from nfsd.programs.errors import nfs_error
from nfsd.programs.nfs3.fastattr import LastFattr3, getattr3_ok, post_op_attr_bytes
from nfsd.programs.nfs3.service import (
    MAY_EXEC,
    MAY_READ,
    Nfs3Service,
    decode_name,
    may,
    post_op_attr_of,
)
from nfsd.rpc import CallContext, Reply
from xdr import nfs3
from xdr.base import XdrError
from xdr.nfs3 import NFS3Packer


def _reply(pack, res) -> Reply:
    p = NFS3Packer()
    pack(p, res)
    return Reply([p.get_buffer()])


# RFC 1813 §3.3.1
def getattr3(svc: Nfs3Service, ctx: CallContext, args: nfs3.GETATTR3args) -> Reply:
    path = svc.path_of(args.object)
    a = svc.attrs(path)
    ctx.note = "/" + "/".join(path)
    return Reply([getattr3_ok(a, svc.fsid)])


# RFC 1813 §3.3.3
def lookup3(svc: Nfs3Service, ctx: CallContext, args: nfs3.LOOKUP3args) -> Reply:
    dirpath = svc.path_of(args.what.dir)
    dattrs = svc.attrs(dirpath)
    ctx.note = f"/{'/'.join(dirpath)} name={args.what.name!r}"
    if dattrs.kind != Kind.DIR:
        return _lookup_fail(svc, ctx, nfs3.NFS3ERR_NOTDIR, dattrs)
    if not may(dattrs, ctx, MAY_EXEC):
        return _lookup_fail(svc, ctx, nfs3.NFS3ERR_ACCES, dattrs)
    if args.what.name == b".":
        path = dirpath
    elif args.what.name == b"..":
        path = dirpath[:-1]
    else:
        try:
            path = (*dirpath, decode_name(args.what.name))
        except Exception as e:
            return _lookup_fail(svc, ctx, nfs_error(e).status, dattrs)
    try:
        a = svc.namespace.getattr(path)
    except NamespaceError as e:
        return _lookup_fail(svc, ctx, nfs_error(e).status, dattrs)
    return Reply([lookup3_ok(svc.handles.encode(path, a.fileid), a, dattrs, svc.fsid)])


_OK_FH = struct.Struct(">II")  # NFS3_OK, the handle's length
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")


def lookup3_ok(fh: bytes, a: Attrs, dattrs: Attrs, fsid: int) -> bytes:
    """A whole LOOKUP3res with NFS3_OK, as bytes: the packer's, without its objects."""
    if len(fh) > nfs3.NFS3_FHSIZE:
        raise XdrError("lookup3: handle too long")
    return b"".join(
        (
            _OK_FH.pack(nfs3.NFS3_OK, len(fh)),
            fh,
            _PAD[len(fh) & 3],
            post_op_attr_bytes(a, fsid),
            _TRUE,
            _FOLDER.get(dattrs, fsid),  # LOOKUPs come in runs in one folder: packed once
        )
    )


_TRUE = struct.pack(">I", 1)  # post_op_attr: attributes follow
_FOLDER = LastFattr3()


def _lookup_fail(svc: Nfs3Service, ctx: CallContext, status: int, dattrs) -> Reply:
    ctx.status = status
    return _reply(
        NFS3Packer.pack_LOOKUP3res,
        nfs3.LOOKUP3res(status, resfail=nfs3.LOOKUP3resfail(post_op_attr_of(dattrs, svc.fsid))),
    )


def access_granted(a: Attrs, ctx: CallContext, asked: int) -> int:
    """ACCESS's answer: of the bits ``asked``, those the (squashed) caller holds on ``a``."""
    granted = 0
    if may(a, ctx, MAY_READ):
        granted |= nfs3.ACCESS3_READ
    if may(a, ctx, MAY_EXEC):
        granted |= nfs3.ACCESS3_LOOKUP if a.kind == Kind.DIR else nfs3.ACCESS3_EXECUTE
    return granted & asked


# RFC 1813 §3.3.4: READ, LOOKUP (directories) and EXECUTE (files) by the mode
# bits for the call's credentials, squashed as the export says (nfsd.programs.access);
# MODIFY, EXTEND and DELETE never.
def access3(svc: Nfs3Service, ctx: CallContext, args: nfs3.ACCESS3args) -> Reply:
    path = svc.path_of(args.object)
    a = svc.attrs(path)
    granted = access_granted(a, ctx, args.access)
    ctx.note = f"/{'/'.join(path)} asked={args.access:#x} granted={granted:#x}"
    return _reply(
        NFS3Packer.pack_ACCESS3res,
        nfs3.ACCESS3res(nfs3.NFS3_OK, nfs3.ACCESS3resok(post_op_attr_of(a, svc.fsid), granted)),
    )


# RFC 1813 §3.3.5: the export presents no symbolic links.
def readlink3(svc: Nfs3Service, ctx: CallContext, args: nfs3.READLINK3args) -> Reply:
    path = svc.path_of(args.symlink)
    a = svc.attrs(path)
    ctx.status = nfs3.NFS3ERR_INVAL
    return _reply(
        NFS3Packer.pack_READLINK3res,
        nfs3.READLINK3res(
            nfs3.NFS3ERR_INVAL, resfail=nfs3.READLINK3resfail(post_op_attr_of(a, svc.fsid))
        ),
    )
