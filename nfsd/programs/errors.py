"""The one place where failures become NFS status codes.

Code below the dispatcher raises; the procedure table writes the status
and the procedure's failure body (``nfsd.programs.nfs3.common``).
"""

from __future__ import annotations

import errno

from instant.errors import (
    Exists,
    InvalidArgument,
    NameTooLong,
    NoSpace,
    NotEmpty,
    NotPermitted,
    NotSupported,
    NotSync,
    Stale,
    TooLarge,
)
from merge.namespace import (
    AccessDenied,
    InputChanged,
    IsADirectory,
    NamespaceError,
    NotADirectory,
    NotFound,
    StorageIOError,
)
from nfsd.rpc import ProcedureError
from xdr import nfs3


class NfsError(ProcedureError):
    """An NFSv3 procedure fails with ``status`` (an ``nfsstat3``)."""


_NAMESPACE_STATUS: dict[type[NamespaceError], int] = {
    NotFound: nfs3.NFS3ERR_NOENT,
    NotADirectory: nfs3.NFS3ERR_NOTDIR,
    IsADirectory: nfs3.NFS3ERR_ISDIR,
    AccessDenied: nfs3.NFS3ERR_ACCES,
    InputChanged: nfs3.NFS3ERR_IO,
    StorageIOError: nfs3.NFS3ERR_IO,
    # instant recovery's writable sessions (instant.errors)
    Exists: nfs3.NFS3ERR_EXIST,
    NotEmpty: nfs3.NFS3ERR_NOTEMPTY,
    NoSpace: nfs3.NFS3ERR_NOSPC,
    NotSupported: nfs3.NFS3ERR_NOTSUPP,
    InvalidArgument: nfs3.NFS3ERR_INVAL,
    NotSync: nfs3.NFS3ERR_NOT_SYNC,
    NameTooLong: nfs3.NFS3ERR_NAMETOOLONG,
    Stale: nfs3.NFS3ERR_STALE,
    TooLarge: nfs3.NFS3ERR_FBIG,
    NotPermitted: nfs3.NFS3ERR_PERM,  # knfsd's nfserrno: EPERM -> nfserr_perm
}

_ERRNO_STATUS = {
    errno.ENOENT: nfs3.NFS3ERR_NOENT,
    errno.ENOTDIR: nfs3.NFS3ERR_NOTDIR,
    errno.EISDIR: nfs3.NFS3ERR_ISDIR,
    errno.EACCES: nfs3.NFS3ERR_ACCES,
    errno.EPERM: nfs3.NFS3ERR_PERM,
    errno.ENAMETOOLONG: nfs3.NFS3ERR_NAMETOOLONG,
    errno.EROFS: nfs3.NFS3ERR_ROFS,
    errno.ESTALE: nfs3.NFS3ERR_STALE,
    errno.ENOSPC: nfs3.NFS3ERR_NOSPC,
    errno.EDQUOT: nfs3.NFS3ERR_DQUOT,
}


def status_of(exc: BaseException) -> int:
    """The nfsstat3 that answers ``exc``."""
    if isinstance(exc, ProcedureError):
        return exc.status
    for cls, status in _NAMESPACE_STATUS.items():
        if isinstance(exc, cls):
            return status
    if isinstance(exc, OSError) and exc.errno is not None:
        return _ERRNO_STATUS.get(exc.errno, nfs3.NFS3ERR_IO)
    return nfs3.NFS3ERR_SERVERFAULT


def nfs_error(exc: BaseException) -> NfsError:
    """Wrap any failure as the NfsError it is answered with."""
    return NfsError(status_of(exc), str(exc))
