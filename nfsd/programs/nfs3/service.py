"""What every NFSv3 procedure shares: handles, attributes, failure bodies.

Design notes
------------
* Handles resolve to presented paths (``nfsd.programs.handles``); a bad one is
  ``NFS3ERR_BADHANDLE``, a stale one ``NFS3ERR_STALE``.
* Attributes come from the namespace already read-only; ``fsid`` is one
  constant for the whole export, so clients see one file system.
* Failure bodies: every ``XXX3resfail`` of RFC 1813 is a run of
  ``post_op_attr`` / ``wcc_data`` that may say "no attributes", so the
  failure body of a procedure is its status followed by that many zero
  words (:data:`FAIL_WORDS`).  Procedures that can do better (the
  read-only refusals, which return the object's attributes) build their
  own body and do not raise.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from merge.namespace import Attrs, Kind, Namespace, NamespaceError, PresentedPath
from nfsd.programs.buffers import BufferPool
from nfsd.programs.errors import NfsError, nfs_error
from nfsd.programs.handles import BadHandle, HandleCodec, StaleHandle
from nfsd.programs.listings import SortedListings
from nfsd.rpc import CallContext, Reply
from xdr import nfs3

FSID = 0x7265636F76657279  # "recovery": one file system for the whole export
RTMAX = 1024 * 1024
UDP_RTMAX = 32 * 1024
MAXFILESIZE = 2**63 - 1

_FTYPE = {Kind.REG: nfs3.NF3REG, Kind.DIR: nfs3.NF3DIR, Kind.LNK: nfs3.NF3LNK}

# Zero words after the status in each procedure's failure body (RFC 1813 §3.3).
FAIL_WORDS = {
    nfs3.NFSPROC3_GETATTR: 0,
    nfs3.NFSPROC3_SETATTR: 2,  # wcc_data obj_wcc
    nfs3.NFSPROC3_LOOKUP: 1,  # post_op_attr dir_attributes
    nfs3.NFSPROC3_ACCESS: 1,
    nfs3.NFSPROC3_READLINK: 1,
    nfs3.NFSPROC3_READ: 1,
    nfs3.NFSPROC3_WRITE: 2,
    nfs3.NFSPROC3_CREATE: 2,
    nfs3.NFSPROC3_MKDIR: 2,
    nfs3.NFSPROC3_SYMLINK: 2,
    nfs3.NFSPROC3_MKNOD: 2,
    nfs3.NFSPROC3_REMOVE: 2,
    nfs3.NFSPROC3_RMDIR: 2,
    nfs3.NFSPROC3_RENAME: 4,  # fromdir_wcc, todir_wcc
    nfs3.NFSPROC3_LINK: 3,  # post_op_attr file_attributes, wcc_data linkdir_wcc
    nfs3.NFSPROC3_READDIR: 1,
    nfs3.NFSPROC3_READDIRPLUS: 1,
    nfs3.NFSPROC3_FSSTAT: 1,
    nfs3.NFSPROC3_FSINFO: 1,
    nfs3.NFSPROC3_PATHCONF: 1,
    nfs3.NFSPROC3_COMMIT: 2,
}


def failure_body(proc: int) -> Callable[[int, Any], Reply]:
    """The failure-body writer of procedure ``proc``."""
    pad = b"\0\0\0\0" * FAIL_WORDS[proc]

    def fail(status: int, args: Any) -> Reply:
        return Reply([struct.pack(">I", status) + pad])

    return fail


def nfstime(ns: int) -> nfs3.nfstime3:
    return nfs3.nfstime3(ns // 1_000_000_000 & 0xFFFFFFFF, ns % 1_000_000_000)


def fsid_of(option: str | None) -> int:
    """The fattr3 ``fsid`` an export's ``fsid=`` option gives (None: :data:`FSID`).

    A number is used as it is; ``root`` is 0, as knfsd's; a UUID is folded
    to 64 bits.  Servers that share a storage behind a balancer give the
    same value, so a client sees one file system whichever answers.
    """
    if option is None:
        return FSID
    if option == "root":
        return 0
    if option.isdigit():
        return int(option)
    raw = bytes.fromhex(option.replace("-", ""))
    return int.from_bytes(raw[:8], "big") ^ int.from_bytes(raw[8:16], "big")


def fattr3_of(a: Attrs, fsid: int) -> nfs3.fattr3:
    """RFC 1813 §2.6 fattr3 of a presented entry."""
    return nfs3.fattr3(
        type=_FTYPE[a.kind],
        mode=a.mode,
        nlink=a.nlink,
        uid=a.uid,
        gid=a.gid,
        size=a.size,
        used=a.used,
        rdev=nfs3.specdata3(0, 0),
        fsid=fsid,
        fileid=a.fileid,
        atime=nfstime(a.atime_ns),
        mtime=nfstime(a.mtime_ns),
        ctime=nfstime(a.ctime_ns),
    )


NO_ATTR = nfs3.post_op_attr(False, None)


def post_op_attr_of(a: Attrs | None, fsid: int) -> nfs3.post_op_attr:
    return NO_ATTR if a is None else nfs3.post_op_attr(True, fattr3_of(a, fsid))


class Nfs3Service:
    """The state the NFSv3 procedures share."""

    def __init__(
        self, namespace: Namespace, handles: HandleCodec, buffers: BufferPool, secret: bytes
    ) -> None:
        self.namespace = namespace
        self.handles = handles
        self.buffers = buffers
        self.fsid = FSID  # the export's fsid= option may change it (nfsd.programs)
        self.listings = SortedListings()
        # Constant for this installation: a cookie this server issued is never refused.
        self.cookieverf = struct.pack(">Q", int.from_bytes(secret[:8], "big") | 1)

    def path_of(self, fh: nfs3.nfs_fh3) -> PresentedPath:
        """The presented path a handle names (BADHANDLE / STALE otherwise)."""
        try:
            return self.handles.resolve(fh.data)
        except BadHandle as e:
            raise NfsError(nfs3.NFS3ERR_BADHANDLE, str(e)) from None
        except StaleHandle as e:
            raise NfsError(nfs3.NFS3ERR_STALE, str(e)) from None

    def attrs(self, path: PresentedPath) -> Attrs:
        """Attributes of a path known from a handle: gone is STALE."""
        try:
            return self.namespace.getattr(path)
        except NamespaceError as e:
            raise stale_if_gone(e) from None

    def handle_of(self, path: PresentedPath, a: Attrs) -> nfs3.nfs_fh3:
        return nfs3.nfs_fh3(self.handles.encode(path, a.fileid))


MAY_READ, MAY_EXEC = 4, 1  # the permission bits ``may`` tests, as in a mode's rwx


def may(a: Attrs, ctx: CallContext, want: int, *, owner_override: bool = False) -> bool:
    """Whether the call's (squashed) credentials hold permission ``want`` on ``a``.

    The Unix rule knfsd applies: root reads anything and searches any
    folder; everyone else gets the owner, group or other bits of the mode.
    ``owner_override`` lets a file's owner READ it whatever its mode, as
    knfsd does (a client may have opened it before a chmod).
    """
    uid = ctx.uid
    if uid == 0:
        return want != MAY_EXEC or a.kind == Kind.DIR or bool(a.mode & 0o111)
    if uid == a.uid:
        if owner_override:
            return True
        bits = a.mode >> 6
    elif a.gid in ctx.gids:
        bits = a.mode >> 3
    else:
        bits = a.mode
    return bits & want == want


def stale_if_gone(e: NamespaceError) -> NfsError:
    """The error of an entry named by a handle: one that is gone is STALE, not NOENT."""
    err = nfs_error(e)
    if err.status in (nfs3.NFS3ERR_NOENT, nfs3.NFS3ERR_NOTDIR):
        err.status = nfs3.NFS3ERR_STALE
    return err


def decode_name(name: bytes) -> str:
    """A filename3 as the namespace spells it; refuse what no entry can be called."""
    if not name:
        raise NfsError(nfs3.NFS3ERR_NOENT, "empty name")
    if len(name) > nfs3.MAXNAMLEN:
        raise NfsError(nfs3.NFS3ERR_NAMETOOLONG, "name too long")
    if b"/" in name or b"\0" in name:
        raise NfsError(nfs3.NFS3ERR_NOENT, "name with a slash or NUL")
    return name.decode("utf-8", "surrogateescape")
