"""NFS version 3 (RFC 1813): every constant, type and procedure.

Conventions, as in :mod:`xdr.rpc`:

* a class per XDR type, named as in the RFC, its definition in the docstring;
* unions keep the RFC discriminant and one optional attribute per arm
  (``post_op_attr(attributes_follow, attributes)``); the procedure results
  are ``X3res(status, resok, resfail)``, or ``GETATTR3res(status, resok)``
  whose failure arm is void;
* XDR linked lists (``entry3 *nextentry``...) are Python lists of the items
  in a container named as in the RFC (``dirlist3.entries``);
* strings (filename3, nfspath3) stay ``bytes``: callers decode;
* ``from``, a Python keyword, is ``RENAME3args.from_``.

The unpacker is strict: every failure is :class:`~xdr.base.XdrError`, an enum
value the RFC does not list is refused, and the unbounded ``string``\\s of the
RFC are bounded (:data:`MAXNAMLEN`, :data:`MAXPATHLEN`).  The packer writes
the fixed parts of the frequent results (fattr3, wcc_attr, READ3resok...)
with one precompiled :class:`struct.Struct` each.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from xdr.base import Packer, Unpacker, XdrError
from xdr.nfs3const import *  # noqa: F403  (program number, enum nfsstat3: re-exported)
from xdr.nfs3const import NFS3_OK, NFSSTAT3

T = TypeVar("T")
OK = TypeVar("OK")
FAIL = TypeVar("FAIL")

NFS3_FHSIZE = 64
NFS3_COOKIEVERFSIZE = 8
NFS3_CREATEVERFSIZE = 8
NFS3_WRITEVERFSIZE = 8

# RFC 1813 leaves filename3 and nfspath3 unbounded; these bounds refuse
# hostile lengths (the server's PATHCONF3 name_max is MAXNAMLEN).
MAXNAMLEN = 255
MAXPATHLEN = 4096


# enum ftype3
NF3REG = 1
NF3DIR = 2
NF3BLK = 3
NF3CHR = 4
NF3LNK = 5
NF3SOCK = 6
NF3FIFO = 7

FTYPE3 = frozenset(range(NF3REG, NF3FIFO + 1))
"""Every ftype3 value."""

# ACCESS3args.access / ACCESS3resok.access bits
ACCESS3_READ = 0x0001
ACCESS3_LOOKUP = 0x0002
ACCESS3_MODIFY = 0x0004
ACCESS3_EXTEND = 0x0008
ACCESS3_DELETE = 0x0010
ACCESS3_EXECUTE = 0x0020

# FSINFO3resok.properties bits
FSF3_LINK = 0x0001
FSF3_SYMLINK = 0x0002
FSF3_HOMOGENEOUS = 0x0008
FSF3_CANSETTIME = 0x0010

# enum stable_how
UNSTABLE = 0
DATA_SYNC = 1
FILE_SYNC = 2

STABLE_HOW = frozenset({UNSTABLE, DATA_SYNC, FILE_SYNC})

# enum createmode3
UNCHECKED = 0
GUARDED = 1
EXCLUSIVE = 2

CREATEMODE3 = frozenset({UNCHECKED, GUARDED, EXCLUSIVE})

# enum time_how
DONT_CHANGE = 0
SET_TO_SERVER_TIME = 1
SET_TO_CLIENT_TIME = 2

TIME_HOW = frozenset({DONT_CHANGE, SET_TO_SERVER_TIME, SET_TO_CLIENT_TIME})

# program NFS_PROGRAM, version NFS_V3
NFSPROC3_NULL = 0
NFSPROC3_GETATTR = 1
NFSPROC3_SETATTR = 2
NFSPROC3_LOOKUP = 3
NFSPROC3_ACCESS = 4
NFSPROC3_READLINK = 5
NFSPROC3_READ = 6
NFSPROC3_WRITE = 7
NFSPROC3_CREATE = 8
NFSPROC3_MKDIR = 9
NFSPROC3_SYMLINK = 10
NFSPROC3_MKNOD = 11
NFSPROC3_REMOVE = 12
NFSPROC3_RMDIR = 13
NFSPROC3_RENAME = 14
NFSPROC3_LINK = 15
NFSPROC3_READDIR = 16
NFSPROC3_READDIRPLUS = 17
NFSPROC3_FSSTAT = 18
NFSPROC3_FSINFO = 19
NFSPROC3_PATHCONF = 20
NFSPROC3_COMMIT = 21


# --- Basic data types (RFC 1813 §2.5) ----------------------------------------


@dataclass(slots=True)
class specdata3:
    """struct specdata3 { uint32 specdata1; uint32 specdata2; };"""

    specdata1: int
    specdata2: int


@dataclass(slots=True)
class nfs_fh3:
    """struct nfs_fh3 { opaque data<NFS3_FHSIZE>; };"""

    data: bytes


@dataclass(slots=True)
class nfstime3:
    """struct nfstime3 { uint32 seconds; uint32 nseconds; };"""

    seconds: int
    nseconds: int


@dataclass(slots=True)
class fattr3:
    """struct fattr3 { ftype3 type; mode3 mode; uint32 nlink; uid3 uid; gid3 gid;
    size3 size; size3 used; specdata3 rdev; uint64 fsid; fileid3 fileid;
    nfstime3 atime; nfstime3 mtime; nfstime3 ctime; };"""

    type: int
    mode: int
    nlink: int
    uid: int
    gid: int
    size: int
    used: int
    rdev: specdata3
    fsid: int
    fileid: int
    atime: nfstime3
    mtime: nfstime3
    ctime: nfstime3


@dataclass(slots=True)
class post_op_attr:
    """union post_op_attr switch (bool attributes_follow) {
    case TRUE: fattr3 attributes; case FALSE: void; };"""

    attributes_follow: bool
    attributes: fattr3 | None = None


@dataclass(slots=True)
class wcc_attr:
    """struct wcc_attr { size3 size; nfstime3 mtime; nfstime3 ctime; };"""

    size: int
    mtime: nfstime3
    ctime: nfstime3


@dataclass(slots=True)
class pre_op_attr:
    """union pre_op_attr switch (bool attributes_follow) {
    case TRUE: wcc_attr attributes; case FALSE: void; };"""

    attributes_follow: bool
    attributes: wcc_attr | None = None


@dataclass(slots=True)
class wcc_data:
    """struct wcc_data { pre_op_attr before; post_op_attr after; };"""

    before: pre_op_attr
    after: post_op_attr


@dataclass(slots=True)
class post_op_fh3:
    """union post_op_fh3 switch (bool handle_follows) {
    case TRUE: nfs_fh3 handle; case FALSE: void; };"""

    handle_follows: bool
    handle: nfs_fh3 | None = None


@dataclass(slots=True)
class set_mode3:
    """union set_mode3 switch (bool set_it) { case TRUE: mode3 mode; default: void; };"""

    set_it: bool
    mode: int | None = None


@dataclass(slots=True)
class set_uid3:
    """union set_uid3 switch (bool set_it) { case TRUE: uid3 uid; default: void; };"""

    set_it: bool
    uid: int | None = None


@dataclass(slots=True)
class set_gid3:
    """union set_gid3 switch (bool set_it) { case TRUE: gid3 gid; default: void; };"""

    set_it: bool
    gid: int | None = None


@dataclass(slots=True)
class set_size3:
    """union set_size3 switch (bool set_it) { case TRUE: size3 size; default: void; };"""

    set_it: bool
    size: int | None = None


@dataclass(slots=True)
class set_atime:
    """union set_atime switch (time_how set_it) {
    case SET_TO_CLIENT_TIME: nfstime3 atime; default: void; };"""

    set_it: int
    atime: nfstime3 | None = None


@dataclass(slots=True)
class set_mtime:
    """union set_mtime switch (time_how set_it) {
    case SET_TO_CLIENT_TIME: nfstime3 mtime; default: void; };"""

    set_it: int
    mtime: nfstime3 | None = None


@dataclass(slots=True)
class sattr3:
    """struct sattr3 { set_mode3 mode; set_uid3 uid; set_gid3 gid;
    set_size3 size; set_atime atime; set_mtime mtime; };"""

    mode: set_mode3
    uid: set_uid3
    gid: set_gid3
    size: set_size3
    atime: set_atime
    mtime: set_mtime


@dataclass(slots=True)
class diropargs3:
    """struct diropargs3 { nfs_fh3 dir; filename3 name; };"""

    dir: nfs_fh3
    name: bytes


# --- Procedure results: the union every procedure but GETATTR shares ----------


@dataclass(slots=True)
class _nfs3res(Generic[OK, FAIL]):
    """union X3res switch (nfsstat3 status) {
    case NFS3_OK: X3resok resok; default: X3resfail resfail; };"""

    status: int
    resok: OK | None = None
    resfail: FAIL | None = None


R = TypeVar("R", bound=_nfs3res[Any, Any])


@dataclass(slots=True)
class _created:
    """The result of the procedures that create an object."""

    obj: post_op_fh3
    obj_attributes: post_op_attr
    dir_wcc: wcc_data


C = TypeVar("C", bound=_created)


# --- GETATTR (1) ----------------------------------------------------------


@dataclass(slots=True)
class GETATTR3args:
    """struct GETATTR3args { nfs_fh3 object; };"""

    object: nfs_fh3


@dataclass(slots=True)
class GETATTR3resok:
    """struct GETATTR3resok { fattr3 obj_attributes; };"""

    obj_attributes: fattr3


@dataclass(slots=True)
class GETATTR3res:
    """union GETATTR3res switch (nfsstat3 status) {
    case NFS3_OK: GETATTR3resok resok; default: void; };"""

    status: int
    resok: GETATTR3resok | None = None


# --- SETATTR (2) ----------------------------------------------------------


@dataclass(slots=True)
class sattrguard3:
    """union sattrguard3 switch (bool check) {
    case TRUE: nfstime3 obj_ctime; case FALSE: void; };"""

    check: bool
    obj_ctime: nfstime3 | None = None


@dataclass(slots=True)
class SETATTR3args:
    """struct SETATTR3args { nfs_fh3 object; sattr3 new_attributes; sattrguard3 guard; };"""

    object: nfs_fh3
    new_attributes: sattr3
    guard: sattrguard3


@dataclass(slots=True)
class SETATTR3resok:
    """struct SETATTR3resok { wcc_data obj_wcc; };"""

    obj_wcc: wcc_data


@dataclass(slots=True)
class SETATTR3resfail:
    """struct SETATTR3resfail { wcc_data obj_wcc; };"""

    obj_wcc: wcc_data


class SETATTR3res(_nfs3res[SETATTR3resok, SETATTR3resfail]):
    """union SETATTR3res switch (nfsstat3 status) {
    case NFS3_OK: SETATTR3resok resok; default: SETATTR3resfail resfail; };"""

    __slots__ = ()


# --- LOOKUP (3) -----------------------------------------------------------


@dataclass(slots=True)
class LOOKUP3args:
    """struct LOOKUP3args { diropargs3 what; };"""

    what: diropargs3


@dataclass(slots=True)
class LOOKUP3resok:
    """struct LOOKUP3resok { nfs_fh3 object; post_op_attr obj_attributes;
    post_op_attr dir_attributes; };"""

    object: nfs_fh3
    obj_attributes: post_op_attr
    dir_attributes: post_op_attr


@dataclass(slots=True)
class LOOKUP3resfail:
    """struct LOOKUP3resfail { post_op_attr dir_attributes; };"""

    dir_attributes: post_op_attr


class LOOKUP3res(_nfs3res[LOOKUP3resok, LOOKUP3resfail]):
    """union LOOKUP3res switch (nfsstat3 status) {
    case NFS3_OK: LOOKUP3resok resok; default: LOOKUP3resfail resfail; };"""

    __slots__ = ()


# --- ACCESS (4) -----------------------------------------------------------


@dataclass(slots=True)
class ACCESS3args:
    """struct ACCESS3args { nfs_fh3 object; uint32 access; };"""

    object: nfs_fh3
    access: int


@dataclass(slots=True)
class ACCESS3resok:
    """struct ACCESS3resok { post_op_attr obj_attributes; uint32 access; };"""

    obj_attributes: post_op_attr
    access: int


@dataclass(slots=True)
class ACCESS3resfail:
    """struct ACCESS3resfail { post_op_attr obj_attributes; };"""

    obj_attributes: post_op_attr


class ACCESS3res(_nfs3res[ACCESS3resok, ACCESS3resfail]):
    """union ACCESS3res switch (nfsstat3 status) {
    case NFS3_OK: ACCESS3resok resok; default: ACCESS3resfail resfail; };"""

    __slots__ = ()


# --- READLINK (5) ---------------------------------------------------------


@dataclass(slots=True)
class READLINK3args:
    """struct READLINK3args { nfs_fh3 symlink; };"""

    symlink: nfs_fh3


@dataclass(slots=True)
class READLINK3resok:
    """struct READLINK3resok { post_op_attr symlink_attributes; nfspath3 data; };"""

    symlink_attributes: post_op_attr
    data: bytes


@dataclass(slots=True)
class READLINK3resfail:
    """struct READLINK3resfail { post_op_attr symlink_attributes; };"""

    symlink_attributes: post_op_attr


class READLINK3res(_nfs3res[READLINK3resok, READLINK3resfail]):
    """union READLINK3res switch (nfsstat3 status) {
    case NFS3_OK: READLINK3resok resok; default: READLINK3resfail resfail; };"""

    __slots__ = ()


# --- READ (6) -------------------------------------------------------------


@dataclass(slots=True)
class READ3args:
    """struct READ3args { nfs_fh3 file; offset3 offset; count3 count; };"""

    file: nfs_fh3
    offset: int
    count: int


@dataclass(slots=True)
class READ3resok:
    """struct READ3resok { post_op_attr file_attributes; count3 count; bool eof;
    opaque data<>; };"""

    file_attributes: post_op_attr
    count: int
    eof: bool
    data: bytes


@dataclass(slots=True)
class READ3resfail:
    """struct READ3resfail { post_op_attr file_attributes; };"""

    file_attributes: post_op_attr


class READ3res(_nfs3res[READ3resok, READ3resfail]):
    """union READ3res switch (nfsstat3 status) {
    case NFS3_OK: READ3resok resok; default: READ3resfail resfail; };"""

    __slots__ = ()


# --- WRITE (7) ------------------------------------------------------------


@dataclass(slots=True)
class WRITE3args:
    """struct WRITE3args { nfs_fh3 file; offset3 offset; count3 count;
    stable_how stable; opaque data<>; };"""

    file: nfs_fh3
    offset: int
    count: int
    stable: int
    data: bytes | memoryview  # a view of the call record when decoded by the server


@dataclass(slots=True)
class WRITE3resok:
    """struct WRITE3resok { wcc_data file_wcc; count3 count; stable_how committed;
    writeverf3 verf; };"""

    file_wcc: wcc_data
    count: int
    committed: int
    verf: bytes


@dataclass(slots=True)
class WRITE3resfail:
    """struct WRITE3resfail { wcc_data file_wcc; };"""

    file_wcc: wcc_data


class WRITE3res(_nfs3res[WRITE3resok, WRITE3resfail]):
    """union WRITE3res switch (nfsstat3 status) {
    case NFS3_OK: WRITE3resok resok; default: WRITE3resfail resfail; };"""

    __slots__ = ()


# --- CREATE (8) -----------------------------------------------------------


@dataclass(slots=True)
class createhow3:
    """union createhow3 switch (createmode3 mode) {
    case UNCHECKED: case GUARDED: sattr3 obj_attributes;
    case EXCLUSIVE: createverf3 verf; };"""

    mode: int
    obj_attributes: sattr3 | None = None
    verf: bytes | None = None


@dataclass(slots=True)
class CREATE3args:
    """struct CREATE3args { diropargs3 where; createhow3 how; };"""

    where: diropargs3
    how: createhow3


class CREATE3resok(_created):
    """struct CREATE3resok { post_op_fh3 obj; post_op_attr obj_attributes;
    wcc_data dir_wcc; };"""

    __slots__ = ()


@dataclass(slots=True)
class CREATE3resfail:
    """struct CREATE3resfail { wcc_data dir_wcc; };"""

    dir_wcc: wcc_data


class CREATE3res(_nfs3res[CREATE3resok, CREATE3resfail]):
    """union CREATE3res switch (nfsstat3 status) {
    case NFS3_OK: CREATE3resok resok; default: CREATE3resfail resfail; };"""

    __slots__ = ()


# --- MKDIR (9) ------------------------------------------------------------


@dataclass(slots=True)
class MKDIR3args:
    """struct MKDIR3args { diropargs3 where; sattr3 attributes; };"""

    where: diropargs3
    attributes: sattr3


class MKDIR3resok(_created):
    """struct MKDIR3resok { post_op_fh3 obj; post_op_attr obj_attributes;
    wcc_data dir_wcc; };"""

    __slots__ = ()


@dataclass(slots=True)
class MKDIR3resfail:
    """struct MKDIR3resfail { wcc_data dir_wcc; };"""

    dir_wcc: wcc_data


class MKDIR3res(_nfs3res[MKDIR3resok, MKDIR3resfail]):
    """union MKDIR3res switch (nfsstat3 status) {
    case NFS3_OK: MKDIR3resok resok; default: MKDIR3resfail resfail; };"""

    __slots__ = ()


# --- SYMLINK (10) ---------------------------------------------------------


@dataclass(slots=True)
class symlinkdata3:
    """struct symlinkdata3 { sattr3 symlink_attributes; nfspath3 symlink_data; };"""

    symlink_attributes: sattr3
    symlink_data: bytes


@dataclass(slots=True)
class SYMLINK3args:
    """struct SYMLINK3args { diropargs3 where; symlinkdata3 symlink; };"""

    where: diropargs3
    symlink: symlinkdata3


class SYMLINK3resok(_created):
    """struct SYMLINK3resok { post_op_fh3 obj; post_op_attr obj_attributes;
    wcc_data dir_wcc; };"""

    __slots__ = ()


@dataclass(slots=True)
class SYMLINK3resfail:
    """struct SYMLINK3resfail { wcc_data dir_wcc; };"""

    dir_wcc: wcc_data


class SYMLINK3res(_nfs3res[SYMLINK3resok, SYMLINK3resfail]):
    """union SYMLINK3res switch (nfsstat3 status) {
    case NFS3_OK: SYMLINK3resok resok; default: SYMLINK3resfail resfail; };"""

    __slots__ = ()


# --- MKNOD (11) -----------------------------------------------------------


@dataclass(slots=True)
class devicedata3:
    """struct devicedata3 { sattr3 dev_attributes; specdata3 spec; };"""

    dev_attributes: sattr3
    spec: specdata3


@dataclass(slots=True)
class mknoddata3:
    """union mknoddata3 switch (ftype3 type) {
    case NF3CHR: case NF3BLK: devicedata3 device;
    case NF3SOCK: case NF3FIFO: sattr3 pipe_attributes;
    default: void; };"""

    type: int
    device: devicedata3 | None = None
    pipe_attributes: sattr3 | None = None


@dataclass(slots=True)
class MKNOD3args:
    """struct MKNOD3args { diropargs3 where; mknoddata3 what; };"""

    where: diropargs3
    what: mknoddata3


class MKNOD3resok(_created):
    """struct MKNOD3resok { post_op_fh3 obj; post_op_attr obj_attributes;
    wcc_data dir_wcc; };"""

    __slots__ = ()


@dataclass(slots=True)
class MKNOD3resfail:
    """struct MKNOD3resfail { wcc_data dir_wcc; };"""

    dir_wcc: wcc_data


class MKNOD3res(_nfs3res[MKNOD3resok, MKNOD3resfail]):
    """union MKNOD3res switch (nfsstat3 status) {
    case NFS3_OK: MKNOD3resok resok; default: MKNOD3resfail resfail; };"""

    __slots__ = ()


# --- REMOVE (12) ----------------------------------------------------------


@dataclass(slots=True)
class REMOVE3args:
    """struct REMOVE3args { diropargs3 object; };"""

    object: diropargs3


@dataclass(slots=True)
class REMOVE3resok:
    """struct REMOVE3resok { wcc_data dir_wcc; };"""

    dir_wcc: wcc_data


@dataclass(slots=True)
class REMOVE3resfail:
    """struct REMOVE3resfail { wcc_data dir_wcc; };"""

    dir_wcc: wcc_data


class REMOVE3res(_nfs3res[REMOVE3resok, REMOVE3resfail]):
    """union REMOVE3res switch (nfsstat3 status) {
    case NFS3_OK: REMOVE3resok resok; default: REMOVE3resfail resfail; };"""

    __slots__ = ()


# --- RMDIR (13) -----------------------------------------------------------


@dataclass(slots=True)
class RMDIR3args:
    """struct RMDIR3args { diropargs3 object; };"""

    object: diropargs3


@dataclass(slots=True)
class RMDIR3resok:
    """struct RMDIR3resok { wcc_data dir_wcc; };"""

    dir_wcc: wcc_data


@dataclass(slots=True)
class RMDIR3resfail:
    """struct RMDIR3resfail { wcc_data dir_wcc; };"""

    dir_wcc: wcc_data


class RMDIR3res(_nfs3res[RMDIR3resok, RMDIR3resfail]):
    """union RMDIR3res switch (nfsstat3 status) {
    case NFS3_OK: RMDIR3resok resok; default: RMDIR3resfail resfail; };"""

    __slots__ = ()


# --- RENAME (14) ----------------------------------------------------------


@dataclass(slots=True)
class RENAME3args:
    """struct RENAME3args { diropargs3 from; diropargs3 to; };

    ``from`` is a Python keyword: the attribute is ``from_``.
    """

    from_: diropargs3
    to: diropargs3


@dataclass(slots=True)
class RENAME3resok:
    """struct RENAME3resok { wcc_data fromdir_wcc; wcc_data todir_wcc; };"""

    fromdir_wcc: wcc_data
    todir_wcc: wcc_data


@dataclass(slots=True)
class RENAME3resfail:
    """struct RENAME3resfail { wcc_data fromdir_wcc; wcc_data todir_wcc; };"""

    fromdir_wcc: wcc_data
    todir_wcc: wcc_data


class RENAME3res(_nfs3res[RENAME3resok, RENAME3resfail]):
    """union RENAME3res switch (nfsstat3 status) {
    case NFS3_OK: RENAME3resok resok; default: RENAME3resfail resfail; };"""

    __slots__ = ()


# --- LINK (15) ------------------------------------------------------------


@dataclass(slots=True)
class LINK3args:
    """struct LINK3args { nfs_fh3 file; diropargs3 link; };"""

    file: nfs_fh3
    link: diropargs3


@dataclass(slots=True)
class LINK3resok:
    """struct LINK3resok { post_op_attr file_attributes; wcc_data linkdir_wcc; };"""

    file_attributes: post_op_attr
    linkdir_wcc: wcc_data


@dataclass(slots=True)
class LINK3resfail:
    """struct LINK3resfail { post_op_attr file_attributes; wcc_data linkdir_wcc; };"""

    file_attributes: post_op_attr
    linkdir_wcc: wcc_data


class LINK3res(_nfs3res[LINK3resok, LINK3resfail]):
    """union LINK3res switch (nfsstat3 status) {
    case NFS3_OK: LINK3resok resok; default: LINK3resfail resfail; };"""

    __slots__ = ()


# --- READDIR (16) ---------------------------------------------------------


@dataclass(slots=True)
class READDIR3args:
    """struct READDIR3args { nfs_fh3 dir; cookie3 cookie; cookieverf3 cookieverf;
    count3 count; };"""

    dir: nfs_fh3
    cookie: int
    cookieverf: bytes
    count: int


@dataclass(slots=True)
class entry3:
    """struct entry3 { fileid3 fileid; filename3 name; cookie3 cookie;
    entry3 *nextentry; };  (``nextentry``: see :class:`dirlist3`)"""

    fileid: int
    name: bytes
    cookie: int


@dataclass(slots=True)
class dirlist3:
    """struct dirlist3 { entry3 *entries; bool eof; };

    ``entries`` is the chain of entry3 as a Python list.
    """

    entries: list[entry3]
    eof: bool


@dataclass(slots=True)
class READDIR3resok:
    """struct READDIR3resok { post_op_attr dir_attributes; cookieverf3 cookieverf;
    dirlist3 reply; };"""

    dir_attributes: post_op_attr
    cookieverf: bytes
    reply: dirlist3


@dataclass(slots=True)
class READDIR3resfail:
    """struct READDIR3resfail { post_op_attr dir_attributes; };"""

    dir_attributes: post_op_attr


class READDIR3res(_nfs3res[READDIR3resok, READDIR3resfail]):
    """union READDIR3res switch (nfsstat3 status) {
    case NFS3_OK: READDIR3resok resok; default: READDIR3resfail resfail; };"""

    __slots__ = ()


# --- READDIRPLUS (17) -----------------------------------------------------


@dataclass(slots=True)
class READDIRPLUS3args:
    """struct READDIRPLUS3args { nfs_fh3 dir; cookie3 cookie; cookieverf3 cookieverf;
    count3 dircount; count3 maxcount; };"""

    dir: nfs_fh3
    cookie: int
    cookieverf: bytes
    dircount: int
    maxcount: int


@dataclass(slots=True)
class entryplus3:
    """struct entryplus3 { fileid3 fileid; filename3 name; cookie3 cookie;
    post_op_attr name_attributes; post_op_fh3 name_handle; entryplus3 *nextentry; };
    (``nextentry``: see :class:`dirlistplus3`)"""

    fileid: int
    name: bytes
    cookie: int
    name_attributes: post_op_attr
    name_handle: post_op_fh3


@dataclass(slots=True)
class dirlistplus3:
    """struct dirlistplus3 { entryplus3 *entries; bool eof; };

    ``entries`` is the chain of entryplus3 as a Python list.
    """

    entries: list[entryplus3]
    eof: bool


@dataclass(slots=True)
class READDIRPLUS3resok:
    """struct READDIRPLUS3resok { post_op_attr dir_attributes; cookieverf3 cookieverf;
    dirlistplus3 reply; };"""

    dir_attributes: post_op_attr
    cookieverf: bytes
    reply: dirlistplus3


@dataclass(slots=True)
class READDIRPLUS3resfail:
    """struct READDIRPLUS3resfail { post_op_attr dir_attributes; };"""

    dir_attributes: post_op_attr


class READDIRPLUS3res(_nfs3res[READDIRPLUS3resok, READDIRPLUS3resfail]):
    """union READDIRPLUS3res switch (nfsstat3 status) {
    case NFS3_OK: READDIRPLUS3resok resok; default: READDIRPLUS3resfail resfail; };"""

    __slots__ = ()


# --- FSSTAT (18) ----------------------------------------------------------


@dataclass(slots=True)
class FSSTAT3args:
    """struct FSSTAT3args { nfs_fh3 fsroot; };"""

    fsroot: nfs_fh3


@dataclass(slots=True)
class FSSTAT3resok:
    """struct FSSTAT3resok { post_op_attr obj_attributes; size3 tbytes; size3 fbytes;
    size3 abytes; size3 tfiles; size3 ffiles; size3 afiles; uint32 invarsec; };"""

    obj_attributes: post_op_attr
    tbytes: int
    fbytes: int
    abytes: int
    tfiles: int
    ffiles: int
    afiles: int
    invarsec: int


@dataclass(slots=True)
class FSSTAT3resfail:
    """struct FSSTAT3resfail { post_op_attr obj_attributes; };"""

    obj_attributes: post_op_attr


class FSSTAT3res(_nfs3res[FSSTAT3resok, FSSTAT3resfail]):
    """union FSSTAT3res switch (nfsstat3 status) {
    case NFS3_OK: FSSTAT3resok resok; default: FSSTAT3resfail resfail; };"""

    __slots__ = ()


# --- FSINFO (19) ----------------------------------------------------------


@dataclass(slots=True)
class FSINFO3args:
    """struct FSINFO3args { nfs_fh3 fsroot; };"""

    fsroot: nfs_fh3


@dataclass(slots=True)
class FSINFO3resok:
    """struct FSINFO3resok { post_op_attr obj_attributes; uint32 rtmax; uint32 rtpref;
    uint32 rtmult; uint32 wtmax; uint32 wtpref; uint32 wtmult; uint32 dtpref;
    size3 maxfilesize; nfstime3 time_delta; uint32 properties; };"""

    obj_attributes: post_op_attr
    rtmax: int
    rtpref: int
    rtmult: int
    wtmax: int
    wtpref: int
    wtmult: int
    dtpref: int
    maxfilesize: int
    time_delta: nfstime3
    properties: int


@dataclass(slots=True)
class FSINFO3resfail:
    """struct FSINFO3resfail { post_op_attr obj_attributes; };"""

    obj_attributes: post_op_attr


class FSINFO3res(_nfs3res[FSINFO3resok, FSINFO3resfail]):
    """union FSINFO3res switch (nfsstat3 status) {
    case NFS3_OK: FSINFO3resok resok; default: FSINFO3resfail resfail; };"""

    __slots__ = ()


# --- PATHCONF (20) --------------------------------------------------------


@dataclass(slots=True)
class PATHCONF3args:
    """struct PATHCONF3args { nfs_fh3 object; };"""

    object: nfs_fh3


@dataclass(slots=True)
class PATHCONF3resok:
    """struct PATHCONF3resok { post_op_attr obj_attributes; uint32 linkmax;
    uint32 name_max; bool no_trunc; bool chown_restricted; bool case_insensitive;
    bool case_preserving; };"""

    obj_attributes: post_op_attr
    linkmax: int
    name_max: int
    no_trunc: bool
    chown_restricted: bool
    case_insensitive: bool
    case_preserving: bool


@dataclass(slots=True)
class PATHCONF3resfail:
    """struct PATHCONF3resfail { post_op_attr obj_attributes; };"""

    obj_attributes: post_op_attr


class PATHCONF3res(_nfs3res[PATHCONF3resok, PATHCONF3resfail]):
    """union PATHCONF3res switch (nfsstat3 status) {
    case NFS3_OK: PATHCONF3resok resok; default: PATHCONF3resfail resfail; };"""

    __slots__ = ()


# --- COMMIT (21) ----------------------------------------------------------


@dataclass(slots=True)
class COMMIT3args:
    """struct COMMIT3args { nfs_fh3 file; offset3 offset; count3 count; };"""

    file: nfs_fh3
    offset: int
    count: int


@dataclass(slots=True)
class COMMIT3resok:
    """struct COMMIT3resok { wcc_data file_wcc; writeverf3 verf; };"""

    file_wcc: wcc_data
    verf: bytes


@dataclass(slots=True)
class COMMIT3resfail:
    """struct COMMIT3resfail { wcc_data file_wcc; };"""

    file_wcc: wcc_data


class COMMIT3res(_nfs3res[COMMIT3resok, COMMIT3resfail]):
    """union COMMIT3res switch (nfsstat3 status) {
    case NFS3_OK: COMMIT3resok resok; default: COMMIT3resfail resfail; };"""

    __slots__ = ()


# --- Wire layouts of the fixed-size parts -----------------------------------

_FATTR3 = struct.Struct(">5I2Q2I2Q6I")  # 84 bytes
_WCC_ATTR = struct.Struct(">Q4I")  # 24 bytes
_UINT32 = struct.Struct(">I")
_UINT64 = struct.Struct(">Q")
_UINT64_UINT32 = struct.Struct(">QI")  # offset3 + count3
_UINT32_PAIR = struct.Struct(">II")  # specdata3, nfstime3, count3 + bool...
_FSSTAT3 = struct.Struct(">6QI")
_FSINFO3 = struct.Struct(">7IQ3I")
_PATHCONF3 = struct.Struct(">6I")
_TRUE = b"\0\0\0\1"
_FALSE = b"\0\0\0\0"


def _arm(value: T | None, union: str) -> T:
    """The value of the arm a union's discriminant selects, which must be there."""
    if value is None:
        raise XdrError(f"{union}: the discriminant selects an arm that is None")
    return value


def _fattr3_bytes(a: fattr3) -> bytes:
    rdev, atime, mtime, ctime = a.rdev, a.atime, a.mtime, a.ctime
    try:
        return _FATTR3.pack(
            a.type,
            a.mode,
            a.nlink,
            a.uid,
            a.gid,
            a.size,
            a.used,
            rdev.specdata1,
            rdev.specdata2,
            a.fsid,
            a.fileid,
            atime.seconds,
            atime.nseconds,
            mtime.seconds,
            mtime.nseconds,
            ctime.seconds,
            ctime.nseconds,
        )
    except struct.error as e:
        raise XdrError(f"fattr3: {e}") from None


_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")


def _opaque_bytes(data: bytes, maxlen: int) -> bytes:
    """``opaque<maxlen>`` in XDR form: length, data, padding."""
    size = len(data)
    if size > maxlen:
        raise XdrError(f"opaque of {size} bytes exceeds {maxlen}")
    return _UINT32.pack(size) + data + _PAD[size & 3]


def _post_op_attr_bytes(a: post_op_attr) -> bytes:
    if a.attributes_follow:
        return _TRUE + _fattr3_bytes(_arm(a.attributes, "post_op_attr"))
    return _FALSE


def _post_op_fh3_bytes(p: post_op_fh3) -> bytes:
    if p.handle_follows:
        return _TRUE + _opaque_bytes(_arm(p.handle, "post_op_fh3").data, NFS3_FHSIZE)
    return _FALSE


def _entry_bytes(fileid: int, name: bytes, cookie: int) -> bytes:
    """The fileid, name and cookie that entry3 and entryplus3 start with."""
    try:
        head, tail = _UINT64.pack(fileid), _UINT64.pack(cookie)
    except struct.error as e:
        raise XdrError(f"entry3: {e}") from None
    return head + _opaque_bytes(name, MAXNAMLEN) + tail


def entry3_bytes(e: entry3) -> bytes:
    """One ``entry3`` of a dirlist3 chain, with the TRUE that announces it.

    For servers that keep encoded entries and join them into a reply.
    """
    return _TRUE + _entry_bytes(e.fileid, e.name, e.cookie)


def entryplus3_bytes(e: entryplus3) -> bytes:
    """One ``entryplus3`` of a dirlistplus3 chain, with the TRUE that announces it."""
    return (
        _TRUE
        + _entry_bytes(e.fileid, e.name, e.cookie)
        + _post_op_attr_bytes(e.name_attributes)
        + _post_op_fh3_bytes(e.name_handle)
    )


def dirlist_end_bytes(eof: bool) -> bytes:
    """The FALSE that ends an entry chain, then ``eof``."""
    return _FALSE + (_TRUE if eof else _FALSE)


def _pack_struct(s: struct.Struct, *values: int) -> bytes:
    """Fixed fields in XDR form; an out-of-range value is an XdrError."""
    try:
        return s.pack(*values)
    except struct.error as e:
        raise XdrError(str(e)) from None


class NFS3Packer(Packer):
    """Packs NFSv3 arguments (a client's side) and results (the server's side)."""

    # -- basic data types --

    def pack_uint32(self, x: int) -> None:
        self.pack_uint(x)

    def pack_uint64(self, x: int) -> None:
        self.pack_raw(_pack_struct(_UINT64, x))

    pack_int32 = Packer.pack_int
    pack_int64 = Packer.pack_hyper
    pack_uid3 = pack_gid3 = pack_mode3 = pack_count3 = pack_uint32
    pack_fileid3 = pack_cookie3 = pack_size3 = pack_offset3 = pack_uint64
    pack_nfsstat3 = pack_ftype3 = pack_stable_how = Packer.pack_enum
    pack_createmode3 = pack_time_how = Packer.pack_enum

    def pack_filename3(self, name: bytes) -> None:
        """typedef string filename3<>; (at most MAXNAMLEN bytes here)"""
        self.pack_opaque_max(name, MAXNAMLEN)

    def pack_nfspath3(self, path: bytes) -> None:
        """typedef string nfspath3<>; (at most MAXPATHLEN bytes here)"""
        self.pack_opaque_max(path, MAXPATHLEN)

    def pack_cookieverf3(self, verf: bytes) -> None:
        """typedef opaque cookieverf3[NFS3_COOKIEVERFSIZE]; (and createverf3, writeverf3)"""
        if len(verf) != 8:
            raise XdrError(f"verifier of {len(verf)} bytes, not 8")
        self.pack_raw(verf)

    pack_createverf3 = pack_writeverf3 = pack_cookieverf3

    def pack_specdata3(self, s: specdata3) -> None:
        self.pack_raw(_pack_struct(_UINT32_PAIR, s.specdata1, s.specdata2))

    def pack_nfs_fh3(self, fh: nfs_fh3) -> None:
        self.pack_raw(_opaque_bytes(fh.data, NFS3_FHSIZE))

    def pack_nfstime3(self, t: nfstime3) -> None:
        self.pack_raw(_pack_struct(_UINT32_PAIR, t.seconds, t.nseconds))

    def pack_fattr3(self, a: fattr3) -> None:
        self.pack_raw(_fattr3_bytes(a))

    def pack_post_op_attr(self, a: post_op_attr) -> None:
        self.pack_raw(_post_op_attr_bytes(a))

    def pack_wcc_attr(self, a: wcc_attr) -> None:
        m, c = a.mtime, a.ctime
        self.pack_raw(_pack_struct(_WCC_ATTR, a.size, m.seconds, m.nseconds, c.seconds, c.nseconds))

    def pack_pre_op_attr(self, a: pre_op_attr) -> None:
        if a.attributes_follow:
            self.pack_bool(True)
            self.pack_wcc_attr(_arm(a.attributes, "pre_op_attr"))
        else:
            self.pack_bool(False)

    def pack_wcc_data(self, w: wcc_data) -> None:
        self.pack_pre_op_attr(w.before)
        self.pack_post_op_attr(w.after)

    def pack_post_op_fh3(self, p: post_op_fh3) -> None:
        self.pack_raw(_post_op_fh3_bytes(p))

    def _pack_set(self, set_it: bool, value: int | None, pack: Callable[[int], None]) -> None:
        if set_it:
            self.pack_bool(True)
            pack(_arm(value, "set_*3"))
        else:
            self.pack_bool(False)

    def pack_set_mode3(self, s: set_mode3) -> None:
        self._pack_set(s.set_it, s.mode, self.pack_uint)

    def pack_set_uid3(self, s: set_uid3) -> None:
        self._pack_set(s.set_it, s.uid, self.pack_uint)

    def pack_set_gid3(self, s: set_gid3) -> None:
        self._pack_set(s.set_it, s.gid, self.pack_uint)

    def pack_set_size3(self, s: set_size3) -> None:
        self._pack_set(s.set_it, s.size, self.pack_uint64)

    def _pack_set_time(self, set_it: int, t: nfstime3 | None) -> None:
        self.pack_enum(set_it)
        if set_it == SET_TO_CLIENT_TIME:
            self.pack_nfstime3(_arm(t, "set_atime/set_mtime"))

    def pack_set_atime(self, s: set_atime) -> None:
        self._pack_set_time(s.set_it, s.atime)

    def pack_set_mtime(self, s: set_mtime) -> None:
        self._pack_set_time(s.set_it, s.mtime)

    def pack_sattr3(self, s: sattr3) -> None:
        self.pack_set_mode3(s.mode)
        self.pack_set_uid3(s.uid)
        self.pack_set_gid3(s.gid)
        self.pack_set_size3(s.size)
        self.pack_set_atime(s.atime)
        self.pack_set_mtime(s.mtime)

    def pack_diropargs3(self, d: diropargs3) -> None:
        self.pack_raw(_opaque_bytes(d.dir.data, NFS3_FHSIZE) + _opaque_bytes(d.name, MAXNAMLEN))

    def _pack_res(
        self,
        res: _nfs3res[OK, FAIL],
        pack_resok: Callable[[OK], None],
        pack_resfail: Callable[[FAIL], None],
    ) -> None:
        status = res.status
        self.pack_enum(status)
        if status == NFS3_OK:
            pack_resok(_arm(res.resok, "resok"))
        else:
            pack_resfail(_arm(res.resfail, "resfail"))

    def _pack_created(self, r: _created) -> None:
        self.pack_post_op_fh3(r.obj)
        self.pack_post_op_attr(r.obj_attributes)
        self.pack_wcc_data(r.dir_wcc)

    # -- GETATTR --

    def pack_GETATTR3args(self, a: GETATTR3args) -> None:
        self.pack_nfs_fh3(a.object)

    def pack_GETATTR3resok(self, r: GETATTR3resok) -> None:
        self.pack_raw(_fattr3_bytes(r.obj_attributes))

    def pack_GETATTR3res(self, r: GETATTR3res) -> None:
        self.pack_enum(r.status)
        if r.status == NFS3_OK:
            self.pack_GETATTR3resok(_arm(r.resok, "GETATTR3res"))

    # -- SETATTR --

    def pack_sattrguard3(self, g: sattrguard3) -> None:
        if g.check:
            self.pack_bool(True)
            self.pack_nfstime3(_arm(g.obj_ctime, "sattrguard3"))
        else:
            self.pack_bool(False)

    def pack_SETATTR3args(self, a: SETATTR3args) -> None:
        self.pack_nfs_fh3(a.object)
        self.pack_sattr3(a.new_attributes)
        self.pack_sattrguard3(a.guard)

    def pack_SETATTR3resok(self, r: SETATTR3resok | SETATTR3resfail) -> None:
        self.pack_wcc_data(r.obj_wcc)

    pack_SETATTR3resfail = pack_SETATTR3resok

    def pack_SETATTR3res(self, r: SETATTR3res) -> None:
        self._pack_res(r, self.pack_SETATTR3resok, self.pack_SETATTR3resfail)

    # -- LOOKUP --

    def pack_LOOKUP3args(self, a: LOOKUP3args) -> None:
        self.pack_diropargs3(a.what)

    def pack_LOOKUP3resok(self, r: LOOKUP3resok) -> None:
        self.pack_nfs_fh3(r.object)
        self.pack_post_op_attr(r.obj_attributes)
        self.pack_post_op_attr(r.dir_attributes)

    def pack_LOOKUP3resfail(self, r: LOOKUP3resfail) -> None:
        self.pack_post_op_attr(r.dir_attributes)

    def pack_LOOKUP3res(self, r: LOOKUP3res) -> None:
        self._pack_res(r, self.pack_LOOKUP3resok, self.pack_LOOKUP3resfail)

    # -- ACCESS --

    def pack_ACCESS3args(self, a: ACCESS3args) -> None:
        self.pack_nfs_fh3(a.object)
        self.pack_uint(a.access)

    def pack_ACCESS3resok(self, r: ACCESS3resok) -> None:
        self.pack_post_op_attr(r.obj_attributes)
        self.pack_uint(r.access)

    def pack_ACCESS3resfail(self, r: ACCESS3resfail) -> None:
        self.pack_post_op_attr(r.obj_attributes)

    def pack_ACCESS3res(self, r: ACCESS3res) -> None:
        self._pack_res(r, self.pack_ACCESS3resok, self.pack_ACCESS3resfail)

    # -- READLINK --

    def pack_READLINK3args(self, a: READLINK3args) -> None:
        self.pack_nfs_fh3(a.symlink)

    def pack_READLINK3resok(self, r: READLINK3resok) -> None:
        self.pack_post_op_attr(r.symlink_attributes)
        self.pack_nfspath3(r.data)

    def pack_READLINK3resfail(self, r: READLINK3resfail) -> None:
        self.pack_post_op_attr(r.symlink_attributes)

    def pack_READLINK3res(self, r: READLINK3res) -> None:
        self._pack_res(r, self.pack_READLINK3resok, self.pack_READLINK3resfail)

    # -- READ --

    def pack_READ3args(self, a: READ3args) -> None:
        self.pack_nfs_fh3(a.file)
        self.pack_raw(_pack_struct(_UINT64_UINT32, a.offset, a.count))

    def pack_READ3resok(self, r: READ3resok) -> None:
        self.pack_post_op_attr(r.file_attributes)
        self.pack_raw(_pack_struct(_UINT32_PAIR, r.count, 1 if r.eof else 0))
        self.pack_opaque(r.data)

    def pack_READ3resfail(self, r: READ3resfail) -> None:
        self.pack_post_op_attr(r.file_attributes)

    def pack_READ3res(self, r: READ3res) -> None:
        self._pack_res(r, self.pack_READ3resok, self.pack_READ3resfail)

    # -- WRITE --

    def pack_WRITE3args(self, a: WRITE3args) -> None:
        self.pack_nfs_fh3(a.file)
        self.pack_raw(_pack_struct(_UINT64_UINT32, a.offset, a.count))
        self.pack_enum(a.stable)
        self.pack_opaque(bytes(a.data))  # xdrlib3 pads with ``+``: a view would not do

    def pack_WRITE3resok(self, r: WRITE3resok) -> None:
        self.pack_wcc_data(r.file_wcc)
        self.pack_uint(r.count)
        self.pack_enum(r.committed)
        self.pack_writeverf3(r.verf)

    def pack_WRITE3resfail(self, r: WRITE3resfail) -> None:
        self.pack_wcc_data(r.file_wcc)

    def pack_WRITE3res(self, r: WRITE3res) -> None:
        self._pack_res(r, self.pack_WRITE3resok, self.pack_WRITE3resfail)

    # -- CREATE --

    def pack_createhow3(self, h: createhow3) -> None:
        self.pack_enum(h.mode)
        if h.mode == EXCLUSIVE:
            self.pack_createverf3(_arm(h.verf, "createhow3"))
        elif h.mode in (UNCHECKED, GUARDED):
            self.pack_sattr3(_arm(h.obj_attributes, "createhow3"))
        else:
            raise XdrError(f"createhow3: unknown createmode3 {h.mode}")

    def pack_CREATE3args(self, a: CREATE3args) -> None:
        self.pack_diropargs3(a.where)
        self.pack_createhow3(a.how)

    pack_CREATE3resok = _pack_created

    def pack_CREATE3resfail(self, r: CREATE3resfail) -> None:
        self.pack_wcc_data(r.dir_wcc)

    def pack_CREATE3res(self, r: CREATE3res) -> None:
        self._pack_res(r, self.pack_CREATE3resok, self.pack_CREATE3resfail)

    # -- MKDIR --

    def pack_MKDIR3args(self, a: MKDIR3args) -> None:
        self.pack_diropargs3(a.where)
        self.pack_sattr3(a.attributes)

    pack_MKDIR3resok = _pack_created

    def pack_MKDIR3resfail(self, r: MKDIR3resfail) -> None:
        self.pack_wcc_data(r.dir_wcc)

    def pack_MKDIR3res(self, r: MKDIR3res) -> None:
        self._pack_res(r, self.pack_MKDIR3resok, self.pack_MKDIR3resfail)

    # -- SYMLINK --

    def pack_symlinkdata3(self, s: symlinkdata3) -> None:
        self.pack_sattr3(s.symlink_attributes)
        self.pack_nfspath3(s.symlink_data)

    def pack_SYMLINK3args(self, a: SYMLINK3args) -> None:
        self.pack_diropargs3(a.where)
        self.pack_symlinkdata3(a.symlink)

    pack_SYMLINK3resok = _pack_created

    def pack_SYMLINK3resfail(self, r: SYMLINK3resfail) -> None:
        self.pack_wcc_data(r.dir_wcc)

    def pack_SYMLINK3res(self, r: SYMLINK3res) -> None:
        self._pack_res(r, self.pack_SYMLINK3resok, self.pack_SYMLINK3resfail)

    # -- MKNOD --

    def pack_devicedata3(self, d: devicedata3) -> None:
        self.pack_sattr3(d.dev_attributes)
        self.pack_specdata3(d.spec)

    def pack_mknoddata3(self, m: mknoddata3) -> None:
        t = m.type
        self.pack_enum(t)
        if t in (NF3CHR, NF3BLK):
            self.pack_devicedata3(_arm(m.device, "mknoddata3"))
        elif t in (NF3SOCK, NF3FIFO):
            self.pack_sattr3(_arm(m.pipe_attributes, "mknoddata3"))
        elif t not in FTYPE3:
            raise XdrError(f"mknoddata3: unknown ftype3 {t}")

    def pack_MKNOD3args(self, a: MKNOD3args) -> None:
        self.pack_diropargs3(a.where)
        self.pack_mknoddata3(a.what)

    pack_MKNOD3resok = _pack_created

    def pack_MKNOD3resfail(self, r: MKNOD3resfail) -> None:
        self.pack_wcc_data(r.dir_wcc)

    def pack_MKNOD3res(self, r: MKNOD3res) -> None:
        self._pack_res(r, self.pack_MKNOD3resok, self.pack_MKNOD3resfail)

    # -- REMOVE, RMDIR --

    def pack_REMOVE3args(self, a: REMOVE3args | RMDIR3args) -> None:
        self.pack_diropargs3(a.object)

    def pack_REMOVE3resok(
        self, r: REMOVE3resok | REMOVE3resfail | RMDIR3resok | RMDIR3resfail
    ) -> None:
        self.pack_wcc_data(r.dir_wcc)

    pack_REMOVE3resfail = pack_REMOVE3resok

    def pack_REMOVE3res(self, r: REMOVE3res) -> None:
        self._pack_res(r, self.pack_REMOVE3resok, self.pack_REMOVE3resfail)

    pack_RMDIR3args = pack_REMOVE3args
    pack_RMDIR3resok = pack_RMDIR3resfail = pack_REMOVE3resok

    def pack_RMDIR3res(self, r: RMDIR3res) -> None:
        self._pack_res(r, self.pack_RMDIR3resok, self.pack_RMDIR3resfail)

    # -- RENAME --

    def pack_RENAME3args(self, a: RENAME3args) -> None:
        self.pack_diropargs3(a.from_)
        self.pack_diropargs3(a.to)

    def pack_RENAME3resok(self, r: RENAME3resok | RENAME3resfail) -> None:
        self.pack_wcc_data(r.fromdir_wcc)
        self.pack_wcc_data(r.todir_wcc)

    pack_RENAME3resfail = pack_RENAME3resok

    def pack_RENAME3res(self, r: RENAME3res) -> None:
        self._pack_res(r, self.pack_RENAME3resok, self.pack_RENAME3resfail)

    # -- LINK --

    def pack_LINK3args(self, a: LINK3args) -> None:
        self.pack_nfs_fh3(a.file)
        self.pack_diropargs3(a.link)

    def pack_LINK3resok(self, r: LINK3resok | LINK3resfail) -> None:
        self.pack_post_op_attr(r.file_attributes)
        self.pack_wcc_data(r.linkdir_wcc)

    pack_LINK3resfail = pack_LINK3resok

    def pack_LINK3res(self, r: LINK3res) -> None:
        self._pack_res(r, self.pack_LINK3resok, self.pack_LINK3resfail)

    # -- READDIR --

    def pack_READDIR3args(self, a: READDIR3args) -> None:
        self.pack_nfs_fh3(a.dir)
        self.pack_uint64(a.cookie)
        self.pack_cookieverf3(a.cookieverf)
        self.pack_uint(a.count)

    def pack_entry3(self, e: entry3) -> None:
        self.pack_raw(_entry_bytes(e.fileid, e.name, e.cookie))

    def pack_dirlist3(self, d: dirlist3) -> None:
        """The entries, each after a TRUE, a FALSE, then eof: in one write."""
        parts = []
        for e in d.entries:
            parts.append(_TRUE)
            parts.append(_entry_bytes(e.fileid, e.name, e.cookie))
        parts.append(_FALSE)
        parts.append(_TRUE if d.eof else _FALSE)
        self.pack_raw(b"".join(parts))

    def pack_READDIR3resok(self, r: READDIR3resok) -> None:
        self.pack_post_op_attr(r.dir_attributes)
        self.pack_cookieverf3(r.cookieverf)
        self.pack_dirlist3(r.reply)

    def pack_READDIR3resfail(self, r: READDIR3resfail) -> None:
        self.pack_post_op_attr(r.dir_attributes)

    def pack_READDIR3res(self, r: READDIR3res) -> None:
        self._pack_res(r, self.pack_READDIR3resok, self.pack_READDIR3resfail)

    # -- READDIRPLUS --

    def pack_READDIRPLUS3args(self, a: READDIRPLUS3args) -> None:
        self.pack_nfs_fh3(a.dir)
        self.pack_uint64(a.cookie)
        self.pack_cookieverf3(a.cookieverf)
        self.pack_raw(_pack_struct(_UINT32_PAIR, a.dircount, a.maxcount))

    def pack_entryplus3(self, e: entryplus3) -> None:
        self.pack_raw(
            _entry_bytes(e.fileid, e.name, e.cookie)
            + _post_op_attr_bytes(e.name_attributes)
            + _post_op_fh3_bytes(e.name_handle)
        )

    def pack_dirlistplus3(self, d: dirlistplus3) -> None:
        """The entries, each after a TRUE, a FALSE, then eof: in one write."""
        parts = []
        for e in d.entries:
            parts.append(_TRUE)
            parts.append(_entry_bytes(e.fileid, e.name, e.cookie))
            parts.append(_post_op_attr_bytes(e.name_attributes))
            parts.append(_post_op_fh3_bytes(e.name_handle))
        parts.append(_FALSE)
        parts.append(_TRUE if d.eof else _FALSE)
        self.pack_raw(b"".join(parts))

    def pack_READDIRPLUS3resok(self, r: READDIRPLUS3resok) -> None:
        self.pack_post_op_attr(r.dir_attributes)
        self.pack_cookieverf3(r.cookieverf)
        self.pack_dirlistplus3(r.reply)

    def pack_READDIRPLUS3resfail(self, r: READDIRPLUS3resfail) -> None:
        self.pack_post_op_attr(r.dir_attributes)

    def pack_READDIRPLUS3res(self, r: READDIRPLUS3res) -> None:
        self._pack_res(r, self.pack_READDIRPLUS3resok, self.pack_READDIRPLUS3resfail)

    # -- FSSTAT --

    def pack_FSSTAT3args(self, a: FSSTAT3args | FSINFO3args) -> None:
        self.pack_nfs_fh3(a.fsroot)

    def pack_FSSTAT3resok(self, r: FSSTAT3resok) -> None:
        self.pack_post_op_attr(r.obj_attributes)
        self.pack_raw(
            _pack_struct(
                _FSSTAT3, r.tbytes, r.fbytes, r.abytes, r.tfiles, r.ffiles, r.afiles, r.invarsec
            )
        )

    def pack_FSSTAT3resfail(self, r: FSSTAT3resfail) -> None:
        self.pack_post_op_attr(r.obj_attributes)

    def pack_FSSTAT3res(self, r: FSSTAT3res) -> None:
        self._pack_res(r, self.pack_FSSTAT3resok, self.pack_FSSTAT3resfail)

    # -- FSINFO --

    pack_FSINFO3args = pack_FSSTAT3args

    def pack_FSINFO3resok(self, r: FSINFO3resok) -> None:
        self.pack_post_op_attr(r.obj_attributes)
        t = r.time_delta
        self.pack_raw(
            _pack_struct(
                _FSINFO3,
                r.rtmax,
                r.rtpref,
                r.rtmult,
                r.wtmax,
                r.wtpref,
                r.wtmult,
                r.dtpref,
                r.maxfilesize,
                t.seconds,
                t.nseconds,
                r.properties,
            )
        )

    def pack_FSINFO3resfail(self, r: FSINFO3resfail) -> None:
        self.pack_post_op_attr(r.obj_attributes)

    def pack_FSINFO3res(self, r: FSINFO3res) -> None:
        self._pack_res(r, self.pack_FSINFO3resok, self.pack_FSINFO3resfail)

    # -- PATHCONF --

    def pack_PATHCONF3args(self, a: PATHCONF3args) -> None:
        self.pack_nfs_fh3(a.object)

    def pack_PATHCONF3resok(self, r: PATHCONF3resok) -> None:
        self.pack_post_op_attr(r.obj_attributes)
        self.pack_raw(
            _pack_struct(
                _PATHCONF3,
                r.linkmax,
                r.name_max,
                1 if r.no_trunc else 0,
                1 if r.chown_restricted else 0,
                1 if r.case_insensitive else 0,
                1 if r.case_preserving else 0,
            )
        )

    def pack_PATHCONF3resfail(self, r: PATHCONF3resfail) -> None:
        self.pack_post_op_attr(r.obj_attributes)

    def pack_PATHCONF3res(self, r: PATHCONF3res) -> None:
        self._pack_res(r, self.pack_PATHCONF3resok, self.pack_PATHCONF3resfail)

    # -- COMMIT --

    def pack_COMMIT3args(self, a: COMMIT3args) -> None:
        self.pack_nfs_fh3(a.file)
        self.pack_raw(_pack_struct(_UINT64_UINT32, a.offset, a.count))

    def pack_COMMIT3resok(self, r: COMMIT3resok) -> None:
        self.pack_wcc_data(r.file_wcc)
        self.pack_writeverf3(r.verf)

    def pack_COMMIT3resfail(self, r: COMMIT3resfail) -> None:
        self.pack_wcc_data(r.file_wcc)

    def pack_COMMIT3res(self, r: COMMIT3res) -> None:
        self._pack_res(r, self.pack_COMMIT3resok, self.pack_COMMIT3resfail)


class NFS3Unpacker(Unpacker):
    """Unpacks NFSv3 arguments (the server's side) and results (a client's side)."""

    # -- basic data types --

    def unpack_uint32(self) -> int:
        return self.unpack_uint()

    def unpack_uint64(self) -> int:
        return _UINT64.unpack(self.unpack_fopaque(8))[0]

    unpack_int32 = Unpacker.unpack_int
    unpack_int64 = Unpacker.unpack_hyper
    unpack_uid3 = unpack_gid3 = unpack_mode3 = unpack_count3 = unpack_uint32
    unpack_fileid3 = unpack_cookie3 = unpack_size3 = unpack_offset3 = unpack_uint64

    def _unpack_enum_in(self, values: frozenset[int], what: str) -> int:
        v = self.unpack_enum()
        if v not in values:
            raise XdrError(f"unknown {what} {v}")
        return v

    def unpack_nfsstat3(self) -> int:
        return self._unpack_enum_in(NFSSTAT3, "nfsstat3")

    def unpack_ftype3(self) -> int:
        return self._unpack_enum_in(FTYPE3, "ftype3")

    def unpack_stable_how(self) -> int:
        return self._unpack_enum_in(STABLE_HOW, "stable_how")

    def unpack_createmode3(self) -> int:
        return self._unpack_enum_in(CREATEMODE3, "createmode3")

    def unpack_time_how(self) -> int:
        return self._unpack_enum_in(TIME_HOW, "time_how")

    def unpack_filename3(self) -> bytes:
        return self.unpack_opaque_max(MAXNAMLEN)

    def unpack_nfspath3(self) -> bytes:
        return self.unpack_opaque_max(MAXPATHLEN)

    def unpack_cookieverf3(self) -> bytes:
        return self.unpack_fopaque(NFS3_COOKIEVERFSIZE)

    unpack_createverf3 = unpack_writeverf3 = unpack_cookieverf3

    def unpack_specdata3(self) -> specdata3:
        return specdata3(*_UINT32_PAIR.unpack(self.unpack_fopaque(8)))

    def unpack_nfs_fh3(self) -> nfs_fh3:
        return nfs_fh3(self.unpack_opaque_max(NFS3_FHSIZE))

    def unpack_nfstime3(self) -> nfstime3:
        return nfstime3(*_UINT32_PAIR.unpack(self.unpack_fopaque(8)))

    def unpack_fattr3(self) -> fattr3:
        (t, mode, nlink, uid, gid, size, used, sd1, sd2, fsid, fileid, a, an, m, mn, c, cn) = (
            _FATTR3.unpack(self.unpack_fopaque(_FATTR3.size))
        )
        if t not in FTYPE3:
            raise XdrError(f"unknown ftype3 {t}")
        return fattr3(
            t,
            mode,
            nlink,
            uid,
            gid,
            size,
            used,
            specdata3(sd1, sd2),
            fsid,
            fileid,
            nfstime3(a, an),
            nfstime3(m, mn),
            nfstime3(c, cn),
        )

    def unpack_post_op_attr(self) -> post_op_attr:
        if self.unpack_bool():
            return post_op_attr(True, self.unpack_fattr3())
        return post_op_attr(False)

    def unpack_wcc_attr(self) -> wcc_attr:
        size, m, mn, c, cn = _WCC_ATTR.unpack(self.unpack_fopaque(_WCC_ATTR.size))
        return wcc_attr(size, nfstime3(m, mn), nfstime3(c, cn))

    def unpack_pre_op_attr(self) -> pre_op_attr:
        if self.unpack_bool():
            return pre_op_attr(True, self.unpack_wcc_attr())
        return pre_op_attr(False)

    def unpack_wcc_data(self) -> wcc_data:
        return wcc_data(self.unpack_pre_op_attr(), self.unpack_post_op_attr())

    def unpack_post_op_fh3(self) -> post_op_fh3:
        if self.unpack_bool():
            return post_op_fh3(True, nfs_fh3(self.unpack_opaque_max(NFS3_FHSIZE)))
        return post_op_fh3(False)

    def unpack_set_mode3(self) -> set_mode3:
        return set_mode3(True, self.unpack_uint()) if self.unpack_bool() else set_mode3(False)

    def unpack_set_uid3(self) -> set_uid3:
        return set_uid3(True, self.unpack_uint()) if self.unpack_bool() else set_uid3(False)

    def unpack_set_gid3(self) -> set_gid3:
        return set_gid3(True, self.unpack_uint()) if self.unpack_bool() else set_gid3(False)

    def unpack_set_size3(self) -> set_size3:
        return set_size3(True, self.unpack_uint64()) if self.unpack_bool() else set_size3(False)

    def _unpack_set_time(self) -> tuple[int, nfstime3 | None]:
        how = self.unpack_time_how()
        return how, self.unpack_nfstime3() if how == SET_TO_CLIENT_TIME else None

    def unpack_set_atime(self) -> set_atime:
        return set_atime(*self._unpack_set_time())

    def unpack_set_mtime(self) -> set_mtime:
        return set_mtime(*self._unpack_set_time())

    def unpack_sattr3(self) -> sattr3:
        return sattr3(
            self.unpack_set_mode3(),
            self.unpack_set_uid3(),
            self.unpack_set_gid3(),
            self.unpack_set_size3(),
            self.unpack_set_atime(),
            self.unpack_set_mtime(),
        )

    def unpack_diropargs3(self) -> diropargs3:
        return diropargs3(
            nfs_fh3(self.unpack_opaque_max(NFS3_FHSIZE)), self.unpack_opaque_max(MAXNAMLEN)
        )

    def _unpack_res(
        self, cls: type[R], unpack_resok: Callable[[], Any], unpack_resfail: Callable[[], Any]
    ) -> R:
        status = self.unpack_nfsstat3()
        if status == NFS3_OK:
            return cls(status, unpack_resok())
        return cls(status, None, unpack_resfail())

    def _unpack_created(self, cls: type[C]) -> C:
        return cls(self.unpack_post_op_fh3(), self.unpack_post_op_attr(), self.unpack_wcc_data())

    # -- GETATTR --

    def unpack_GETATTR3args(self) -> GETATTR3args:
        return GETATTR3args(self.unpack_nfs_fh3())

    def unpack_GETATTR3resok(self) -> GETATTR3resok:
        return GETATTR3resok(self.unpack_fattr3())

    def unpack_GETATTR3res(self) -> GETATTR3res:
        status = self.unpack_nfsstat3()
        if status == NFS3_OK:
            return GETATTR3res(status, self.unpack_GETATTR3resok())
        return GETATTR3res(status)

    # -- SETATTR --

    def unpack_sattrguard3(self) -> sattrguard3:
        if self.unpack_bool():
            return sattrguard3(True, self.unpack_nfstime3())
        return sattrguard3(False)

    def unpack_SETATTR3args(self) -> SETATTR3args:
        return SETATTR3args(self.unpack_nfs_fh3(), self.unpack_sattr3(), self.unpack_sattrguard3())

    def unpack_SETATTR3resok(self) -> SETATTR3resok:
        return SETATTR3resok(self.unpack_wcc_data())

    def unpack_SETATTR3resfail(self) -> SETATTR3resfail:
        return SETATTR3resfail(self.unpack_wcc_data())

    def unpack_SETATTR3res(self) -> SETATTR3res:
        return self._unpack_res(SETATTR3res, self.unpack_SETATTR3resok, self.unpack_SETATTR3resfail)

    # -- LOOKUP --

    def unpack_LOOKUP3args(self) -> LOOKUP3args:
        return LOOKUP3args(self.unpack_diropargs3())

    def unpack_LOOKUP3resok(self) -> LOOKUP3resok:
        return LOOKUP3resok(
            self.unpack_nfs_fh3(), self.unpack_post_op_attr(), self.unpack_post_op_attr()
        )

    def unpack_LOOKUP3resfail(self) -> LOOKUP3resfail:
        return LOOKUP3resfail(self.unpack_post_op_attr())

    def unpack_LOOKUP3res(self) -> LOOKUP3res:
        return self._unpack_res(LOOKUP3res, self.unpack_LOOKUP3resok, self.unpack_LOOKUP3resfail)

    # -- ACCESS --

    def unpack_ACCESS3args(self) -> ACCESS3args:
        return ACCESS3args(self.unpack_nfs_fh3(), self.unpack_uint())

    def unpack_ACCESS3resok(self) -> ACCESS3resok:
        return ACCESS3resok(self.unpack_post_op_attr(), self.unpack_uint())

    def unpack_ACCESS3resfail(self) -> ACCESS3resfail:
        return ACCESS3resfail(self.unpack_post_op_attr())

    def unpack_ACCESS3res(self) -> ACCESS3res:
        return self._unpack_res(ACCESS3res, self.unpack_ACCESS3resok, self.unpack_ACCESS3resfail)

    # -- READLINK --

    def unpack_READLINK3args(self) -> READLINK3args:
        return READLINK3args(self.unpack_nfs_fh3())

    def unpack_READLINK3resok(self) -> READLINK3resok:
        return READLINK3resok(self.unpack_post_op_attr(), self.unpack_nfspath3())

    def unpack_READLINK3resfail(self) -> READLINK3resfail:
        return READLINK3resfail(self.unpack_post_op_attr())

    def unpack_READLINK3res(self) -> READLINK3res:
        return self._unpack_res(
            READLINK3res, self.unpack_READLINK3resok, self.unpack_READLINK3resfail
        )

    # -- READ --

    def unpack_READ3args(self) -> READ3args:
        fh = nfs_fh3(self.unpack_opaque_max(NFS3_FHSIZE))
        offset, count = _UINT64_UINT32.unpack(self.unpack_fopaque(12))
        return READ3args(fh, offset, count)

    def unpack_READ3resok(self) -> READ3resok:
        attrs = self.unpack_post_op_attr()
        count = self.unpack_uint()
        return READ3resok(attrs, count, self.unpack_bool(), self.unpack_opaque())

    def unpack_READ3resfail(self) -> READ3resfail:
        return READ3resfail(self.unpack_post_op_attr())

    def unpack_READ3res(self) -> READ3res:
        return self._unpack_res(READ3res, self.unpack_READ3resok, self.unpack_READ3resfail)

    # -- WRITE --

    def unpack_WRITE3args(self) -> WRITE3args:
        fh = nfs_fh3(self.unpack_opaque_max(NFS3_FHSIZE))
        offset, count = _UINT64_UINT32.unpack(self.unpack_fopaque(12))
        stable = self.unpack_stable_how()
        return WRITE3args(fh, offset, count, stable, self.unpack_opaque_view())

    def unpack_WRITE3resok(self) -> WRITE3resok:
        return WRITE3resok(
            self.unpack_wcc_data(),
            self.unpack_uint(),
            self.unpack_stable_how(),
            self.unpack_writeverf3(),
        )

    def unpack_WRITE3resfail(self) -> WRITE3resfail:
        return WRITE3resfail(self.unpack_wcc_data())

    def unpack_WRITE3res(self) -> WRITE3res:
        return self._unpack_res(WRITE3res, self.unpack_WRITE3resok, self.unpack_WRITE3resfail)

    # -- CREATE --

    def unpack_createhow3(self) -> createhow3:
        mode = self.unpack_createmode3()
        if mode == EXCLUSIVE:
            return createhow3(mode, verf=self.unpack_createverf3())
        return createhow3(mode, obj_attributes=self.unpack_sattr3())

    def unpack_CREATE3args(self) -> CREATE3args:
        return CREATE3args(self.unpack_diropargs3(), self.unpack_createhow3())

    def unpack_CREATE3resok(self) -> CREATE3resok:
        return self._unpack_created(CREATE3resok)

    def unpack_CREATE3resfail(self) -> CREATE3resfail:
        return CREATE3resfail(self.unpack_wcc_data())

    def unpack_CREATE3res(self) -> CREATE3res:
        return self._unpack_res(CREATE3res, self.unpack_CREATE3resok, self.unpack_CREATE3resfail)

    # -- MKDIR --

    def unpack_MKDIR3args(self) -> MKDIR3args:
        return MKDIR3args(self.unpack_diropargs3(), self.unpack_sattr3())

    def unpack_MKDIR3resok(self) -> MKDIR3resok:
        return self._unpack_created(MKDIR3resok)

    def unpack_MKDIR3resfail(self) -> MKDIR3resfail:
        return MKDIR3resfail(self.unpack_wcc_data())

    def unpack_MKDIR3res(self) -> MKDIR3res:
        return self._unpack_res(MKDIR3res, self.unpack_MKDIR3resok, self.unpack_MKDIR3resfail)

    # -- SYMLINK --

    def unpack_symlinkdata3(self) -> symlinkdata3:
        return symlinkdata3(self.unpack_sattr3(), self.unpack_nfspath3())

    def unpack_SYMLINK3args(self) -> SYMLINK3args:
        return SYMLINK3args(self.unpack_diropargs3(), self.unpack_symlinkdata3())

    def unpack_SYMLINK3resok(self) -> SYMLINK3resok:
        return self._unpack_created(SYMLINK3resok)

    def unpack_SYMLINK3resfail(self) -> SYMLINK3resfail:
        return SYMLINK3resfail(self.unpack_wcc_data())

    def unpack_SYMLINK3res(self) -> SYMLINK3res:
        return self._unpack_res(SYMLINK3res, self.unpack_SYMLINK3resok, self.unpack_SYMLINK3resfail)

    # -- MKNOD --

    def unpack_devicedata3(self) -> devicedata3:
        return devicedata3(self.unpack_sattr3(), self.unpack_specdata3())

    def unpack_mknoddata3(self) -> mknoddata3:
        t = self.unpack_ftype3()
        if t in (NF3CHR, NF3BLK):
            return mknoddata3(t, device=self.unpack_devicedata3())
        if t in (NF3SOCK, NF3FIFO):
            return mknoddata3(t, pipe_attributes=self.unpack_sattr3())
        return mknoddata3(t)

    def unpack_MKNOD3args(self) -> MKNOD3args:
        return MKNOD3args(self.unpack_diropargs3(), self.unpack_mknoddata3())

    def unpack_MKNOD3resok(self) -> MKNOD3resok:
        return self._unpack_created(MKNOD3resok)

    def unpack_MKNOD3resfail(self) -> MKNOD3resfail:
        return MKNOD3resfail(self.unpack_wcc_data())

    def unpack_MKNOD3res(self) -> MKNOD3res:
        return self._unpack_res(MKNOD3res, self.unpack_MKNOD3resok, self.unpack_MKNOD3resfail)

    # -- REMOVE --

    def unpack_REMOVE3args(self) -> REMOVE3args:
        return REMOVE3args(self.unpack_diropargs3())

    def unpack_REMOVE3resok(self) -> REMOVE3resok:
        return REMOVE3resok(self.unpack_wcc_data())

    def unpack_REMOVE3resfail(self) -> REMOVE3resfail:
        return REMOVE3resfail(self.unpack_wcc_data())

    def unpack_REMOVE3res(self) -> REMOVE3res:
        return self._unpack_res(REMOVE3res, self.unpack_REMOVE3resok, self.unpack_REMOVE3resfail)

    # -- RMDIR --

    def unpack_RMDIR3args(self) -> RMDIR3args:
        return RMDIR3args(self.unpack_diropargs3())

    def unpack_RMDIR3resok(self) -> RMDIR3resok:
        return RMDIR3resok(self.unpack_wcc_data())

    def unpack_RMDIR3resfail(self) -> RMDIR3resfail:
        return RMDIR3resfail(self.unpack_wcc_data())

    def unpack_RMDIR3res(self) -> RMDIR3res:
        return self._unpack_res(RMDIR3res, self.unpack_RMDIR3resok, self.unpack_RMDIR3resfail)

    # -- RENAME --

    def unpack_RENAME3args(self) -> RENAME3args:
        return RENAME3args(self.unpack_diropargs3(), self.unpack_diropargs3())

    def unpack_RENAME3resok(self) -> RENAME3resok:
        return RENAME3resok(self.unpack_wcc_data(), self.unpack_wcc_data())

    def unpack_RENAME3resfail(self) -> RENAME3resfail:
        return RENAME3resfail(self.unpack_wcc_data(), self.unpack_wcc_data())

    def unpack_RENAME3res(self) -> RENAME3res:
        return self._unpack_res(RENAME3res, self.unpack_RENAME3resok, self.unpack_RENAME3resfail)

    # -- LINK --

    def unpack_LINK3args(self) -> LINK3args:
        return LINK3args(self.unpack_nfs_fh3(), self.unpack_diropargs3())

    def unpack_LINK3resok(self) -> LINK3resok:
        return LINK3resok(self.unpack_post_op_attr(), self.unpack_wcc_data())

    def unpack_LINK3resfail(self) -> LINK3resfail:
        return LINK3resfail(self.unpack_post_op_attr(), self.unpack_wcc_data())

    def unpack_LINK3res(self) -> LINK3res:
        return self._unpack_res(LINK3res, self.unpack_LINK3resok, self.unpack_LINK3resfail)

    # -- READDIR --

    def unpack_READDIR3args(self) -> READDIR3args:
        fh = nfs_fh3(self.unpack_opaque_max(NFS3_FHSIZE))
        cookie = self.unpack_uint64()
        return READDIR3args(fh, cookie, self.unpack_cookieverf3(), self.unpack_uint())

    def unpack_entry3(self) -> entry3:
        fileid = self.unpack_uint64()
        return entry3(fileid, self.unpack_filename3(), self.unpack_uint64())

    def unpack_dirlist3(self) -> dirlist3:
        entries = self.unpack_list(self.unpack_entry3)
        return dirlist3(entries, self.unpack_bool())

    def unpack_READDIR3resok(self) -> READDIR3resok:
        attrs = self.unpack_post_op_attr()
        return READDIR3resok(attrs, self.unpack_cookieverf3(), self.unpack_dirlist3())

    def unpack_READDIR3resfail(self) -> READDIR3resfail:
        return READDIR3resfail(self.unpack_post_op_attr())

    def unpack_READDIR3res(self) -> READDIR3res:
        return self._unpack_res(READDIR3res, self.unpack_READDIR3resok, self.unpack_READDIR3resfail)

    # -- READDIRPLUS --

    def unpack_READDIRPLUS3args(self) -> READDIRPLUS3args:
        fh = nfs_fh3(self.unpack_opaque_max(NFS3_FHSIZE))
        cookie = self.unpack_uint64()
        verf = self.unpack_cookieverf3()
        dircount, maxcount = _UINT32_PAIR.unpack(self.unpack_fopaque(8))
        return READDIRPLUS3args(fh, cookie, verf, dircount, maxcount)

    def unpack_entryplus3(self) -> entryplus3:
        fileid = self.unpack_uint64()
        name = self.unpack_filename3()
        cookie = self.unpack_uint64()
        return entryplus3(
            fileid, name, cookie, self.unpack_post_op_attr(), self.unpack_post_op_fh3()
        )

    def unpack_dirlistplus3(self) -> dirlistplus3:
        entries = self.unpack_list(self.unpack_entryplus3)
        return dirlistplus3(entries, self.unpack_bool())

    def unpack_READDIRPLUS3resok(self) -> READDIRPLUS3resok:
        attrs = self.unpack_post_op_attr()
        return READDIRPLUS3resok(attrs, self.unpack_cookieverf3(), self.unpack_dirlistplus3())

    def unpack_READDIRPLUS3resfail(self) -> READDIRPLUS3resfail:
        return READDIRPLUS3resfail(self.unpack_post_op_attr())

    def unpack_READDIRPLUS3res(self) -> READDIRPLUS3res:
        return self._unpack_res(
            READDIRPLUS3res, self.unpack_READDIRPLUS3resok, self.unpack_READDIRPLUS3resfail
        )

    # -- FSSTAT --

    def unpack_FSSTAT3args(self) -> FSSTAT3args:
        return FSSTAT3args(self.unpack_nfs_fh3())

    def unpack_FSSTAT3resok(self) -> FSSTAT3resok:
        attrs = self.unpack_post_op_attr()
        return FSSTAT3resok(attrs, *_FSSTAT3.unpack(self.unpack_fopaque(_FSSTAT3.size)))

    def unpack_FSSTAT3resfail(self) -> FSSTAT3resfail:
        return FSSTAT3resfail(self.unpack_post_op_attr())

    def unpack_FSSTAT3res(self) -> FSSTAT3res:
        return self._unpack_res(FSSTAT3res, self.unpack_FSSTAT3resok, self.unpack_FSSTAT3resfail)

    # -- FSINFO --

    def unpack_FSINFO3args(self) -> FSINFO3args:
        return FSINFO3args(self.unpack_nfs_fh3())

    def unpack_FSINFO3resok(self) -> FSINFO3resok:
        attrs = self.unpack_post_op_attr()
        (rtmax, rtpref, rtmult, wtmax, wtpref, wtmult, dtpref, maxfilesize, s, ns, props) = (
            _FSINFO3.unpack(self.unpack_fopaque(_FSINFO3.size))
        )
        return FSINFO3resok(
            attrs,
            rtmax,
            rtpref,
            rtmult,
            wtmax,
            wtpref,
            wtmult,
            dtpref,
            maxfilesize,
            nfstime3(s, ns),
            props,
        )

    def unpack_FSINFO3resfail(self) -> FSINFO3resfail:
        return FSINFO3resfail(self.unpack_post_op_attr())

    def unpack_FSINFO3res(self) -> FSINFO3res:
        return self._unpack_res(FSINFO3res, self.unpack_FSINFO3resok, self.unpack_FSINFO3resfail)

    # -- PATHCONF --

    def unpack_PATHCONF3args(self) -> PATHCONF3args:
        return PATHCONF3args(self.unpack_nfs_fh3())

    def unpack_PATHCONF3resok(self) -> PATHCONF3resok:
        return PATHCONF3resok(
            self.unpack_post_op_attr(),
            self.unpack_uint(),
            self.unpack_uint(),
            self.unpack_bool(),
            self.unpack_bool(),
            self.unpack_bool(),
            self.unpack_bool(),
        )

    def unpack_PATHCONF3resfail(self) -> PATHCONF3resfail:
        return PATHCONF3resfail(self.unpack_post_op_attr())

    def unpack_PATHCONF3res(self) -> PATHCONF3res:
        return self._unpack_res(
            PATHCONF3res, self.unpack_PATHCONF3resok, self.unpack_PATHCONF3resfail
        )

    # -- COMMIT --

    def unpack_COMMIT3args(self) -> COMMIT3args:
        fh = nfs_fh3(self.unpack_opaque_max(NFS3_FHSIZE))
        offset, count = _UINT64_UINT32.unpack(self.unpack_fopaque(12))
        return COMMIT3args(fh, offset, count)

    def unpack_COMMIT3resok(self) -> COMMIT3resok:
        return COMMIT3resok(self.unpack_wcc_data(), self.unpack_writeverf3())

    def unpack_COMMIT3resfail(self) -> COMMIT3resfail:
        return COMMIT3resfail(self.unpack_wcc_data())

    def unpack_COMMIT3res(self) -> COMMIT3res:
        return self._unpack_res(COMMIT3res, self.unpack_COMMIT3resok, self.unpack_COMMIT3resfail)
