"""Access control through the dispatcher: who may mount, who may call, as whom.

Every case runs a real exports list through ``nfsd.programs.access`` and the real
programs; peers are the ``host:port`` strings the transport hands in.
"""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import pytest

from nfsd.programs.access import AccessControl
from nfsd.programs.mountd import UDP_DUMP_MAX
from nfsd.programs.portmap import build_portmap
from nfsd.rpc import Dispatcher
from tests.proto.calls import auth_sys, call, parse
from tests.proto.fakens import FakeNamespace
from tests.proto.nfsclient import Caller, open_access
from xdr import mount3, nfs3, portmap, rpc
from xdr.mount3 import Mount3Packer, Mount3Unpacker
from xdr.nfs3 import NFS3Packer, NFS3Unpacker
from xdr.rpc import AUTH_NONE, opaque_auth

ALLOWED = "10.0.0.2"
STRANGER = "10.0.0.3"
SECRET_BYTES = b"top secret bytes"


class ModedNamespace(FakeNamespace):
    """A fake tree whose file "private" is mode 0400 owned by uid 1000."""

    def _attrs(self, path):  # type: ignore[no-untyped-def]
        a = super()._attrs(path)
        if path == ("private",):
            return dataclasses.replace(a, mode=0o400, uid=1000, gid=1000)
        if path == ("rootonly",):
            return dataclasses.replace(a, mode=0o400, uid=0, gid=0)
        return a


@pytest.fixture(scope="module")
def ns():  # type: ignore[no-untyped-def]
    n = ModedNamespace(
        {("f",): SECRET_BYTES, ("d",): None, ("private",): b"p" * 10, ("rootonly",): b"r" * 10}
    )
    yield n
    n.close()


class Peer:
    """Calls from one ``host:port`` with one credential, through one dispatcher."""

    def __init__(self, d: Dispatcher, peer: str, cred: opaque_auth | None = None) -> None:
        self.d, self.peer, self.cred = d, peer, cred or auth_sys()
        self.xid = 100

    def raw(self, prog: int, proc: int, args: bytes, transport: str = "tcp"):  # type: ignore[no-untyped-def]
        self.xid += 1
        record = call(prog, 3, proc, args, xid=self.xid, cred=self.cred)
        reply = self.d.dispatch(record, self.peer, transport)
        if reply is None:
            return None
        r = parse(reply.parts)
        reply.free()
        return r

    def mnt(self, path: bytes = b"/recover/images") -> mount3.mountres3:
        p = Mount3Packer()
        p.pack_dirpath(path)
        r = self.raw(mount3.MOUNT_PROGRAM, mount3.MOUNTPROC3_MNT, p.get_buffer())
        assert r.stat == rpc.SUCCESS
        return Mount3Unpacker(r.body).unpack_mountres3()

    def nfs(self, proc: int, fh: bytes, extra: bytes = b"") -> bytes:
        """The raw result body (status first) of an NFS call on handle ``fh``."""
        p = NFS3Packer()
        p.pack_nfs_fh3(nfs3.nfs_fh3(fh))
        r = self.raw(nfs3.NFS_PROGRAM, proc, p.get_buffer() + extra)
        assert r.stat == rpc.SUCCESS, r
        return r.body


def status(body: bytes) -> int:
    return struct.unpack(">I", body[:4])[0]


def build(ns, text: str, *, udp: bool = False):  # type: ignore[no-untyped-def]
    c = Caller(ns, access=open_access(text), udp=udp)
    return c.dispatcher, c.access


READ_ARGS = struct.pack(">QI", 0, 4096)
EXPORTS = f"/recover/images {ALLOWED}(insecure) 192.168.0.0/16(secure)\n"


def test_mnt_allowed_refused_and_flavours(ns) -> None:
    d, _ = build(ns, EXPORTS)
    ok = Peer(d, f"{ALLOWED}:40000").mnt()
    assert ok.fhs_status == mount3.MNT3_OK
    assert ok.mountinfo.auth_flavors == [rpc.AUTH_SYS]  # sec=sys only: never AUTH_NONE listed
    assert Peer(d, f"{STRANGER}:700").mnt().fhs_status == mount3.MNT3ERR_ACCES
    # secure: a port of 1024 or more is refused, a reserved one admitted
    assert Peer(d, "192.168.1.1:1024").mnt().fhs_status == mount3.MNT3ERR_ACCES
    assert Peer(d, "192.168.1.1:1023").mnt().fhs_status == mount3.MNT3_OK
    # a stranger learns nothing of paths: a missing path is ACCES too, not NOENT
    assert Peer(d, f"{STRANGER}:700").mnt(b"/recover/images/nope").fhs_status == (
        mount3.MNT3ERR_ACCES
    )


def test_v4_mapped_peer_is_the_v4_client(ns) -> None:
    d, _ = build(ns, EXPORTS)
    assert Peer(d, f"::ffff:{ALLOWED}:40000").mnt().fhs_status == mount3.MNT3_OK


def test_copied_handle_gets_nothing(ns) -> None:
    d, _ = build(ns, EXPORTS)
    root = Peer(d, f"{ALLOWED}:40000").mnt().mountinfo.fhandle
    friend = Peer(d, f"{ALLOWED}:40000")
    lk = friend.nfs(nfs3.NFSPROC3_LOOKUP, root, struct.pack(">I", 1) + b"f\0\0\0")
    assert status(lk) == nfs3.NFS3_OK
    fh = NFS3Unpacker(lk).unpack_LOOKUP3res().resok.object.data
    assert SECRET_BYTES in friend.nfs(nfs3.NFSPROC3_READ, fh, READ_ARGS)

    thief = Peer(d, f"{STRANGER}:700")
    for proc, handle, extra in [
        (nfs3.NFSPROC3_GETATTR, fh, b""),
        (nfs3.NFSPROC3_READ, fh, READ_ARGS),
        (nfs3.NFSPROC3_LOOKUP, root, struct.pack(">I", 1) + b"f\0\0\0"),
        (nfs3.NFSPROC3_ACCESS, fh, struct.pack(">I", 0x3F)),
        (nfs3.NFSPROC3_READDIR, root, bytes(16) + struct.pack(">I", 4096)),
        (nfs3.NFSPROC3_READDIRPLUS, root, bytes(16) + struct.pack(">II", 4096, 4096)),
        (nfs3.NFSPROC3_FSSTAT, root, b""),
        (nfs3.NFSPROC3_FSINFO, root, b""),
        (nfs3.NFSPROC3_PATHCONF, root, b""),
    ]:
        body = thief.nfs(proc, handle, extra)
        assert status(body) == nfs3.NFS3ERR_STALE, proc
        # the status and the failure body's "no attributes" words, nothing else
        assert body[4:] == bytes(len(body) - 4), proc
        assert len(body) <= 4 + 8, proc


def test_port_and_flavour_refusals_per_call(ns) -> None:
    d, _ = build(ns, EXPORTS)
    root = Peer(d, "192.168.1.1:1000").mnt().mountinfo.fhandle
    assert status(Peer(d, "192.168.1.1:1000").nfs(nfs3.NFSPROC3_GETATTR, root)) == nfs3.NFS3_OK
    assert status(Peer(d, "192.168.1.1:5000").nfs(nfs3.NFSPROC3_GETATTR, root)) == (
        nfs3.NFS3ERR_PERM
    )
    anon = Peer(d, "192.168.1.1:1000", opaque_auth(AUTH_NONE, b""))
    assert status(anon.nfs(nfs3.NFSPROC3_GETATTR, root)) == nfs3.NFS3ERR_ACCES
    assert anon.mnt().fhs_status == mount3.MNT3ERR_ACCES


def test_null_is_never_checked(ns) -> None:
    d, _ = build(ns, EXPORTS)
    r = Peer(d, f"{STRANGER}:5000").raw(nfs3.NFS_PROGRAM, nfs3.NFSPROC3_NULL, b"")
    assert r.stat == rpc.SUCCESS and r.body == b""


def _read_status(d: Dispatcher, peer: str, uid: int, name: bytes, gid: int = 0) -> int:
    p = Peer(d, peer, auth_sys(uid, gid))
    root = Peer(d, peer).mnt().mountinfo.fhandle
    lk = p.nfs(nfs3.NFSPROC3_LOOKUP, root, struct.pack(">I", len(name)) + name.ljust(8, b"\0"))
    fh = NFS3Unpacker(lk).unpack_LOOKUP3res().resok.object.data
    return status(p.nfs(nfs3.NFSPROC3_READ, fh, READ_ARGS))


def test_squash_decides_the_permission_checks(ns) -> None:
    peer = f"{ALLOWED}:40000"
    # root_squash (the default): root becomes nobody, and a 0400 root file is closed to it
    d, _ = build(ns, f"/recover/images {ALLOWED}(insecure)\n")
    assert _read_status(d, peer, 0, b"rootonly") == nfs3.NFS3ERR_ACCES
    assert _read_status(d, peer, 1000, b"private", 1000) == nfs3.NFS3_OK  # the owner
    assert _read_status(d, peer, 1001, b"private", 1001) == nfs3.NFS3ERR_ACCES
    # no_root_squash: root reads anything
    d, _ = build(ns, f"/recover/images {ALLOWED}(insecure,no_root_squash)\n")
    assert _read_status(d, peer, 0, b"rootonly") == nfs3.NFS3_OK
    # all_squash with anonuid: everyone is that user, the owner included
    d, _ = build(ns, f"/recover/images {ALLOWED}(insecure,all_squash)\n")
    assert _read_status(d, peer, 1000, b"private", 1000) == nfs3.NFS3ERR_ACCES
    d, _ = build(ns, f"/recover/images {ALLOWED}(insecure,all_squash,anonuid=1000)\n")
    assert _read_status(d, peer, 5, b"private", 5) == nfs3.NFS3_OK


def test_access_grants_by_squashed_credentials(ns) -> None:
    peer = f"{ALLOWED}:40000"
    d, _ = build(ns, f"/recover/images {ALLOWED}(insecure)\n")
    p = Peer(d, peer, auth_sys(0, 0))
    root = p.mnt().mountinfo.fhandle
    lk = p.nfs(nfs3.NFSPROC3_LOOKUP, root, struct.pack(">I", 8) + b"rootonly")
    fh = NFS3Unpacker(lk).unpack_LOOKUP3res().resok.object.data
    res = NFS3Unpacker(p.nfs(nfs3.NFSPROC3_ACCESS, fh, struct.pack(">I", 0x3F))).unpack_ACCESS3res()
    assert res.status == nfs3.NFS3_OK and res.resok.access == 0
    d, _ = build(ns, f"/recover/images {ALLOWED}(insecure,no_root_squash)\n")
    p = Peer(d, peer, auth_sys(0, 0))
    res = NFS3Unpacker(p.nfs(nfs3.NFSPROC3_ACCESS, fh, struct.pack(">I", 0x3F))).unpack_ACCESS3res()
    assert res.resok.access == nfs3.ACCESS3_READ  # never MODIFY, EXTEND or DELETE


def test_reload_revokes_and_a_bad_file_keeps_the_old_list(ns, tmp_path: Path) -> None:
    f = tmp_path / "exports"
    f.write_text(f"/recover/images {ALLOWED}(insecure)\n")
    access = AccessControl(f, "/recover/images", tmp_path)
    d = Caller(ns, access=access).dispatcher
    p = Peer(d, f"{ALLOWED}:40000")
    root = p.mnt().mountinfo.fhandle
    assert status(p.nfs(nfs3.NFSPROC3_GETATTR, root)) == nfs3.NFS3_OK
    f.write_text(f"/recover/images {STRANGER}(insecure)\n")
    assert access.reload() is None
    assert status(p.nfs(nfs3.NFSPROC3_GETATTR, root)) == nfs3.NFS3ERR_STALE
    assert status(Peer(d, f"{STRANGER}:40000").nfs(nfs3.NFSPROC3_GETATTR, root)) == nfs3.NFS3_OK
    f.write_text(f"/recover/images {ALLOWED}(insecure,bogus_option)\n")
    why = access.reload()
    assert why is not None and f"{f}:1" in why
    assert status(Peer(d, f"{STRANGER}:40000").nfs(nfs3.NFSPROC3_GETATTR, root)) == nfs3.NFS3_OK
    assert status(p.nfs(nfs3.NFSPROC3_GETATTR, root)) == nfs3.NFS3ERR_STALE


def test_an_export_path_not_served_is_an_error(tmp_path: Path) -> None:
    from exports import ExportsError

    f = tmp_path / "exports"
    f.write_text("/srv/other 10.0.0.1(ro)\n")
    with pytest.raises(ExportsError, match=f"{f}:1"):
        AccessControl(f, "/recover/images", tmp_path)


def test_export_and_dump_only_to_admitted_hosts(ns) -> None:
    d, _ = build(ns, EXPORTS)
    friend = Peer(d, f"{ALLOWED}:40000")
    friend.mnt()
    for proc, unpack in [
        (mount3.MOUNTPROC3_EXPORT, "unpack_exports"),
        (mount3.MOUNTPROC3_DUMP, "unpack_mountlist"),
    ]:
        for transport in ("tcp", "udp"):
            mine = getattr(
                Mount3Unpacker(friend.raw(mount3.MOUNT_PROGRAM, proc, b"", transport).body), unpack
            )()
            theirs = getattr(
                Mount3Unpacker(
                    Peer(d, f"{STRANGER}:700").raw(mount3.MOUNT_PROGRAM, proc, b"", transport).body
                ),
                unpack,
            )()
            assert mine and theirs == []
    exports = Mount3Unpacker(
        friend.raw(mount3.MOUNT_PROGRAM, mount3.MOUNTPROC3_EXPORT, b"").body
    ).unpack_exports()
    assert exports[0].ex_dir == b"/recover/images"
    assert exports[0].ex_groups == [ALLOWED.encode(), b"192.168.0.0/16"]


def test_dump_over_udp_is_bounded_and_spellings_are_one_entry(ns) -> None:
    """A forged-source DUMP over UDP reflected the whole list (60 bytes drew
    60 KB); over UDP it stops at UDP_DUMP_MAX bytes, over TCP it is whole."""
    d, _ = build(ns, "/recover/images 10.0.0.0/16(insecure)\n")
    for i in range(200):
        Peer(d, f"10.0.{i // 250}.{i % 250 + 1}:700").mnt()
    friend = Peer(d, "10.0.0.1:700")
    for spelling in (b"/recover/images/", b"//recover//images", b"/recover/images/d/"):
        friend.mnt(spelling)
    dump = mount3.MOUNTPROC3_DUMP
    whole = Mount3Unpacker(friend.raw(mount3.MOUNT_PROGRAM, dump, b"").body).unpack_mountlist()
    assert len(whole) == 201  # 200 hosts' /recover/images, and 10.0.0.1's /recover/images/d
    assert {m.ml_directory for m in whole} == {b"/recover/images", b"/recover/images/d"}
    udp = friend.raw(mount3.MOUNT_PROGRAM, dump, b"", "udp")
    assert 0 < len(Mount3Unpacker(udp.body).unpack_mountlist()) < len(whole)
    assert len(udp.body) <= UDP_DUMP_MAX + 4


def test_export_over_udp_is_bounded(ns) -> None:
    """A forged-source EXPORT over UDP reflected every client group (11.5 KB
    for a 60-byte call with 400 groups); over UDP the list stops at
    UDP_DUMP_MAX bytes, whole groups in order, and over TCP it is whole."""
    groups = [f"10.{i // 250}.{i % 250}.0/24" for i in range(400)]
    d, _ = build(ns, "/recover/images " + " ".join(f"{g}(insecure)" for g in groups) + "\n")
    friend = Peer(d, "10.0.0.1:700")
    export = mount3.MOUNTPROC3_EXPORT
    tcp = friend.raw(mount3.MOUNT_PROGRAM, export, b"")
    whole = Mount3Unpacker(tcp.body).unpack_exports()
    assert [g.decode() for g in whole[0].ex_groups] == groups
    udp = friend.raw(mount3.MOUNT_PROGRAM, export, b"", "udp")
    assert len(udp.body) <= UDP_DUMP_MAX
    (row,) = Mount3Unpacker(udp.body).unpack_exports()
    assert row.ex_dir == b"/recover/images"
    assert 0 < len(row.ex_groups) < len(groups)
    assert row.ex_groups == whole[0].ex_groups[: len(row.ex_groups)]
    # a short list fits whole over UDP too
    d, _ = build(ns, EXPORTS)
    short = Peer(d, f"{ALLOWED}:40000").raw(mount3.MOUNT_PROGRAM, export, b"", "udp")
    assert Mount3Unpacker(short.body).unpack_exports()[0].ex_groups == [
        ALLOWED.encode(),
        b"192.168.0.0/16",
    ]


def test_nfs_over_udp_only_when_enabled(ns) -> None:
    getattr_args = NFS3Packer()
    getattr_args.pack_nfs_fh3(nfs3.nfs_fh3(b"x" * 8))
    for udp, expect in ((False, rpc.PROG_UNAVAIL), (True, rpc.SUCCESS)):
        d, _ = build(ns, EXPORTS, udp=udp)
        p = Peer(d, f"{ALLOWED}:40000")
        r = p.raw(nfs3.NFS_PROGRAM, nfs3.NFSPROC3_GETATTR, getattr_args.get_buffer(), "udp")
        assert r.stat == expect
        assert p.raw(mount3.MOUNT_PROGRAM, mount3.MOUNTPROC3_NULL, b"", "udp").stat == rpc.SUCCESS


def test_portmap_dump_over_udp_never_amplifies(ns) -> None:
    d, _ = build(ns, EXPORTS, udp=True)
    pmap = Dispatcher([build_portmap(list(d.programs.values()), "0.0.0.0", 2049, 111)])
    for vers, proc in (
        (2, portmap.PMAPPROC_DUMP),
        (3, portmap.RPCBPROC_DUMP),
        (4, portmap.RPCBPROC_DUMP),
    ):
        record = call(portmap.PMAP_PROG, vers, proc, b"", cred=opaque_auth(AUTH_NONE, b""))
        tcp = pmap.dispatch(record, "10.9.9.9:5000", "tcp")
        assert tcp is not None and sum(len(p) for p in tcp.parts) > len(record)
        udp = pmap.dispatch(record, "10.9.9.9:5000", "udp")
        assert udp is None or sum(len(p) for p in udp.parts) <= len(record)
        # CALLIT is not offered at all
        r = parse(
            pmap.dispatch(call(portmap.PMAP_PROG, vers, 5, b""), "10.9.9.9:5000", "udp").parts
        )
        assert r.stat == rpc.PROC_UNAVAIL


def test_mountpoint_option(ns, tmp_path: Path) -> None:
    d, _ = build(ns, f"/recover/images {ALLOWED}(insecure,mountpoint=/)\n")
    assert Peer(d, f"{ALLOWED}:40000").mnt().fhs_status == mount3.MNT3_OK
    d, _ = build(ns, f"/recover/images {ALLOWED}(insecure,mountpoint={tmp_path})\n")
    p = Peer(d, f"{ALLOWED}:40000")
    assert p.mnt().fhs_status == mount3.MNT3ERR_NOENT
    good = Peer(build(ns, EXPORTS)[0], f"{ALLOWED}:40000").mnt().mountinfo.fhandle
    assert status(p.nfs(nfs3.NFSPROC3_GETATTR, good)) == nfs3.NFS3ERR_STALE


def test_refusals_logged_once_per_client(ns, caplog: pytest.LogCaptureFixture) -> None:
    d, _ = build(ns, EXPORTS)
    root = Peer(d, f"{ALLOWED}:40000").mnt().mountinfo.fhandle
    with caplog.at_level("WARNING", logger="recovery_fs.access"):
        for _ in range(50):
            Peer(d, f"{STRANGER}:700").nfs(nfs3.NFSPROC3_GETATTR, root)
    lines = [r for r in caplog.records if STRANGER in r.getMessage()]
    assert len(lines) == 1 and "not in the exports list" in lines[0].getMessage()


@pytest.mark.parametrize(
    ("option", "fsid"),
    [("", 0x7265636F76657279), (",fsid=1234", 1234), (",fsid=root", 0)],
)
def test_fsid_option_is_the_attributes_fsid(ns, option: str, fsid: int) -> None:
    d, _ = build(ns, f"/recover/images {ALLOWED}(insecure{option})\n")
    p = Peer(d, f"{ALLOWED}:40000")
    res = NFS3Unpacker(p.nfs(nfs3.NFSPROC3_GETATTR, p.mnt().mountinfo.fhandle)).unpack_GETATTR3res()
    assert res.resok.obj_attributes.fsid == fsid


def test_a_decision_is_made_again_after_its_time(ns, monkeypatch: pytest.MonkeyPatch) -> None:
    """A name-based verdict must not outlive the resolver's answer."""
    import nfsd.programs.access

    d, access = build(ns, EXPORTS)
    root = Peer(d, f"{ALLOWED}:40000").mnt().mountinfo.fhandle
    calls = []
    real = access._spec
    monkeypatch.setattr(access, "_spec", lambda *a: calls.append(1) or real(*a))
    p = Peer(d, f"{ALLOWED}:40000")
    p.nfs(nfs3.NFSPROC3_GETATTR, root)
    assert calls == []  # the MNT's decision is reused
    monkeypatch.setattr(nfsd.programs.access, "DECISION_TTL", 0.0)
    access._decisions = {}  # a new dict, as a reload or new sessions start one
    p.nfs(nfs3.NFSPROC3_GETATTR, root)
    p.nfs(nfs3.NFSPROC3_GETATTR, root)
    assert len(calls) == 2  # made again each time its time is up
