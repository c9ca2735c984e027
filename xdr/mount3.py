"""MOUNT protocol version 3 (RFC 1813, Appendix I).

XDR linked lists (``mountlist``, ``groups``, ``exports``) are Python lists
of their items: the ``*_next`` pointers are the list structure.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdr.base import Packer, Unpacker, XdrError

MOUNT_PROGRAM = 100005
MOUNT_V3 = 3

MNTPATHLEN = 1024  # maximum bytes in a path name
MNTNAMLEN = 255  # maximum bytes in a name
FHSIZE3 = 64  # maximum bytes in a V3 file handle

# enum mountstat3
MNT3_OK = 0
MNT3ERR_PERM = 1
MNT3ERR_NOENT = 2
MNT3ERR_IO = 5
MNT3ERR_ACCES = 13
MNT3ERR_NOTDIR = 20
MNT3ERR_INVAL = 22
MNT3ERR_NAMETOOLONG = 63
MNT3ERR_NOTSUPP = 10004
MNT3ERR_SERVERFAULT = 10006

MOUNTSTAT3 = frozenset(
    {
        MNT3_OK,
        MNT3ERR_PERM,
        MNT3ERR_NOENT,
        MNT3ERR_IO,
        MNT3ERR_ACCES,
        MNT3ERR_NOTDIR,
        MNT3ERR_INVAL,
        MNT3ERR_NAMETOOLONG,
        MNT3ERR_NOTSUPP,
        MNT3ERR_SERVERFAULT,
    }
)
"""Every mountstat3 value: anything else is not a valid encoding."""

MOUNTPROC3_NULL = 0
MOUNTPROC3_MNT = 1
MOUNTPROC3_DUMP = 2
MOUNTPROC3_UMNT = 3
MOUNTPROC3_UMNTALL = 4
MOUNTPROC3_EXPORT = 5


@dataclass(slots=True)
class mountres3_ok:
    """struct mountres3_ok { fhandle3 fhandle; int auth_flavors<>; };"""

    fhandle: bytes
    auth_flavors: list[int]


@dataclass(slots=True)
class mountres3:
    """union mountres3 switch (mountstat3 fhs_status) {
    case MNT3_OK: mountres3_ok mountinfo; default: void; };"""

    fhs_status: int
    mountinfo: mountres3_ok | None = None


@dataclass(slots=True)
class mountbody:
    """struct mountbody { name ml_hostname; dirpath ml_directory; mountlist ml_next; };
    typedef struct mountbody *mountlist;"""

    ml_hostname: bytes
    ml_directory: bytes


@dataclass(slots=True)
class exportnode:
    """struct exportnode { dirpath ex_dir; groups ex_groups; exports ex_next; };
    typedef struct exportnode *exports;

    ``ex_groups`` is the list of ``groupnode.gr_name``:
    struct groupnode { name gr_name; groups gr_next; }; typedef struct groupnode *groups;
    """

    ex_dir: bytes
    ex_groups: list[bytes]


class Mount3Packer(Packer):
    """Packs MOUNT v3 arguments and results."""

    def pack_dirpath(self, path: bytes) -> None:
        """typedef string dirpath<MNTPATHLEN>;"""
        self.pack_opaque_max(path, MNTPATHLEN)

    def pack_name(self, name: bytes) -> None:
        """typedef string name<MNTNAMLEN>;"""
        self.pack_opaque_max(name, MNTNAMLEN)

    def pack_fhandle3(self, fh: bytes) -> None:
        """typedef opaque fhandle3<FHSIZE3>;"""
        self.pack_opaque_max(fh, FHSIZE3)

    def pack_mountstat3(self, stat: int) -> None:
        self.pack_enum(stat)

    def pack_mountres3_ok(self, ok: mountres3_ok) -> None:
        self.pack_fhandle3(ok.fhandle)
        self.pack_array(ok.auth_flavors, self.pack_int)

    def pack_mountres3(self, res: mountres3) -> None:
        self.pack_enum(res.fhs_status)
        if res.fhs_status == MNT3_OK:
            if res.mountinfo is None:
                raise XdrError("mountres3: MNT3_OK without mountinfo")
            self.pack_mountres3_ok(res.mountinfo)

    def pack_mountbody(self, m: mountbody) -> None:
        self.pack_name(m.ml_hostname)
        self.pack_dirpath(m.ml_directory)

    def pack_mountlist(self, mounts: list[mountbody]) -> None:
        self.pack_list(mounts, self.pack_mountbody)

    def pack_groups(self, groups: list[bytes]) -> None:
        self.pack_list(groups, self.pack_name)

    def pack_exportnode(self, e: exportnode) -> None:
        self.pack_dirpath(e.ex_dir)
        self.pack_groups(e.ex_groups)

    def pack_exports(self, exports: list[exportnode]) -> None:
        self.pack_list(exports, self.pack_exportnode)


class Mount3Unpacker(Unpacker):
    """Unpacks MOUNT v3 arguments and results."""

    def unpack_dirpath(self) -> bytes:
        return self.unpack_opaque_max(MNTPATHLEN)

    def unpack_name(self) -> bytes:
        return self.unpack_opaque_max(MNTNAMLEN)

    def unpack_fhandle3(self) -> bytes:
        return self.unpack_opaque_max(FHSIZE3)

    def unpack_mountstat3(self) -> int:
        stat = self.unpack_enum()
        if stat not in MOUNTSTAT3:
            raise XdrError(f"unknown mountstat3 {stat}")
        return stat

    def unpack_mountres3_ok(self) -> mountres3_ok:
        return mountres3_ok(
            fhandle=self.unpack_fhandle3(), auth_flavors=self.unpack_array(self.unpack_int)
        )

    def unpack_mountres3(self) -> mountres3:
        stat = self.unpack_mountstat3()
        if stat == MNT3_OK:
            return mountres3(stat, self.unpack_mountres3_ok())
        return mountres3(stat)

    def unpack_mountbody(self) -> mountbody:
        return mountbody(ml_hostname=self.unpack_name(), ml_directory=self.unpack_dirpath())

    def unpack_mountlist(self) -> list[mountbody]:
        return self.unpack_list(self.unpack_mountbody)

    def unpack_groups(self) -> list[bytes]:
        return self.unpack_list(self.unpack_name)

    def unpack_exportnode(self) -> exportnode:
        return exportnode(ex_dir=self.unpack_dirpath(), ex_groups=self.unpack_groups())

    def unpack_exports(self) -> list[exportnode]:
        return self.unpack_list(self.unpack_exportnode)
