"""A sans-IO NFSv3 + MOUNT caller over the dispatcher, for protocol tests.

Each method packs the arguments with the xdr packers, runs one record
through ``Dispatcher.dispatch`` and unpacks the result, checking that the
whole reply was consumed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from exports import parse as parse_exports
from nfsd.programs import build_programs
from nfsd.programs.access import AccessControl
from nfsd.rpc import Dispatcher, settle
from tests.proto.calls import call, parse
from xdr import mount3, nfs3, rpc
from xdr.mount3 import Mount3Packer, Mount3Unpacker
from xdr.nfs3 import NFS3Packer, NFS3Unpacker

SECRET = b"k" * 32


# Everyone, any port, both flavours, no squashing: the tests of the procedures
# themselves; tests/proto/test_access.py passes lists of its own.
OPEN_EXPORTS = "/recover/images *(insecure,no_root_squash,sec=sys:none)\n"


def open_access(text: str = OPEN_EXPORTS) -> AccessControl:
    """An AccessControl over the exports ``text`` (not read from a file)."""
    return AccessControl(
        None, "/recover/images", Path("/nonexistent"), table=parse_exports(text, "<test>")
    )


class Caller:
    def __init__(
        self,
        namespace: Any,
        secret: bytes = SECRET,
        transport: str = "tcp",
        access: AccessControl | None = None,
        *,
        udp: bool = True,
    ) -> None:
        self.access = access or open_access()
        self.dispatcher = Dispatcher(build_programs(namespace, secret, self.access, udp=udp))
        self.transport = transport
        self.xid = 1
        self.released = 0

    def raw(self, record: bytes) -> bytes:
        reply = settle(self.dispatcher.dispatch(record, "127.0.0.1:900", self.transport), 30)
        assert reply is not None
        data = b"".join(bytes(p) for p in reply.parts)
        if reply.release:
            reply.release()
            self.released += 1
        return data

    def _call(self, prog: int, vers: int, proc: int, args: bytes) -> bytes:
        self.xid += 1
        reply = settle(
            self.dispatcher.dispatch(
                call(prog, vers, proc, args, xid=self.xid), "127.0.0.1:900", self.transport
            ),
            30,
        )
        assert reply is not None
        r = parse(reply.parts)
        if reply.release:
            reply.release()
            self.released += 1
        assert r.xid == self.xid
        assert (r.reply_stat, r.stat) == (rpc.MSG_ACCEPTED, rpc.SUCCESS), r
        return r.body

    def mount(self, path: bytes = b"/recover/images") -> mount3.mountres3:
        p = Mount3Packer()
        p.pack_dirpath(path)
        body = self._call(mount3.MOUNT_PROGRAM, 3, mount3.MOUNTPROC3_MNT, p.get_buffer())
        u = Mount3Unpacker(body)
        res = u.unpack_mountres3()
        u.done()
        return res

    def root(self) -> nfs3.nfs_fh3:
        res = self.mount()
        assert res.fhs_status == mount3.MNT3_OK and res.mountinfo
        return nfs3.nfs_fh3(res.mountinfo.fhandle)

    def nfs(self, proc: int, pack: Callable[[NFS3Packer], None], unpack: str) -> Any:
        p = NFS3Packer()
        pack(p)
        body = self._call(nfs3.NFS_PROGRAM, 3, proc, p.get_buffer())
        u = NFS3Unpacker(body)
        res = getattr(u, unpack)()
        u.done()
        return res

    def getattr(self, fh: nfs3.nfs_fh3) -> nfs3.GETATTR3res:
        return self.nfs(
            nfs3.NFSPROC3_GETATTR,
            lambda p: p.pack_GETATTR3args(nfs3.GETATTR3args(fh)),
            "unpack_GETATTR3res",
        )

    def lookup(self, fh: nfs3.nfs_fh3, name: bytes) -> nfs3.LOOKUP3res:
        return self.nfs(
            nfs3.NFSPROC3_LOOKUP,
            lambda p: p.pack_LOOKUP3args(nfs3.LOOKUP3args(nfs3.diropargs3(fh, name))),
            "unpack_LOOKUP3res",
        )

    def walk(self, *names: str) -> nfs3.nfs_fh3:
        fh = self.root()
        for n in names:
            res = self.lookup(fh, n.encode())
            assert res.status == nfs3.NFS3_OK, (n, res.status)
            fh = res.resok.object
        return fh

    def read(self, fh: nfs3.nfs_fh3, offset: int, count: int) -> nfs3.READ3res:
        return self.nfs(
            nfs3.NFSPROC3_READ,
            lambda p: p.pack_READ3args(nfs3.READ3args(fh, offset, count)),
            "unpack_READ3res",
        )

    def readdir(
        self, fh: nfs3.nfs_fh3, cookie: int = 0, count: int = 4096, verf: bytes = b"\0" * 8
    ) -> nfs3.READDIR3res:
        return self.nfs(
            nfs3.NFSPROC3_READDIR,
            lambda p: p.pack_READDIR3args(nfs3.READDIR3args(fh, cookie, verf, count)),
            "unpack_READDIR3res",
        )

    def readdirplus(
        self,
        fh: nfs3.nfs_fh3,
        cookie: int = 0,
        dircount: int = 4096,
        maxcount: int = 32768,
        verf: bytes = b"\0" * 8,
    ) -> nfs3.READDIRPLUS3res:
        return self.nfs(
            nfs3.NFSPROC3_READDIRPLUS,
            lambda p: p.pack_READDIRPLUS3args(
                nfs3.READDIRPLUS3args(fh, cookie, verf, dircount, maxcount)
            ),
            "unpack_READDIRPLUS3res",
        )
