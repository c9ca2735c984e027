"""A sans-IO caller for instant-recovery sessions: the dispatcher with sessions wired in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exports import parse as parse_exports
from instant.sessions import SessionInfo, SessionRegistry, create_session
from merge.namespace import Namespace
from nfsd.programs import build_programs
from nfsd.programs.access import AccessControl
from nfsd.programs.sessions import SessionManager
from nfsd.rpc import Dispatcher, WouldBlock, settle
from tests.proto.calls import call, parse, unchanged_sattr
from tests.proto.nfsclient import OPEN_EXPORTS, SECRET, Caller
from xdr import mount3, nfs3
from xdr.nfs3 import NFS3Packer


class SessionCaller(Caller):
    """A Caller whose server also serves the sessions of ``state``."""

    def __init__(self, base: Namespace, state: Path, peer: str = "127.0.0.1:900") -> None:
        access = AccessControl(
            None, "/recover/images", Path("/nonexistent"), table=parse_exports(OPEN_EXPORTS)
        )
        super().__init__(base, access=access)
        self.base = base
        self.registry = SessionRegistry(state)
        self.manager = SessionManager(self.registry, base, SECRET)
        self.dispatcher = Dispatcher(
            build_programs(base, SECRET, access, udp=True, sessions=self.manager)
        )
        self.peer = peer
        self.fixed_xid: int | None = None
        # How calls are served: None on a worker (the general path); True or False as
        # the transport's loop serves them first (inline: the fast path, never
        # waiting), the connection alone on it or not, then on a worker if that
        # raised WouldBlock.
        self.loop: bool | None = None

    def start(self, name: str, roots: dict, **kw: Any) -> SessionInfo:
        kw.setdefault("clients", "*(insecure)")
        return create_session(self.registry, self.base, name, roots, **kw)

    def _call(self, prog: int, vers: int, proc: int, args: bytes) -> bytes:
        r = self.send(prog, vers, proc, args)
        assert r is not None
        return r

    def send(self, prog: int, vers: int, proc: int, args: bytes) -> bytes | None:
        """One call; the reply body, or None when the server sent no reply."""
        if self.fixed_xid is None:
            self.xid += 1
        xid = self.fixed_xid or self.xid
        record = call(prog, vers, proc, args, xid=xid)
        if self.loop is None:
            reply = self.dispatcher.dispatch(record, self.peer, "tcp")
        else:
            try:
                reply = self.dispatcher.dispatch(record, self.peer, "tcp", True, alone=self.loop)
            except WouldBlock:  # as the loop does: the same record, on a worker
                reply = self.dispatcher.dispatch(record, self.peer, "tcp")
        reply = settle(reply, 30)
        if reply is None:
            return None
        r = parse(reply.parts)
        reply.free()
        assert r.xid == xid
        assert r.stat == 0, r
        return r.body

    def session_root(self, name: str) -> nfs3.nfs_fh3:
        res = self.mount(f"/recover/instant/{name}".encode())
        assert res.fhs_status == mount3.MNT3_OK, res.fhs_status
        assert res.mountinfo is not None
        return nfs3.nfs_fh3(res.mountinfo.fhandle)

    # -- the procedures that change ---------------------------------------------
    def create(
        self, d: nfs3.nfs_fh3, name: bytes, mode: int = nfs3.UNCHECKED, **kw: Any
    ) -> nfs3.CREATE3res:
        if mode == nfs3.EXCLUSIVE:
            how = nfs3.createhow3(mode, verf=kw.get("verf", b"v" * 8))
        else:
            how = nfs3.createhow3(mode, obj_attributes=kw.get("sattr", unchanged_sattr()))
        return self.nfs(
            nfs3.NFSPROC3_CREATE,
            lambda p: p.pack_CREATE3args(nfs3.CREATE3args(nfs3.diropargs3(d, name), how)),
            "unpack_CREATE3res",
        )

    def write(
        self, fh: nfs3.nfs_fh3, offset: int, data: bytes, stable: int = nfs3.UNSTABLE
    ) -> nfs3.WRITE3res:
        return self.nfs(
            nfs3.NFSPROC3_WRITE,
            lambda p: p.pack_WRITE3args(nfs3.WRITE3args(fh, offset, len(data), stable, data)),
            "unpack_WRITE3res",
        )

    def setattr(
        self, fh: nfs3.nfs_fh3, sattr: nfs3.sattr3, guard: nfs3.nfstime3 | None = None
    ) -> nfs3.SETATTR3res:
        g = nfs3.sattrguard3(guard is not None, guard)
        return self.nfs(
            nfs3.NFSPROC3_SETATTR,
            lambda p: p.pack_SETATTR3args(nfs3.SETATTR3args(fh, sattr, g)),
            "unpack_SETATTR3res",
        )

    def mkdir(self, d: nfs3.nfs_fh3, name: bytes) -> nfs3.MKDIR3res:
        return self.nfs(
            nfs3.NFSPROC3_MKDIR,
            lambda p: p.pack_MKDIR3args(
                nfs3.MKDIR3args(nfs3.diropargs3(d, name), unchanged_sattr())
            ),
            "unpack_MKDIR3res",
        )

    def symlink(self, d: nfs3.nfs_fh3, name: bytes, target: bytes) -> nfs3.SYMLINK3res:
        data = nfs3.symlinkdata3(unchanged_sattr(), target)
        return self.nfs(
            nfs3.NFSPROC3_SYMLINK,
            lambda p: p.pack_SYMLINK3args(nfs3.SYMLINK3args(nfs3.diropargs3(d, name), data)),
            "unpack_SYMLINK3res",
        )

    def readlink(self, fh: nfs3.nfs_fh3) -> nfs3.READLINK3res:
        return self.nfs(
            nfs3.NFSPROC3_READLINK,
            lambda p: p.pack_READLINK3args(nfs3.READLINK3args(fh)),
            "unpack_READLINK3res",
        )

    def remove(self, d: nfs3.nfs_fh3, name: bytes, proc: int = nfs3.NFSPROC3_REMOVE) -> Any:
        un = "unpack_REMOVE3res" if proc == nfs3.NFSPROC3_REMOVE else "unpack_RMDIR3res"
        return self.nfs(
            proc,
            lambda p: p.pack_REMOVE3args(nfs3.REMOVE3args(nfs3.diropargs3(d, name))),
            un,
        )

    def rename(
        self, fd: nfs3.nfs_fh3, fname: bytes, td: nfs3.nfs_fh3, tname: bytes
    ) -> nfs3.RENAME3res:
        return self.nfs(
            nfs3.NFSPROC3_RENAME,
            lambda p: p.pack_RENAME3args(
                nfs3.RENAME3args(nfs3.diropargs3(fd, fname), nfs3.diropargs3(td, tname))
            ),
            "unpack_RENAME3res",
        )

    def link(self, fh: nfs3.nfs_fh3, d: nfs3.nfs_fh3, name: bytes) -> nfs3.LINK3res:
        return self.nfs(
            nfs3.NFSPROC3_LINK,
            lambda p: p.pack_LINK3args(nfs3.LINK3args(fh, nfs3.diropargs3(d, name))),
            "unpack_LINK3res",
        )

    def mknod(self, d: nfs3.nfs_fh3, name: bytes, kind: int = nfs3.NF3FIFO) -> nfs3.MKNOD3res:
        if kind in (nfs3.NF3CHR, nfs3.NF3BLK):
            what = nfs3.mknoddata3(
                kind, device=nfs3.devicedata3(unchanged_sattr(), nfs3.specdata3(1, 3))
            )
        elif kind in (nfs3.NF3SOCK, nfs3.NF3FIFO):
            what = nfs3.mknoddata3(kind, pipe_attributes=unchanged_sattr())
        else:
            what = nfs3.mknoddata3(kind)
        return self.nfs(
            nfs3.NFSPROC3_MKNOD,
            lambda p: p.pack_MKNOD3args(nfs3.MKNOD3args(nfs3.diropargs3(d, name), what)),
            "unpack_MKNOD3res",
        )

    def commit(self, fh: nfs3.nfs_fh3) -> nfs3.COMMIT3res:
        return self.nfs(
            nfs3.NFSPROC3_COMMIT,
            lambda p: p.pack_COMMIT3args(nfs3.COMMIT3args(fh, 0, 0)),
            "unpack_COMMIT3res",
        )

    def access3(self, fh: nfs3.nfs_fh3, want: int = 0x3F) -> nfs3.ACCESS3res:
        return self.nfs(
            nfs3.NFSPROC3_ACCESS,
            lambda p: p.pack_ACCESS3args(nfs3.ACCESS3args(fh, want)),
            "unpack_ACCESS3res",
        )

    def fsstat(self, fh: nfs3.nfs_fh3) -> nfs3.FSSTAT3res:
        return self.nfs(
            nfs3.NFSPROC3_FSSTAT,
            lambda p: p.pack_FSSTAT3args(nfs3.FSSTAT3args(fh)),
            "unpack_FSSTAT3res",
        )

    def read_all(self, fh: nfs3.nfs_fh3, size: int) -> bytes:
        out = b""
        while len(out) < size:
            res = self.read(fh, len(out), min(1 << 20, size - len(out)))
            assert res.status == nfs3.NFS3_OK, res.status
            out += res.resok.data
            if res.resok.eof:
                break
        return out


def raw_nfs(c: SessionCaller, proc: int, pack: Any) -> bytes | None:
    """Send one NFS call packed by ``pack``; the reply body or None (dropped)."""
    p = NFS3Packer()
    pack(p)
    return c.send(nfs3.NFS_PROGRAM, 3, proc, p.get_buffer())
