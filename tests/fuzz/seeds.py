"""The fuzz corpus: real calls of every procedure, and a few hostile ones.

Each seed is an input of :mod:`tests.fuzz.harness` (a mode byte, then the
bytes a peer sends), built with the project's own client code
(``tests.proto.calls``, the ``xdr`` packers) and handles asked of the
server itself over the dispatcher, so that they resolve in the demo tree:
22 NFSv3 procedures, 6 MOUNT, portmap v2 and rpcbind v3/v4, the 22 NFSv3
procedures again on the harness's instant-recovery session (``nfs3s-``:
the changes a hypervisor makes, on its own copy of the folders), then
streams no honest client sends (``x-``; ``xs-`` on the session).
``tests/fuzz/corpus`` holds exactly these files; ``python -m
tests.fuzz.seeds`` writes them again after a change of format.
"""

from __future__ import annotations

import itertools
import struct
import sys
from collections.abc import Callable
from pathlib import Path

from tests.fuzz.harness import SESSION, Harness
from tests.proto.calls import auth_sys, call, unchanged_sattr
from xdr import mount3, nfs3
from xdr import portmap as pm
from xdr.mount3 import Mount3Packer
from xdr.nfs3 import NFS3Packer
from xdr.portmap import PortmapPacker
from xdr.rpc import AUTH_SYS, RpcPacker, opaque_auth

CORPUS = Path(__file__).parent / "corpus"
TCP, UDP, INLINE, BYTEWISE = 0x00, 0x01, 0x02, 0x10
LAST = 0x80000000

MERGED = ("latest", "web01", "web01-flat.vmdk")
PLAIN = ("2026-11-20T0100", "web01", "web01.vmx")
FOLDER = ("latest", "web01")


def framed(*records: bytes, mode: int = TCP) -> bytes:
    """A TCP input: each record as one last fragment."""
    return bytes([mode]) + b"".join(struct.pack(">I", LAST | len(r)) + r for r in records)


def fragments(record: bytes, *cuts: int) -> bytes:
    """One record sent as several fragments, cut at the offsets given."""
    bounds = [0, *cuts, len(record)]
    out = b""
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        last = LAST if i == len(bounds) - 2 else 0
        out += struct.pack(">I", last | (b - a)) + record[a:b]
    return out


def packed(pack: Callable[[NFS3Packer], None]) -> bytes:
    p = NFS3Packer()
    pack(p)
    return p.get_buffer()


def args3(name: str, value: object) -> bytes:
    """``value`` packed as the ``{name}3args`` of NFSv3."""
    return packed(lambda p: getattr(p, f"pack_{name}3args")(value))


def nfs_args(root: bytes, file: bytes, merged: bytes, folder: bytes) -> dict[int, bytes]:
    """Valid arguments of every NFSv3 procedure, on handles of the demo tree."""
    r, f, m, d = (nfs3.nfs_fh3(h) for h in (root, file, merged, folder))
    new = nfs3.diropargs3(r, b"new")
    latest = nfs3.diropargs3(r, b"latest")
    verf = b"\0" * 8
    return {
        nfs3.NFSPROC3_NULL: b"",
        nfs3.NFSPROC3_GETATTR: args3("GETATTR", nfs3.GETATTR3args(f)),
        nfs3.NFSPROC3_SETATTR: args3(
            "SETATTR", nfs3.SETATTR3args(f, unchanged_sattr(), nfs3.sattrguard3(False))
        ),
        nfs3.NFSPROC3_LOOKUP: args3("LOOKUP", nfs3.LOOKUP3args(latest)),
        nfs3.NFSPROC3_ACCESS: args3("ACCESS", nfs3.ACCESS3args(f, 0x3F)),
        nfs3.NFSPROC3_READLINK: args3("READLINK", nfs3.READLINK3args(f)),
        nfs3.NFSPROC3_READ: args3("READ", nfs3.READ3args(m, 1_048_000, 8192)),
        nfs3.NFSPROC3_WRITE: args3("WRITE", nfs3.WRITE3args(f, 0, 3, nfs3.FILE_SYNC, b"abc")),
        nfs3.NFSPROC3_CREATE: args3(
            "CREATE", nfs3.CREATE3args(new, nfs3.createhow3(nfs3.UNCHECKED, unchanged_sattr()))
        ),
        nfs3.NFSPROC3_MKDIR: args3("MKDIR", nfs3.MKDIR3args(new, unchanged_sattr())),
        nfs3.NFSPROC3_SYMLINK: args3(
            "SYMLINK", nfs3.SYMLINK3args(new, nfs3.symlinkdata3(unchanged_sattr(), b"/etc/passwd"))
        ),
        nfs3.NFSPROC3_MKNOD: args3(
            "MKNOD",
            nfs3.MKNOD3args(new, nfs3.mknoddata3(nfs3.NF3FIFO, pipe_attributes=unchanged_sattr())),
        ),
        nfs3.NFSPROC3_REMOVE: args3("REMOVE", nfs3.REMOVE3args(latest)),
        nfs3.NFSPROC3_RMDIR: args3("RMDIR", nfs3.RMDIR3args(nfs3.diropargs3(r, b"problems"))),
        nfs3.NFSPROC3_RENAME: args3("RENAME", nfs3.RENAME3args(latest, nfs3.diropargs3(r, b"old"))),
        nfs3.NFSPROC3_LINK: args3("LINK", nfs3.LINK3args(f, new)),
        nfs3.NFSPROC3_READDIR: args3("READDIR", nfs3.READDIR3args(r, 0, verf, 4096)),
        nfs3.NFSPROC3_READDIRPLUS: args3(
            "READDIRPLUS", nfs3.READDIRPLUS3args(d, 0, verf, 1024, 8192)
        ),
        nfs3.NFSPROC3_FSSTAT: args3("FSSTAT", nfs3.FSSTAT3args(r)),
        nfs3.NFSPROC3_FSINFO: args3("FSINFO", nfs3.FSINFO3args(r)),
        nfs3.NFSPROC3_PATHCONF: args3("PATHCONF", nfs3.PATHCONF3args(r)),
        nfs3.NFSPROC3_COMMIT: args3("COMMIT", nfs3.COMMIT3args(f, 0, 0)),
    }


def _dirpath(path: bytes) -> bytes:
    p = Mount3Packer()
    p.pack_dirpath(path)
    return p.get_buffer()


def _mapping(prog: int, vers: int, port: int = 0) -> bytes:
    p = PortmapPacker()
    p.pack_mapping(pm.mapping(prog, vers, pm.IPPROTO_TCP, port))
    return p.get_buffer()


def _rpcb(prog: int, vers: int, netid: bytes, addr: bytes = b"") -> bytes:
    p = PortmapPacker()
    p.pack_rpcb(pm.rpcb(prog, vers, netid, addr, b"fuzz"))
    return p.get_buffer()


def sys_cred(machinename: bytes = b"test", gids: int = 0) -> opaque_auth:
    """An AUTH_SYS credential packed by hand: it may break the RFC's bounds."""
    p = RpcPacker()
    p.pack_uint(0)
    p.pack_opaque(machinename)
    p.pack_uint(0)
    p.pack_uint(0)
    p.pack_array(list(range(gids)), p.pack_uint)
    return opaque_auth(AUTH_SYS, p.get_buffer())


def _raw_header(xid: int, prog: int, vers: int, proc: int, cred_len: int) -> bytes:
    """A call header whose credential length says ``cred_len``, with 8 bytes of body."""
    return struct.pack(">IIIIIIII", xid, 0, 2, prog, vers, proc, AUTH_SYS, cred_len) + b"\0" * 8


def seeds(h: Harness) -> dict[str, bytes]:
    """Every seed of the corpus, by file name."""
    c = h.caller
    root = c.root().data
    file = c.walk(*PLAIN).data
    merged = c.walk(*MERGED).data
    folder = c.walk(*FOLDER).data
    out: dict[str, bytes] = {}
    names = {
        v: k[len("NFSPROC3_") :].lower() for k, v in vars(nfs3).items() if k[:9] == "NFSPROC3_"
    }
    for proc, args in nfs_args(root, file, merged, folder).items():
        out[f"nfs3-{proc:02d}-{names[proc]}"] = framed(call(nfs3.NFS_PROGRAM, 3, proc, args))

    mnt = mount3.MOUNT_PROGRAM
    export = _dirpath(b"/recover/images")
    for proc, name, args in (
        (mount3.MOUNTPROC3_NULL, "null", b""),
        (mount3.MOUNTPROC3_MNT, "mnt", export),
        (mount3.MOUNTPROC3_DUMP, "dump", b""),
        (mount3.MOUNTPROC3_UMNT, "umnt", export),
        (mount3.MOUNTPROC3_UMNTALL, "umntall", b""),
        (mount3.MOUNTPROC3_EXPORT, "export", b""),
    ):
        out[f"mount3-{proc}-{name}"] = framed(call(mnt, 3, proc, args))

    own = _mapping(nfs3.NFS_PROGRAM, 3)
    for vers, proc, name, args in (
        (2, pm.PMAPPROC_NULL, "null", b""),
        (2, pm.PMAPPROC_SET, "set", _mapping(400100, 1, 4000)),
        (2, pm.PMAPPROC_UNSET, "unset", _mapping(400100, 1)),
        (2, pm.PMAPPROC_GETPORT, "getport", own),
        (2, pm.PMAPPROC_DUMP, "dump", b""),
        (2, pm.PMAPPROC_CALLIT, "callit", own + b"\0\0\0\0"),
        (3, pm.RPCBPROC_NULL, "null", b""),
        (3, pm.RPCBPROC_SET, "set", _rpcb(400100, 1, b"tcp", b"127.0.0.1.15.160")),
        (3, pm.RPCBPROC_UNSET, "unset", _rpcb(400100, 1, b"tcp")),
        (3, pm.RPCBPROC_GETADDR, "getaddr", _rpcb(nfs3.NFS_PROGRAM, 3, b"tcp")),
        (3, pm.RPCBPROC_DUMP, "dump", b""),
        (3, pm.RPCBPROC_GETTIME, "gettime", b""),
        (4, pm.RPCBPROC_GETADDR, "getaddr", _rpcb(nfs3.NFS_PROGRAM, 3, b"tcp6", b"::1.8.1")),
        (4, pm.RPCBPROC_GETVERSADDR, "getversaddr", _rpcb(mnt, 3, b"udp")),
        (4, pm.RPCBPROC_GETADDRLIST, "getaddrlist", _rpcb(mnt, 3, b"tcp")),
    ):
        mode = UDP if proc == pm.PMAPPROC_DUMP else TCP
        record = call(pm.PMAP_PROG, vers, proc, args)
        out[f"portmap{vers}-{proc}-{name}"] = (
            bytes([mode]) + record if mode == UDP else framed(record)
        )

    out.update(_hostile(root, merged))
    out.update(_session(h, names))
    return out


def session_args(root: bytes, folder: bytes, file: bytes, merged: bytes) -> dict[int, bytes]:
    """Valid arguments of every NFSv3 procedure on the session: its root, its copy
    of ``latest/web01`` (``folder``), a plain file and the merged image in it."""
    r, d, f, m = (nfs3.nfs_fh3(h) for h in (root, folder, file, merged))
    verf = b"\0" * 8
    size = nfs3.sattr3(
        nfs3.set_mode3(False), nfs3.set_uid3(False), nfs3.set_gid3(False),
        nfs3.set_size3(True, 1 << 20), nfs3.set_atime(nfs3.DONT_CHANGE),
        nfs3.set_mtime(nfs3.DONT_CHANGE),
    )  # fmt: skip
    # READDIRPLUS of the folder, FSSTAT, FSINFO and PATHCONF of the root, COMMIT
    # of the merged image: as the read-only export's; the rest are the session's own
    return nfs_args(root, merged, merged, folder) | {
        nfs3.NFSPROC3_GETATTR: args3("GETATTR", nfs3.GETATTR3args(m)),
        nfs3.NFSPROC3_SETATTR: args3(
            "SETATTR", nfs3.SETATTR3args(f, size, nfs3.sattrguard3(False))
        ),
        nfs3.NFSPROC3_LOOKUP: args3(
            "LOOKUP", nfs3.LOOKUP3args(nfs3.diropargs3(d, b"web01-flat.vmdk"))
        ),
        nfs3.NFSPROC3_ACCESS: args3("ACCESS", nfs3.ACCESS3args(m, 0x3F)),
        nfs3.NFSPROC3_READLINK: args3("READLINK", nfs3.READLINK3args(f)),
        nfs3.NFSPROC3_READ: args3("READ", nfs3.READ3args(m, 4096, 65536)),
        nfs3.NFSPROC3_WRITE: args3(
            "WRITE", nfs3.WRITE3args(m, 8192, 4096, nfs3.FILE_SYNC, b"\xa5" * 4096)
        ),
        nfs3.NFSPROC3_CREATE: args3(
            "CREATE",
            nfs3.CREATE3args(
                nfs3.diropargs3(d, b"web01.vmx.lck"),
                nfs3.createhow3(nfs3.EXCLUSIVE, verf=b"8bytes!!"),
            ),
        ),
        nfs3.NFSPROC3_MKDIR: args3(
            "MKDIR", nfs3.MKDIR3args(nfs3.diropargs3(r, b"web01-snap"), unchanged_sattr())
        ),
        nfs3.NFSPROC3_SYMLINK: args3(
            "SYMLINK",
            nfs3.SYMLINK3args(
                nfs3.diropargs3(d, b"ln"), nfs3.symlinkdata3(unchanged_sattr(), b"web01.vmx")
            ),
        ),
        nfs3.NFSPROC3_MKNOD: args3(
            "MKNOD",
            nfs3.MKNOD3args(
                nfs3.diropargs3(d, b"fifo"),
                nfs3.mknoddata3(nfs3.NF3FIFO, pipe_attributes=unchanged_sattr()),
            ),
        ),
        nfs3.NFSPROC3_REMOVE: args3("REMOVE", nfs3.REMOVE3args(nfs3.diropargs3(d, b"web01.vmdk"))),
        nfs3.NFSPROC3_RMDIR: args3("RMDIR", nfs3.RMDIR3args(nfs3.diropargs3(r, b"web01-snap"))),
        nfs3.NFSPROC3_RENAME: args3(
            "RENAME",
            nfs3.RENAME3args(nfs3.diropargs3(d, b"web01.vmx"), nfs3.diropargs3(r, b"web01.vmx~")),
        ),
        nfs3.NFSPROC3_LINK: args3("LINK", nfs3.LINK3args(f, nfs3.diropargs3(d, b"hard"))),
        nfs3.NFSPROC3_READDIR: args3("READDIR", nfs3.READDIR3args(d, 0, verf, 4096)),
    }


def _session(h: Harness, names: dict[int, str]) -> dict[str, bytes]:
    """The session's seeds: every procedure, then what no honest client sends."""
    c = h.caller
    export = f"/recover/instant/{SESSION}".encode()
    res = c.mount(export)
    assert res.fhs_status == mount3.MNT3_OK and res.mountinfo is not None
    root = nfs3.nfs_fh3(res.mountinfo.fhandle)

    def look(d: nfs3.nfs_fh3, name: bytes) -> nfs3.nfs_fh3:
        found = c.lookup(d, name)
        assert found.status == nfs3.NFS3_OK, (name, found.status)
        return found.resok.object

    folder = look(root, b"web01")
    file, merged = look(folder, b"web01.vmx"), look(folder, b"web01-flat.vmdk")
    out: dict[str, bytes] = {}
    args = session_args(root.data, folder.data, file.data, merged.data)
    for proc, body in args.items():
        out[f"nfs3s-{proc:02d}-{names[proc]}"] = framed(call(nfs3.NFS_PROGRAM, 3, proc, body))
    m = merged
    forged = bytes([*m.data[:4], m.data[4] ^ 1, *m.data[5:]])  # the key's first byte

    def nfs(proc: int, body: bytes, xid: int = 1) -> bytes:
        return call(nfs3.NFS_PROGRAM, 3, proc, body, xid=xid)

    def write(offset: int, count: int, data: bytes, fh: nfs3.nfs_fh3 = m) -> bytes:
        return nfs(
            nfs3.NFSPROC3_WRITE,
            args3("WRITE", nfs3.WRITE3args(fh, offset, count, nfs3.FILE_SYNC, data)),
            xid=offset % 997 + 1,
        )

    def mnt(path: bytes) -> bytes:
        return framed(call(mount3.MOUNT_PROGRAM, 3, mount3.MOUNTPROC3_MNT, _dirpath(path)))

    huge = nfs3.sattr3(
        nfs3.set_mode3(False),
        nfs3.set_uid3(False),
        nfs3.set_gid3(False),
        nfs3.set_size3(True, 2**64 - 1),
        nfs3.set_atime(nfs3.DONT_CHANGE),
        nfs3.set_mtime(nfs3.DONT_CHANGE),
    )
    create = args[nfs3.NFSPROC3_CREATE]
    into_itself = nfs3.RENAME3args(
        nfs3.diropargs3(root, b"web01"), nfs3.diropargs3(folder, b"inside")
    )
    far = nfs3.SYMLINK3args(
        nfs3.diropargs3(folder, b"far"), nfs3.symlinkdata3(unchanged_sattr(), b"../" * 400)
    )
    out.update(
        {
            "xs-mount": mnt(export),
            "xs-mount-no-such-session": mnt(export + b"-gone"),
            "xs-mount-dotdot": mnt(export + b"/web01/../../../images"),
            "xs-write-at-2-64": framed(write(2**64 - 4096, 4096, b"\0" * 4096)),
            "xs-write-count-not-length": framed(write(0, 1 << 20, b"x" * 16)),
            "xs-write-32k-udp": bytes([UDP]) + write(1 << 30, 1 << 15, b"\x5a" * (1 << 15)),
            "xs-write-forged-key": framed(write(0, 4, b"evil", nfs3.nfs_fh3(forged))),
            "xs-setattr-size-2-64": framed(
                nfs(
                    nfs3.NFSPROC3_SETATTR,
                    args3("SETATTR", nfs3.SETATTR3args(m, huge, nfs3.sattrguard3(False))),
                )
            ),
            "xs-create-exclusive-twice": framed(
                nfs(nfs3.NFSPROC3_CREATE, create, xid=7),
                nfs(nfs3.NFSPROC3_CREATE, create, xid=7),
                nfs(nfs3.NFSPROC3_CREATE, create.replace(b"8bytes!!", b"another!"), xid=8),
            ),
            "xs-rename-into-itself": framed(
                nfs(nfs3.NFSPROC3_RENAME, args3("RENAME", into_itself))
            ),
            "xs-symlink-long-target": framed(nfs(nfs3.NFSPROC3_SYMLINK, args3("SYMLINK", far))),
        }
    )
    return out


def _hostile(root: bytes, merged: bytes) -> dict[str, bytes]:
    """Streams no honest client sends (see tests/proto/test_hostile_calls.py)."""
    nfs = nfs3.NFS_PROGRAM
    read = nfs_args(root, merged, merged, root)[nfs3.NFSPROC3_READ]
    read_call = call(nfs, 3, nfs3.NFSPROC3_READ, read)
    flipped = bytes([merged[0], merged[1], merged[2] ^ 4, *merged[3:]])
    far = packed(
        lambda p: p.pack_READ3args(nfs3.READ3args(nfs3.nfs_fh3(merged), 2**64 - 1, 2**32 - 1))
    )
    return {
        "x-read-in-3-fragments": bytes([TCP]) + fragments(read_call, 7, 40),
        "x-read-bytewise-inline": framed(read_call, mode=BYTEWISE | INLINE),
        "x-read-udp": bytes([UDP]) + read_call,
        "x-two-calls-one-stream": framed(
            call(nfs, 3, 0, xid=1),
            call(nfs, 3, nfs3.NFSPROC3_FSINFO, read[: 4 + len(merged)], xid=2),
        ),
        "x-zero-fragments": bytes([TCP]) + b"\0\0\0\0" * 64 + fragments(call(nfs, 3, 0), 0),
        "x-marker-7fffffff": bytes([TCP]) + b"\x7f\xff\xff\xff" + read_call,
        "x-read-far-offset": framed(call(nfs, 3, nfs3.NFSPROC3_READ, far)),
        "x-handle-bit-flipped": framed(
            call(
                nfs,
                3,
                nfs3.NFSPROC3_GETATTR,
                packed(lambda p: p.pack_nfs_fh3(nfs3.nfs_fh3(flipped))),
            )
        ),
        "x-trailing-garbage": framed(call(nfs, 3, nfs3.NFSPROC3_READ, read + b"junk")),
        "x-cred-17-gids": framed(call(nfs, 3, 0, cred=sys_cred(gids=17))),
        "x-cred-long-machinename": framed(call(nfs, 3, 0, cred=sys_cred(machinename=b"m" * 256))),
        "x-cred-length-ffffffff": framed(_raw_header(9, nfs, 3, 1, 0xFFFFFFFF)),
        "x-mnt-dotdot": framed(
            call(
                mount3.MOUNT_PROGRAM, 3, 1, _dirpath(b"/recover/images/../../etc"), cred=auth_sys()
            )
        ),
        "x-lookup-dotdot": framed(
            call(
                nfs,
                3,
                nfs3.NFSPROC3_LOOKUP,
                packed(
                    lambda p: p.pack_LOOKUP3args(
                        nfs3.LOOKUP3args(nfs3.diropargs3(nfs3.nfs_fh3(root), b".."))
                    )
                ),
            )
        ),
        "x-readdirplus-count-0": framed(
            call(
                nfs,
                3,
                nfs3.NFSPROC3_READDIRPLUS,
                packed(
                    lambda p: p.pack_READDIRPLUS3args(
                        nfs3.READDIRPLUS3args(nfs3.nfs_fh3(root), 2**63, b"\xff" * 8, 0, 0)
                    )
                ),
            )
        ),
    }


def write_corpus(folder: Path = CORPUS) -> int:
    """Write the seeds into ``folder`` (removing the files no seed names)."""
    folder.mkdir(parents=True, exist_ok=True)
    wanted = seeds(Harness())
    for old in folder.iterdir():
        if old.name not in wanted:
            old.unlink()
    for name, data in wanted.items():
        (folder / name).write_bytes(data)
    return len(wanted)


if __name__ == "__main__":
    print(f"{write_corpus()} seeds in {CORPUS}", file=sys.stderr)
