"""The NFSv3 procedure table (RFC 1813 §3.3): every procedure, by number."""

from __future__ import annotations

from functools import partial

from nfsd.programs.nfs3 import attrs, fsinfo, read, readdir, readonly
from nfsd.programs.nfs3.service import Nfs3Service, failure_body
from nfsd.rpc import Procedure, Program, Reply, no_args
from xdr import nfs3
from xdr.base import XdrError
from xdr.nfs3 import NFS3Unpacker as U


def write_args(u: U) -> nfs3.WRITE3args:
    """WRITE3args whose ``count`` is its data's length (RFC 1813 §3.3.7: count is
    "the number of bytes of data to be written"), else undecodable: GARBAGE_ARGS,
    as knfsd's ``nfs3svc_decode_writeargs`` answers.  A client that says one
    length and sends another is broken; writing either would be a guess."""
    args = u.unpack_WRITE3args()
    if args.count != len(args.data):
        raise XdrError(f"WRITE count {args.count} is not its data's length {len(args.data)}")
    return args


def build(svc: Nfs3Service) -> Program:
    def proc(number: int, name: str, decode, run) -> tuple[int, Procedure]:
        return number, Procedure(name, decode, partial(run, svc), failure_body(number))

    table = dict(
        [
            (nfs3.NFSPROC3_NULL, Procedure("NULL", no_args, lambda ctx, a: Reply([]))),
            proc(nfs3.NFSPROC3_GETATTR, "GETATTR", U.unpack_GETATTR3args, attrs.getattr3),
            proc(nfs3.NFSPROC3_SETATTR, "SETATTR", U.unpack_SETATTR3args, readonly.setattr3),
            proc(nfs3.NFSPROC3_LOOKUP, "LOOKUP", U.unpack_LOOKUP3args, attrs.lookup3),
            proc(nfs3.NFSPROC3_ACCESS, "ACCESS", U.unpack_ACCESS3args, attrs.access3),
            proc(nfs3.NFSPROC3_READLINK, "READLINK", U.unpack_READLINK3args, attrs.readlink3),
            proc(nfs3.NFSPROC3_READ, "READ", U.unpack_READ3args, read.read3),
            proc(nfs3.NFSPROC3_WRITE, "WRITE", write_args, readonly.write3),
            proc(nfs3.NFSPROC3_CREATE, "CREATE", U.unpack_CREATE3args, readonly.create3),
            proc(nfs3.NFSPROC3_MKDIR, "MKDIR", U.unpack_MKDIR3args, readonly.mkdir3),
            proc(nfs3.NFSPROC3_SYMLINK, "SYMLINK", U.unpack_SYMLINK3args, readonly.symlink3),
            proc(nfs3.NFSPROC3_MKNOD, "MKNOD", U.unpack_MKNOD3args, readonly.mknod3),
            proc(nfs3.NFSPROC3_REMOVE, "REMOVE", U.unpack_REMOVE3args, readonly.remove3),
            proc(nfs3.NFSPROC3_RMDIR, "RMDIR", U.unpack_RMDIR3args, readonly.rmdir3),
            proc(nfs3.NFSPROC3_RENAME, "RENAME", U.unpack_RENAME3args, readonly.rename3),
            proc(nfs3.NFSPROC3_LINK, "LINK", U.unpack_LINK3args, readonly.link3),
            proc(
                nfs3.NFSPROC3_READDIR,
                "READDIR",
                U.unpack_READDIR3args,
                readdir.readdir3,
            ),
            proc(
                nfs3.NFSPROC3_READDIRPLUS,
                "READDIRPLUS",
                U.unpack_READDIRPLUS3args,
                readdir.readdirplus3,
            ),
            proc(nfs3.NFSPROC3_FSSTAT, "FSSTAT", U.unpack_FSSTAT3args, fsinfo.fsstat3),
            proc(nfs3.NFSPROC3_FSINFO, "FSINFO", U.unpack_FSINFO3args, fsinfo.fsinfo3),
            proc(nfs3.NFSPROC3_PATHCONF, "PATHCONF", U.unpack_PATHCONF3args, fsinfo.pathconf3),
            proc(nfs3.NFSPROC3_COMMIT, "COMMIT", U.unpack_COMMIT3args, readonly.commit3),
        ]
    )
    return Program(
        number=nfs3.NFS_PROGRAM,
        name="NFS",
        versions={3: table},
        unpacker=U,
        fault_status=nfs3.NFS3ERR_SERVERFAULT,
    )
