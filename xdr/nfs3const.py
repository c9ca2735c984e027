"""NFS version 3's program number and status codes (RFC 1813) alone.

A module of its own so that a process that only registers NFS with the
portmapper or answers with a status (a supervisor: ``advertised_programs``,
the exports check of ``nfsd.programs.access``) does not import
:mod:`xdr.nfs3`, every type and procedure of NFS v3 (about 2.5 MB of a
process's memory).  :mod:`xdr.nfs3` re-exports every name.
"""

NFS_PROGRAM = 100003
NFS_V3 = 3

# enum nfsstat3
NFS3_OK = 0
NFS3ERR_PERM = 1
NFS3ERR_NOENT = 2
NFS3ERR_IO = 5
NFS3ERR_NXIO = 6
NFS3ERR_ACCES = 13
NFS3ERR_EXIST = 17
NFS3ERR_XDEV = 18
NFS3ERR_NODEV = 19
NFS3ERR_NOTDIR = 20
NFS3ERR_ISDIR = 21
NFS3ERR_INVAL = 22
NFS3ERR_FBIG = 27
NFS3ERR_NOSPC = 28
NFS3ERR_ROFS = 30
NFS3ERR_MLINK = 31
NFS3ERR_NAMETOOLONG = 63
NFS3ERR_NOTEMPTY = 66
NFS3ERR_DQUOT = 69
NFS3ERR_STALE = 70
NFS3ERR_REMOTE = 71
NFS3ERR_BADHANDLE = 10001
NFS3ERR_NOT_SYNC = 10002
NFS3ERR_BAD_COOKIE = 10003
NFS3ERR_NOTSUPP = 10004
NFS3ERR_TOOSMALL = 10005
NFS3ERR_SERVERFAULT = 10006
NFS3ERR_BADTYPE = 10007
NFS3ERR_JUKEBOX = 10008

NFSSTAT3 = frozenset(
    {
        NFS3_OK,
        NFS3ERR_PERM,
        NFS3ERR_NOENT,
        NFS3ERR_IO,
        NFS3ERR_NXIO,
        NFS3ERR_ACCES,
        NFS3ERR_EXIST,
        NFS3ERR_XDEV,
        NFS3ERR_NODEV,
        NFS3ERR_NOTDIR,
        NFS3ERR_ISDIR,
        NFS3ERR_INVAL,
        NFS3ERR_FBIG,
        NFS3ERR_NOSPC,
        NFS3ERR_ROFS,
        NFS3ERR_MLINK,
        NFS3ERR_NAMETOOLONG,
        NFS3ERR_NOTEMPTY,
        NFS3ERR_DQUOT,
        NFS3ERR_STALE,
        NFS3ERR_REMOTE,
        NFS3ERR_BADHANDLE,
        NFS3ERR_NOT_SYNC,
        NFS3ERR_BAD_COOKIE,
        NFS3ERR_NOTSUPP,
        NFS3ERR_TOOSMALL,
        NFS3ERR_SERVERFAULT,
        NFS3ERR_BADTYPE,
        NFS3ERR_JUKEBOX,
    }
)
"""Every nfsstat3 value."""
