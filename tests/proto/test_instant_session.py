"""Every NFSv3 procedure on an instant-recovery session, bytes in and bytes out.

The base is an in-memory read-only tree; the session copies its folder
``vm`` and is served beside ``/recover/images`` by the same dispatcher.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from instant.namespace import LINK_MAX
from instant.sessions import SessionError
from instant.store import Tx
from nfsd.programs.nfs3.router import CACHED
from nfsd.rpc import Reply, WouldBlock, settle
from tests.proto.calls import auth_sys, call, parse, unchanged_sattr
from tests.proto.fakens import FakeNamespace
from tests.proto.sessionclient import SessionCaller, raw_nfs
from xdr import mount3, nfs3
from xdr.nfs3 import NFS3Packer, NFS3Unpacker

DISK = bytes(range(256)) * 64  # 16 KiB


@pytest.fixture()
def base() -> FakeNamespace:
    ns = FakeNamespace({("vm",): None, ("vm", "disk-flat.vmdk"): DISK, ("vm", "a.vmx"): b"x=1\n"})
    yield ns
    ns.close()


@pytest.fixture()
def c(base: FakeNamespace, tmp_path: Path) -> SessionCaller:
    caller = SessionCaller(base, tmp_path / "state")
    caller.start("s1", {"web01": ("vm",)})
    yield caller
    caller.manager.close()


def ok(res) -> object:  # type: ignore[no-untyped-def]
    assert res.status == nfs3.NFS3_OK, res.status
    return res.resok


def sattr(**kw: int) -> nfs3.sattr3:
    s = unchanged_sattr()
    if "size" in kw:
        s.size = nfs3.set_size3(True, kw["size"])
    if "mode" in kw:
        s.mode = nfs3.set_mode3(True, kw["mode"])
    if "mtime" in kw:
        s.mtime = nfs3.set_mtime(nfs3.SET_TO_CLIENT_TIME, nfs3.nfstime3(kw["mtime"], 0))
    return s


def folder(c: SessionCaller) -> nfs3.nfs_fh3:
    return ok(c.lookup(c.session_root("s1"), b"web01")).object


def test_mount_lookup_read_the_base_through_the_session(c: SessionCaller) -> None:
    d = folder(c)
    disk = ok(c.lookup(d, b"disk-flat.vmdk"))
    assert disk.obj_attributes.attributes.size == len(DISK)
    assert c.read_all(disk.object, len(DISK)) == DISK
    names = {e.name for e in ok(c.readdirplus(d)).reply.entries}
    assert names == {b"disk-flat.vmdk", b"a.vmx"}
    # the read-only export is unchanged beside it
    assert c.mount().fhs_status == mount3.MNT3_OK


def test_write_is_file_sync_and_read_back_over_the_base(c: SessionCaller) -> None:
    d = folder(c)
    fh = ok(c.lookup(d, b"disk-flat.vmdk")).object
    fid = ok(c.getattr(fh).resok if False else c.lookup(d, b"disk-flat.vmdk")).obj_attributes
    w = ok(c.write(fh, 4096, b"N" * 4096))
    assert w.committed == nfs3.FILE_SYNC and w.count == 4096
    assert w.file_wcc.before.attributes_follow and w.file_wcc.after.attributes_follow
    want = DISK[:4096] + b"N" * 4096 + DISK[8192:]
    assert c.read_all(fh, len(DISK)) == want
    # identity kept across the first write
    assert c.getattr(fh).resok.obj_attributes.fileid == fid.attributes.fileid
    v2 = ok(c.write(fh, 0, b"x")).verf
    assert v2 == w.verf  # one verifier per boot
    assert ok(c.commit(fh)).verf == w.verf


def test_commit_names_a_regular_file(c: SessionCaller) -> None:
    """COMMIT of a folder is ISDIR and of a symlink INVAL, as WRITE's (knfsd's fh_verify)."""
    d = folder(c)
    r = c.commit(d)
    assert r.status == nfs3.NFS3ERR_ISDIR
    assert r.resfail.file_wcc.after.attributes_follow
    link = ok(c.symlink(d, b"l", b"disk-flat.vmdk")).obj.handle
    assert c.commit(link).status == nfs3.NFS3ERR_INVAL


def test_create_modes_and_exclusive_verifier(c: SessionCaller) -> None:
    d = folder(c)
    a = ok(c.create(d, b"new"))
    assert a.obj.handle_follows
    assert c.create(d, b"new", nfs3.GUARDED).status == nfs3.NFS3ERR_EXIST
    ok(c.create(d, b"new"))  # UNCHECKED over an existing file
    e1 = ok(c.create(d, b".lck-01", nfs3.EXCLUSIVE, verf=b"12345678"))
    e2 = ok(c.create(d, b".lck-01", nfs3.EXCLUSIVE, verf=b"12345678"))
    assert e1.obj.handle.data == e2.obj.handle.data
    assert c.create(d, b".lck-01", nfs3.EXCLUSIVE, verf=b"87654321").status == nfs3.NFS3ERR_EXIST


def test_unchecked_create_with_size_zero_truncates(c: SessionCaller) -> None:
    d = folder(c)
    fh = ok(c.create(d, b"f")).obj.handle
    ok(c.write(fh, 0, b"hello"))
    res = ok(c.create(d, b"f", nfs3.UNCHECKED, sattr=sattr(size=0)))
    assert res.obj_attributes.attributes.size == 0


class Killed(Exception):
    """The process killed at this point (the test then opens the session again)."""


def test_create_and_its_initial_size_commit_together(
    c: SessionCaller, base: FakeNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """obj_attributes' size is set in the create's own transaction, which records the
    call's key: killed at the truncate, neither commits, and the retransmission after
    a restart runs the call.  (Committed apart, the key was there without the size,
    and the retransmission was answered OK from the record: old bytes kept.)"""
    d = folder(c)
    fh = ok(c.create(d, b"f")).obj.handle
    ok(c.write(fh, 0, b"hello"))

    def killed(*args: object) -> None:
        raise Killed

    with monkeypatch.context() as m:
        m.setattr(Tx, "truncate", killed)
        c.fixed_xid = 41
        assert c.create(d, b"f", sattr=sattr(size=0)).status == nfs3.NFS3ERR_SERVERFAULT
        c.fixed_xid = 42
        new = c.create(d, b"g", nfs3.GUARDED, sattr=sattr(size=10))
        assert new.status == nfs3.NFS3ERR_SERVERFAULT
    assert c.lookup(d, b"g").status == nfs3.NFS3ERR_NOENT  # neither the file nor its size
    c.manager.close()
    c2 = SessionCaller(base, tmp_path / "state")
    c2.fixed_xid = 41
    assert ok(c2.create(d, b"f", sattr=sattr(size=0))).obj_attributes.attributes.size == 0
    assert c2.getattr(fh).resok.obj_attributes.size == 0
    c2.fixed_xid = 42
    assert ok(c2.create(d, b"g", nfs3.GUARDED, sattr=sattr(size=10))).obj.handle_follows
    c2.fixed_xid = None
    assert ok(c2.lookup(d, b"g")).obj_attributes.attributes.size == 10
    c2.manager.close()


def test_setattr_size_down_and_up_reads_zeros_and_guard(c: SessionCaller) -> None:
    d = folder(c)
    fh = ok(c.lookup(d, b"disk-flat.vmdk")).object
    ok(c.setattr(fh, sattr(size=100)))
    after = ok(c.setattr(fh, sattr(size=8192))).obj_wcc.after.attributes
    assert after.size == 8192
    assert c.read_all(fh, 8192) == DISK[:100] + bytes(8092)
    stale = nfs3.nfstime3(1, 2)
    assert c.setattr(fh, sattr(mode=0o600), guard=stale).status == nfs3.NFS3ERR_NOT_SYNC
    ok(c.setattr(fh, sattr(mode=0o600), guard=after.ctime))
    assert c.getattr(fh).resok.obj_attributes.mode == 0o600


def test_swap_file_sparse(c: SessionCaller) -> None:
    d = folder(c)
    fh = ok(c.create(d, b"vm.vswp")).obj.handle
    ok(c.setattr(fh, sattr(size=1 << 33)))
    assert c.getattr(fh).resok.obj_attributes.size == 1 << 33
    assert ok(c.read(fh, 1 << 32, 4096)).data == bytes(4096)
    fs = ok(c.fsstat(fh))
    assert fs.fbytes > 0


def test_rename_over_existing_across_folders_keeps_identity(c: SessionCaller) -> None:
    d = folder(c)
    root = c.session_root("s1")
    sub = ok(c.mkdir(d, b"sub")).obj.handle
    new = ok(c.create(d, b"a.vmx~")).obj.handle
    ok(c.write(new, 0, b"x=2\n"))
    res = ok(c.rename(d, b"a.vmx~", d, b"a.vmx"))
    assert res.fromdir_wcc.after.attributes_follow
    assert c.read_all(ok(c.lookup(d, b"a.vmx")).object, 4) == b"x=2\n"
    assert c.getattr(new).resok.obj_attributes.size == 4  # same handle after rename
    ok(c.rename(d, b"a.vmx", sub, b"moved"))
    assert c.lookup(d, b"a.vmx").status == nfs3.NFS3ERR_NOENT
    assert ok(c.lookup(sub, b"moved")).object.data == new.data
    assert c.rename(d, b"missing", root, b"x").status == nfs3.NFS3ERR_NOENT
    ro = c.root()
    assert c.rename(d, b"disk-flat.vmdk", ro, b"x").status == nfs3.NFS3ERR_XDEV


def test_remove_rmdir_symlink_readlink(c: SessionCaller) -> None:
    d = folder(c)
    ok(c.remove(d, b"a.vmx"))  # a base file: the session forgets it
    assert c.lookup(d, b"a.vmx").status == nfs3.NFS3ERR_NOENT
    assert c.remove(d, b"a.vmx").status == nfs3.NFS3ERR_NOENT
    sub = ok(c.mkdir(d, b"sub")).obj.handle
    ok(c.create(sub, b"f"))
    assert c.remove(d, b"sub", nfs3.NFSPROC3_RMDIR).status == nfs3.NFS3ERR_NOTEMPTY
    assert c.remove(d, b"sub").status == nfs3.NFS3ERR_ISDIR
    ok(c.remove(sub, b"f"))
    ok(c.remove(d, b"sub", nfs3.NFSPROC3_RMDIR))
    ln = ok(c.symlink(d, b"ln", b"disk-flat.vmdk"))
    assert ln.obj_attributes.attributes.type == nfs3.NF3LNK
    assert ok(c.readlink(ln.obj.handle)).data == b"disk-flat.vmdk"


def test_link_and_mknod_refused_cleanly(c: SessionCaller) -> None:
    d = folder(c)
    fh = ok(c.lookup(d, b"a.vmx")).object
    r = c.link(fh, d, b"hard")
    assert r.status == nfs3.NFS3ERR_NOTSUPP
    assert r.resfail.file_attributes.attributes_follow
    m = c.mknod(d, b"fifo")
    assert m.status == nfs3.NFS3ERR_NOTSUPP
    assert m.resfail.dir_wcc.before.attributes_follow
    for kind in (nfs3.NF3CHR, nfs3.NF3BLK, nfs3.NF3SOCK):
        assert c.mknod(d, b"node", kind).status == nfs3.NFS3ERR_NOTSUPP
    for kind in (nfs3.NF3REG, nfs3.NF3DIR, nfs3.NF3LNK):  # RFC 1813 §3.3.11: illegal types
        m = c.mknod(d, b"node", kind)
        assert m.status == nfs3.NFS3ERR_BADTYPE, kind
        assert m.resfail.dir_wcc.after.attributes_follow
    assert c.lookup(d, b"node").status == nfs3.NFS3ERR_NOENT


def test_a_link_target_no_file_system_holds_is_refused(c: SessionCaller) -> None:
    """Empty, with a NUL byte, or longer than symlink(2) takes: refused as knfsd
    refuses them, nothing made, so that ``instant export`` can write every link."""
    d = folder(c)
    for target, status in [
        (b"", nfs3.NFS3ERR_INVAL),
        (b"a\0b", nfs3.NFS3ERR_INVAL),
        (b"\0", nfs3.NFS3ERR_INVAL),
        (b"t" * (LINK_MAX + 1), nfs3.NFS3ERR_NAMETOOLONG),
    ]:
        r = c.symlink(d, b"ln", target)
        assert r.status == status, target[:8]
        assert r.resfail.dir_wcc.after.attributes_follow
        assert c.lookup(d, b"ln").status == nfs3.NFS3ERR_NOENT
    ln = ok(c.symlink(d, b"ln", b"t" * LINK_MAX))
    assert ok(c.readlink(ln.obj.handle)).data == b"t" * LINK_MAX


def test_access_grants_modify_extend_delete(c: SessionCaller) -> None:
    d = folder(c)
    got = ok(c.access3(d)).access
    assert got & nfs3.ACCESS3_MODIFY and got & nfs3.ACCESS3_EXTEND and got & nfs3.ACCESS3_DELETE
    # the read-only export grants none of them
    ro = ok(c.access3(c.root())).access
    assert not ro & (nfs3.ACCESS3_MODIFY | nfs3.ACCESS3_EXTEND | nfs3.ACCESS3_DELETE)


def test_read_only_export_still_refuses_with_rofs(c: SessionCaller) -> None:
    assert c.create(c.root(), b"x").status == nfs3.NFS3ERR_ROFS


def test_quota_gives_nospc_at_once(base: FakeNamespace, tmp_path: Path) -> None:
    c = SessionCaller(base, tmp_path / "state")
    c.start("q", {"web01": ("vm",)}, quota=64 * 1024)
    d = ok(c.lookup(c.session_root("q"), b"web01")).object
    fh = ok(c.create(d, b"big")).obj.handle
    ok(c.write(fh, 0, b"a" * 32768))
    assert c.write(fh, 32768, b"b" * 65536).status == nfs3.NFS3ERR_NOSPC
    assert c.getattr(fh).resok.obj_attributes.size == 32768
    fs = ok(c.fsstat(fh))
    assert fs.tbytes == 64 * 1024 and fs.fbytes <= 32768
    c.manager.close()


@pytest.mark.parametrize("first", [1000, 70_000, 300_000])
def test_fsstats_free_bytes_can_be_written(base: FakeNamespace, tmp_path: Path, first: int) -> None:
    """FSSTAT's room is what a WRITE may still carry (its record's header counted)."""
    c = SessionCaller(base, tmp_path / "state")
    c.start("q", {"web01": ("vm",)}, quota=1 << 20)
    d = ok(c.lookup(c.session_root("q"), b"web01")).object
    fh = ok(c.create(d, b"f")).obj.handle
    ok(c.write(fh, 0, b"a" * first))
    free = ok(c.fsstat(fh)).fbytes
    assert 0 < free < (1 << 20) - first
    ok(c.write(fh, first, b"b" * free))
    assert ok(c.fsstat(fh)).fbytes < 8192
    assert c.write(fh, first + free, b"c" * 8192).status == nfs3.NFS3ERR_NOSPC
    c.manager.close()


def test_stop_makes_handles_stale_never_old_bytes(c: SessionCaller) -> None:
    d = folder(c)
    fh = ok(c.lookup(d, b"disk-flat.vmdk")).object
    ok(c.write(fh, 0, b"SECRET"))
    c.registry.remove("s1")
    assert c.read(fh, 0, 6).status == nfs3.NFS3ERR_STALE
    assert c.getattr(fh).status == nfs3.NFS3ERR_STALE
    # a new session of the same name: the old handle still reaches nothing
    c.start("s1", {"web01": ("vm",)})
    assert c.read(fh, 0, 6).status == nfs3.NFS3ERR_STALE
    new = ok(c.lookup(folder(c), b"disk-flat.vmdk")).object
    assert c.read_all(new, 6) == DISK[:6]


def test_a_call_looks_at_its_session_once_and_the_next_call_again(
    c: SessionCaller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session's liveness (a ``stat`` of its registry file) is looked at once a
    call, though a call on the loop resolves its handle twice (for its nowait block,
    then in its procedure); and a call after ``instant stop`` is STALE at once."""
    import nfsd.programs.sessions as sessions_mod

    fh = ok(c.lookup(folder(c), b"disk-flat.vmdk")).object
    ok(c.write(fh, 0, b"SECRET"))
    p = NFS3Packer()
    p.pack_READ3args(nfs3.READ3args(fh, 0, 6))
    read = call(nfs3.NFS_PROGRAM, 3, nfs3.NFSPROC3_READ, p.get_buffer(), xid=91)
    looks: list[str] = []
    real_stat = sessions_mod.os.stat

    def stat(path: Any, *a: Any, **kw: Any) -> Any:
        looks.append(str(path))
        return real_stat(path, *a, **kw)

    monkeypatch.setattr(sessions_mod.os, "stat", stat)
    for inline in (False, True):  # on a worker first: the file's map is then loaded
        looks.clear()
        reply = c.dispatcher.dispatch(read, c.peer, "tcp", inline, alone=True)
        assert reply is not None and b"SECRET" in b"".join(bytes(x) for x in reply.parts)
        reply.free()
        assert len(looks) == 1, looks
    c.registry.remove("s1")
    reply = c.dispatcher.dispatch(read, c.peer, "tcp", True, alone=True)
    assert reply is not None
    assert NFS3Unpacker(parse(reply.parts).body).unpack_uint() == nfs3.NFS3ERR_STALE


def test_a_connections_session_calls_reuse_its_access_decision(
    c: SessionCaller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The access check's memo of its last decision (``AccessControl.decide``) holds
    for a session's calls: its export path is one string object, not one made per
    call, so no call after the first builds and hashes a key."""
    from nfsd.transport.tls import Security

    fh = ok(c.lookup(folder(c), b"disk-flat.vmdk")).object
    hashed: list[int] = []
    real_hash = Security.__hash__
    monkeypatch.setattr(Security, "__hash__", lambda s: hashed.append(1) or real_hash(s))
    ok(c.getattr(fh))
    hashed.clear()
    for _ in range(5):
        ok(c.getattr(fh))
        ok(c.write(fh, 0, b"x"))
    assert hashed == []


def listed(c: SessionCaller, d: nfs3.nfs_fh3) -> set[bytes]:
    return {bytes(e.name) for e in ok(c.readdir(d)).reply.entries}


def test_names_that_are_not_utf8_are_kept_byte_for_byte(tmp_path: Path) -> None:
    """NFS names are bytes (a Linux client sends a Latin-1 name as it is): CREATE,
    LOOKUP, READDIR, RENAME and REMOVE keep them byte for byte, beside the UTF-8
    spelling of the same letters, in the folders copied from the storage too, and
    after a restart.  (They failed with a server fault: the database could not
    hold them.)"""
    base = FakeNamespace(
        {("vm",): None, ("vm", "caf\udce9.vmx"): b"old=1\n"}  # stored as b"caf\xe9.vmx"
    )
    c = SessionCaller(base, tmp_path / "state")
    try:
        c.start("s1", {"web01": ("vm",)})
        d = folder(c)
        latin1, utf8 = b"r\xe9sum\xe9.log", "résumé.log".encode()
        a = ok(c.create(d, latin1, nfs3.GUARDED)).obj.handle
        ok(c.write(a, 0, b"latin-1"))
        b = ok(c.create(d, utf8, nfs3.GUARDED)).obj.handle
        ok(c.write(b, 0, b"utf-8"))
        assert c.create(d, latin1, nfs3.GUARDED).status == nfs3.NFS3ERR_EXIST
        assert {latin1, utf8, b"caf\xe9.vmx"} <= listed(c, d)
        found = ok(c.lookup(d, latin1)).object
        assert c.read_all(found, 7) == b"latin-1"
        assert c.read_all(ok(c.lookup(d, b"caf\xe9.vmx")).object, 6) == b"old=1\n"
        ok(c.rename(d, latin1, d, b"r\xe9sum\xe9.old"))
        assert c.lookup(d, latin1).status == nfs3.NFS3ERR_NOENT
        c.manager.close()
        c = SessionCaller(base, tmp_path / "state")  # a restart: the names as they were
        d = folder(c)
        assert {b"r\xe9sum\xe9.old", utf8, b"caf\xe9.vmx"} <= listed(c, d)
        assert c.read_all(ok(c.lookup(d, utf8)).object, 5) == b"utf-8"
        ok(c.remove(d, b"r\xe9sum\xe9.old"))
        ok(c.remove(d, b"caf\xe9.vmx"))
        assert not {b"r\xe9sum\xe9.old", b"caf\xe9.vmx"} & listed(c, d)
    finally:
        c.manager.close()
        base.close()


def test_handles_survive_a_restart(c: SessionCaller, base: FakeNamespace, tmp_path: Path) -> None:
    d = folder(c)
    fh = ok(c.create(d, b"f")).obj.handle
    ok(c.write(fh, 0, b"kept"))
    c.manager.close()
    c2 = SessionCaller(base, tmp_path / "state")
    assert c2.read_all(fh, 4) == b"kept"
    c2.manager.close()


def test_a_session_mounted_through_one_worker_is_served_at_once_by_another(
    c: SessionCaller, base: FakeNamespace, tmp_path: Path
) -> None:
    """Two worker processes over one state dir: a session started just now and
    mounted through one is served by the other at the client's first call, not
    STALE until that worker's next periodic look at the registry."""
    other = SessionCaller(base, tmp_path / "state")
    try:
        assert other.getattr(c.session_root("s1")).status == nfs3.NFS3_OK  # it looked just now
        c.start("s2", {"web01": ("vm",)})
        root = c.session_root("s2")  # MOUNT through the first worker
        assert other.getattr(root).status == nfs3.NFS3_OK
    finally:
        other.manager.close()


def test_forged_and_foreign_handles(c: SessionCaller) -> None:
    d = folder(c)
    bad = nfs3.nfs_fh3(d.data[:-1] + bytes([d.data[-1] ^ 1]))
    assert c.getattr(bad).status == nfs3.NFS3ERR_BADHANDLE
    unknown = nfs3.nfs_fh3(b"\x02" + b"\xff" * 26)
    assert c.getattr(unknown).status == nfs3.NFS3ERR_STALE


def test_session_clients_are_its_own(base: FakeNamespace, tmp_path: Path) -> None:
    c = SessionCaller(base, tmp_path / "state", peer="10.1.2.3:700")
    c.start("only", {"web01": ("vm",)}, clients="10.9.9.9")
    assert c.mount(b"/recover/instant/only").fhs_status == mount3.MNT3ERR_ACCES
    c.start("mine", {"web01": ("vm",)}, clients="10.1.2.3")
    root = c.session_root("mine")
    assert c.getattr(root).status == nfs3.NFS3_OK
    # a handle of the other session, copied from an allowed host, gets nobody in
    other = SessionCaller(base, tmp_path / "state", peer="10.9.9.9:700")
    theirs = other.session_root("only")
    assert c.getattr(theirs).status == nfs3.NFS3ERR_STALE
    c.manager.close()
    other.manager.close()


def test_export_lists_sessions(c: SessionCaller) -> None:
    body = c._call(mount3.MOUNT_PROGRAM, 3, mount3.MOUNTPROC3_EXPORT, b"")
    assert b"/recover/instant/s1" in body and b"/recover/images" in body


def test_bad_session_names_and_clients(c: SessionCaller) -> None:
    with pytest.raises(SessionError):
        c.start("../x", {"a": ("vm",)})
    with pytest.raises(SessionError):
        c.start("s1", {"a": ("vm",)})
    with pytest.raises(SessionError):
        c.start("s2", {"a": ("vm",)}, clients="*(bogus)")


def test_duplicate_request_gets_the_first_reply(c: SessionCaller) -> None:
    d = folder(c)
    c.fixed_xid = 77
    first = raw_nfs(
        c, nfs3.NFSPROC3_REMOVE,
        lambda p: p.pack_REMOVE3args(nfs3.REMOVE3args(nfs3.diropargs3(d, b"a.vmx"))),
    )  # fmt: skip
    c.peer = "127.0.0.1:901"  # a reconnect: another source port, the same client
    again = raw_nfs(
        c, nfs3.NFSPROC3_REMOVE,
        lambda p: p.pack_REMOVE3args(nfs3.REMOVE3args(nfs3.diropargs3(d, b"a.vmx"))),
    )  # fmt: skip
    assert first == again and first[:4] == b"\0\0\0\0"
    c.fixed_xid = None
    assert c.remove(d, b"a.vmx").status == nfs3.NFS3ERR_NOENT  # a new xid runs
    assert nfs3.NFSPROC3_WRITE in CACHED


def test_duplicate_after_restart_is_success(
    c: SessionCaller, base: FakeNamespace, tmp_path: Path
) -> None:
    d = folder(c)
    c.fixed_xid = 99

    def remove(caller: SessionCaller) -> bytes | None:
        return raw_nfs(
            caller, nfs3.NFSPROC3_REMOVE,
            lambda p: p.pack_REMOVE3args(nfs3.REMOVE3args(nfs3.diropargs3(d, b"a.vmx"))),
        )  # fmt: skip

    assert remove(c)[:4] == b"\0\0\0\0"
    c.manager.close()
    c2 = SessionCaller(base, tmp_path / "state")
    c2.fixed_xid = 99
    assert remove(c2)[:4] == b"\0\0\0\0"  # the restart lost the cache, not the answer
    c2.fixed_xid = 100
    assert remove(c2)[4:0] == b"" and remove(c2)[:4] != b"\0\0\0\0"
    c2.manager.close()


def test_a_recorded_call_is_never_run_again(
    c: SessionCaller, base: FakeNamespace, tmp_path: Path
) -> None:
    """A retransmission whose key is recorded is answered success, whatever changed
    since, and never run again (it brought back a file removed since, or answered
    STALE for a folder removed since); what is no longer known is left out."""
    d = folder(c)
    other = SessionCaller(base, tmp_path / "state")  # another worker: a reply cache of its own

    def first(xid: int) -> None:
        c.fixed_xid = other.fixed_xid = xid

    try:
        first(61)
        ok(c.create(d, b"x", nfs3.GUARDED))
        c.fixed_xid = None
        ok(c.remove(d, b"x"))  # by another call
        again = ok(other.create(d, b"x", nfs3.GUARDED))
        assert not again.obj.handle_follows and not again.obj_attributes.attributes_follow
        assert again.dir_wcc.after.attributes_follow
        assert c.lookup(d, b"x").status == nfs3.NFS3ERR_NOENT  # not made again
        first(62)
        ok(c.mkdir(d, b"m"))
        c.fixed_xid = None
        ok(c.remove(d, b"m", nfs3.NFSPROC3_RMDIR))
        ok(c.create(d, b"m"))
        assert not ok(other.mkdir(d, b"m")).obj.handle_follows  # a file is not what it made
        sub = ok(c.mkdir(d, b"sub")).obj.handle
        ok(c.create(sub, b"f"))
        ok(c.create(sub, b"g"))
        first(63)
        ok(c.remove(sub, b"f"))
        first(64)
        ok(c.rename(sub, b"g", d, b"g"))
        c.fixed_xid = None
        ok(c.remove(d, b"sub", nfs3.NFSPROC3_RMDIR))  # both changes' folder gone since
        other.fixed_xid = 63
        assert not ok(other.remove(sub, b"f")).dir_wcc.after.attributes_follow
        other.fixed_xid = 64
        moved = ok(other.rename(sub, b"g", d, b"g"))
        assert not moved.fromdir_wcc.after.attributes_follow
        assert moved.todir_wcc.after.attributes_follow
        assert ok(c.lookup(d, b"g"))
    finally:
        other.manager.close()


@pytest.mark.parametrize("proc", [nfs3.NFSPROC3_CREATE, nfs3.NFSPROC3_REMOVE])
def test_a_duplicate_in_another_process_while_the_call_runs_gets_its_answer(
    c: SessionCaller,
    base: FakeNamespace,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    proc: int,
) -> None:
    """The same call reaching another worker process while the first still runs
    there: its look at the database before the call finds nothing yet, and its
    change's transaction, which waits for the first's, finds the key under the
    write lock and makes nothing.  Answered the first call's success, not EXIST
    for its own GUARDED CREATE or NOENT for its own REMOVE."""
    d = folder(c)
    ok(c.create(d, b"x"))
    other = SessionCaller(base, tmp_path / "state")  # another worker: a reply cache of its own
    ok(other.lookup(d, b"x"))
    mine = c.manager.by_export("/recover/instant/s1")
    theirs = other.manager.by_export("/recover/instant/s1")
    assert mine is not None and theirs is not None
    holding, looked = threading.Event(), threading.Event()
    record, recorded = mine.ns._record_call, theirs.ns.recorded

    def held(tx: Tx, key: bytes) -> None:  # the first call, its change not committed
        record(tx, key)
        holding.set()
        assert looked.wait(10)

    def look(key: bytes) -> bool:  # the duplicate, before its call
        try:
            return recorded(key)
        finally:
            looked.set()

    monkeypatch.setattr(mine.ns, "_record_call", held)
    monkeypatch.setattr(theirs.ns, "recorded", look)

    def send(caller: SessionCaller) -> bytes | None:
        if proc == nfs3.NFSPROC3_CREATE:
            how = nfs3.createhow3(nfs3.GUARDED, obj_attributes=unchanged_sattr())
            return raw_nfs(
                caller, proc,
                lambda p: p.pack_CREATE3args(nfs3.CREATE3args(nfs3.diropargs3(d, b"y"), how)),
            )  # fmt: skip
        return raw_nfs(
            caller, proc,
            lambda p: p.pack_REMOVE3args(nfs3.REMOVE3args(nfs3.diropargs3(d, b"x"))),
        )  # fmt: skip

    c.fixed_xid = other.fixed_xid = 71
    replies: list[bytes | None] = []
    first = threading.Thread(target=lambda: replies.append(send(c)))
    first.start()
    try:
        assert holding.wait(10)
        again = send(other)
    finally:
        looked.set()
        first.join(10)
        other.manager.close()
    assert replies[0] is not None and replies[0][:4] == b"\0\0\0\0"
    assert again is not None and again[:4] == b"\0\0\0\0"  # not EXIST, not NOENT
    c.fixed_xid = None
    gone = b"x" if proc == nfs3.NFSPROC3_REMOVE else b"nothing"
    assert c.lookup(d, gone).status == nfs3.NFS3ERR_NOENT


def test_duplicate_of_a_running_call_is_dropped(c: SessionCaller) -> None:
    from nfsd.programs.drc import ReplyCache
    from nfsd.rpc import DropCall

    drc = ReplyCache(max_entries=2)
    assert drc.begin(b"k") is None
    with pytest.raises(DropCall):
        drc.begin(b"k")
    drc.finish(b"k", b"reply")
    assert drc.begin(b"k") == b"reply"
    drc.begin(b"a")
    drc.begin(b"b")
    assert len(drc) == 2  # bounded


def test_replies_packed_from_attrs_are_the_packers_bytes(c: SessionCaller) -> None:
    """GETATTR, LOOKUP, ACCESS, READ and READDIRPLUS replies are built as bytes: each
    must be exactly what NFS3Packer writes for the same result."""
    d = folder(c)
    fh = ok(c.lookup(d, b"disk-flat.vmdk")).object
    ok(c.write(fh, 100, b"w" * 50))
    calls = [
        (nfs3.NFSPROC3_GETATTR, "GETATTR3", nfs3.GETATTR3args(fh)),
        (nfs3.NFSPROC3_GETATTR, "GETATTR3", nfs3.GETATTR3args(d)),
        (nfs3.NFSPROC3_READ, "READ3", nfs3.READ3args(fh, 0, 4096)),
        (nfs3.NFSPROC3_READ, "READ3", nfs3.READ3args(fh, len(DISK) - 10, 4096)),
        (nfs3.NFSPROC3_ACCESS, "ACCESS3", nfs3.ACCESS3args(fh, 0x3F)),
        (nfs3.NFSPROC3_ACCESS, "ACCESS3", nfs3.ACCESS3args(d, 0x1F)),
    ]
    for count in (4096, 400):  # whole, then in a small reply
        rdp = nfs3.READDIRPLUS3args(d, 0, b"\0" * 8, count, count)
        calls.append((nfs3.NFSPROC3_READDIRPLUS, "READDIRPLUS3", rdp))
    for name in (b"disk-flat.vmdk", b"a.vmx", b"nothing", b".", b".."):
        calls.append((nfs3.NFSPROC3_LOOKUP, "LOOKUP3", nfs3.LOOKUP3args(nfs3.diropargs3(d, name))))
    for _ in range(2):  # the second time from what the session keeps
        for proc, kind, args in calls:
            body = raw_nfs(c, proc, lambda p, k=kind, a=args: getattr(p, f"pack_{k}args")(a))
            assert body is not None
            u = NFS3Unpacker(body)
            res = getattr(u, f"unpack_{kind}res")()
            u.done()
            assert res.status == nfs3.NFS3_OK or args == calls[-3][2], (kind, args)
            p = NFS3Packer()
            getattr(p, f"pack_{kind}res")(res)
            assert p.get_buffer() == body, (kind, args)


def test_quick_reads_inline_on_any_connection(c: SessionCaller) -> None:
    """READ, GETATTR, ACCESS and LOOKUP of a session are served inline, whether the
    loop serves this connection alone or others too (same bytes as on a worker), as
    the read-only export's; a READ whose bytes are not in the page cache, and a
    change, never."""
    d = folder(c)
    fh = ok(c.lookup(d, b"disk-flat.vmdk")).object
    ok(c.write(fh, 4096, b"N" * 100))

    def record(proc: int, kind: str, args: object) -> bytes:
        p = NFS3Packer()
        getattr(p, f"pack_{kind}args")(args)
        return call(nfs3.NFS_PROGRAM, 3, proc, p.get_buffer(), xid=77)

    def body(reply: Reply | None) -> bytes:
        assert reply is not None
        data = b"".join(bytes(x) for x in reply.parts)
        reply.free()
        return data

    quick = [
        # written bytes, in the data log (the fake base's memfd has no RWF_NOWAIT:
        # its bytes always go to a worker, as a real base's not in the page cache)
        record(nfs3.NFSPROC3_READ, "READ3", nfs3.READ3args(fh, 4096, 100)),
        record(nfs3.NFSPROC3_GETATTR, "GETATTR3", nfs3.GETATTR3args(fh)),
        record(nfs3.NFSPROC3_ACCESS, "ACCESS3", nfs3.ACCESS3args(fh, 0x3F)),
        record(nfs3.NFSPROC3_LOOKUP, "LOOKUP3", nfs3.LOOKUP3args(nfs3.diropargs3(d, b"a.vmx"))),
    ]
    change = record(
        nfs3.NFSPROC3_SETATTR, "SETATTR3",
        nfs3.SETATTR3args(fh, sattr(mode=0o600), nfs3.sattrguard3(False, None)),
    )  # fmt: skip
    base_read = record(nfs3.NFSPROC3_READ, "READ3", nfs3.READ3args(fh, 0, 1 << 20))
    for alone in (True, False):
        with pytest.raises(WouldBlock):
            c.dispatcher.dispatch(base_read, c.peer, "tcp", True, alone=alone)
    assert body(c.dispatcher.dispatch(base_read, c.peer, "tcp"))
    for rec in quick:
        on_worker = body(c.dispatcher.dispatch(rec, c.peer, "tcp"))
        assert body(c.dispatcher.dispatch(rec, c.peer, "tcp", True, alone=True)) == on_worker
        assert body(c.dispatcher.dispatch(rec, c.peer, "tcp", True)) == on_worker
    for alone in (True, False):
        with pytest.raises(WouldBlock):
            c.dispatcher.dispatch(change, c.peer, "tcp", True, alone=alone)
    # A READ past INLINE_MAX but too small to send from the mappings is copied:
    # inline only while no other connection waits behind it (as the read-only
    # export's, read.read_reply).
    ok(c.write(fh, 1 << 20, b"C" * (100 << 10)))
    copied = record(nfs3.NFSPROC3_READ, "READ3", nfs3.READ3args(fh, 1 << 20, 100 << 10))
    on_worker = body(c.dispatcher.dispatch(copied, c.peer, "tcp"))
    assert body(c.dispatcher.dispatch(copied, c.peer, "tcp", True, alone=True)) == on_worker
    with pytest.raises(WouldBlock):
        c.dispatcher.dispatch(copied, c.peer, "tcp", True)


def test_a_sessions_quick_calls_on_a_shared_loop_take_the_fast_path(
    c: SessionCaller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session's GETATTR, READ or LOOKUP on a loop that serves other connections
    too is answered by the fast path: never decoded by the general path."""
    import nfsd.rpc

    d = folder(c)
    fh = ok(c.lookup(d, b"disk-flat.vmdk")).object
    ok(c.write(fh, 4096, b"N" * 100))  # the fake base's memfd reads on a worker
    recs = []
    for proc, kind, args in [
        (nfs3.NFSPROC3_GETATTR, "GETATTR3", nfs3.GETATTR3args(fh)),
        (nfs3.NFSPROC3_READ, "READ3", nfs3.READ3args(fh, 4096, 100)),  # in the data log
        (nfs3.NFSPROC3_LOOKUP, "LOOKUP3", nfs3.LOOKUP3args(nfs3.diropargs3(d, b"a.vmx"))),
    ]:
        p = NFS3Packer()
        getattr(p, f"pack_{kind}args")(args)
        recs.append(call(nfs3.NFS_PROGRAM, 3, proc, p.get_buffer(), xid=5))
    for rec in recs:  # the credentials decoded once (the fast path needs them)
        reply = c.dispatcher.dispatch(rec, c.peer, "tcp")
        assert reply is not None
        reply.free()
    decoded = []
    real = nfsd.rpc.decode_call
    monkeypatch.setattr(nfsd.rpc, "decode_call", lambda r: decoded.append(1) or real(r))
    for rec in recs:
        reply = c.dispatcher.dispatch(rec, c.peer, "tcp", True)
        assert reply is not None and parse(reply.parts).stat == 0
        reply.free()
    assert decoded == []


@pytest.mark.parametrize("uid", [0, 1000])
def test_fast_path_answers_a_session_as_the_general_path(
    c: SessionCaller, uid: int, caplog: pytest.LogCaptureFixture
) -> None:
    """The fast path answers a session's GETATTR, READ and LOOKUP through the router's
    ``quick``: byte for byte the general path's reply (``Dispatcher._fast`` off),
    failures included (left to the general path), and the same WouldBlock."""
    d = folder(c)
    fh = ok(c.lookup(d, b"disk-flat.vmdk")).object
    vmx = ok(c.lookup(d, b"a.vmx")).object
    ok(c.setattr(vmx, sattr(mode=0o600)))  # not readable by uid 1000
    ok(c.write(fh, 4096, b"N" * 100))
    forged = nfs3.nfs_fh3(bytes(fh.data[:-1]) + bytes([fh.data[-1] ^ 1]))
    gone = nfs3.nfs_fh3(bytes(fh.data[:1]) + b"\xee" * 8 + bytes(fh.data[9:]))
    cases = []
    for h in (fh, vmx, d, forged, gone):
        cases.append((nfs3.NFSPROC3_GETATTR, "GETATTR3", nfs3.GETATTR3args(h)))
        cases.append((nfs3.NFSPROC3_READ, "READ3", nfs3.READ3args(h, 4096, 100)))
        cases.append((nfs3.NFSPROC3_READ, "READ3", nfs3.READ3args(h, 0, 1 << 20)))
        cases.append((nfs3.NFSPROC3_ACCESS, "ACCESS3", nfs3.ACCESS3args(h, 0x3F)))
    for name in (b"disk-flat.vmdk", b"a.vmx", b"nothing", b".", b"..", b"a/b"):
        cases.append((nfs3.NFSPROC3_LOOKUP, "LOOKUP3", nfs3.LOOKUP3args(nfs3.diropargs3(d, name))))
    fast = c.dispatcher._fast
    assert fast is not None
    quick = fast.__self__.sessions  # type: ignore[attr-defined]
    answered = []
    fast.__self__.sessions = lambda *a: answered.append(1) or quick(*a)  # type: ignore[attr-defined]
    for proc, kind, args in cases:
        p = NFS3Packer()
        getattr(p, f"pack_{kind}args")(args)
        rec = call(nfs3.NFS_PROGRAM, 3, proc, p.get_buffer(), xid=9, cred=auth_sys(uid, uid))
        for inline, alone in ((False, False), (True, True), (True, False)):
            answers = []
            for path in (fast, None):
                c.dispatcher._fast = path
                try:
                    reply = c.dispatcher.dispatch(rec, c.peer, "tcp", inline, alone=alone)
                except WouldBlock:
                    answers.append(b"WouldBlock")
                    continue
                assert reply is not None
                answers.append(b"".join(bytes(x) for x in reply.parts))
                reply.free()
            c.dispatcher._fast = fast
            assert answers[0] == answers[1], (kind, args, inline, alone)
    assert len(answered) > len(cases)  # the fast path did answer
    assert "fast path failed" not in caplog.text


@pytest.mark.parametrize("alone", [True, False])
def test_a_session_call_inline_never_waits_on_the_database(c: SessionCaller, alone: bool) -> None:
    """Served inline (the loop, its connection alone or not), a session's READ or GETATTR
    that would wait - the read connection held by another thread, or a file's map
    to load - goes to a worker instead (WouldBlock): the loop, and this
    connection's heartbeat GETATTRs with it, never stall behind a large map."""
    import threading

    d = folder(c)
    fh = ok(c.lookup(d, b"disk-flat.vmdk")).object
    ok(c.write(fh, 4096, b"N" * 100))
    store = c.manager.by_key(c.manager.session_key(fh.data)).ns.store

    def record(proc: int, kind: str, args: object) -> bytes:
        p = NFS3Packer()
        getattr(p, f"pack_{kind}args")(args)
        return call(nfs3.NFS_PROGRAM, 3, proc, p.get_buffer(), xid=78)

    read = record(nfs3.NFSPROC3_READ, "READ3", nfs3.READ3args(fh, 4096, 100))
    getattr3 = record(nfs3.NFSPROC3_GETATTR, "GETATTR3", nfs3.GETATTR3args(fh))

    def inline(rec: bytes) -> Reply | None:
        return c.dispatcher.dispatch(rec, c.peer, "tcp", True, alone=alone)

    for rec in (read, getattr3):  # the map loaded, every answer checked: inline serves
        assert c.dispatcher.dispatch(rec, c.peer, "tcp") is not None
        warm = inline(rec)
        assert warm is not None
        warm.free()
    held, done = threading.Event(), threading.Event()

    def hold() -> None:
        with store._rlock:
            held.set()
            done.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert held.wait(5)
        with pytest.raises(WouldBlock):  # READ needs the lock: a worker's
            inline(read)
        kept = inline(getattr3)  # every answer kept at this version: no lock to take
        assert kept is not None
        kept.free()
    finally:
        done.set()
        t.join()
    store._rstates.clear()  # the map must be loaded again: a worker's job
    with pytest.raises(WouldBlock):
        inline(read)
    on_worker = c.dispatcher.dispatch(read, c.peer, "tcp")
    assert on_worker is not None
    served = inline(read)  # loaded now: inline again, the same bytes
    assert served is not None
    assert b"".join(bytes(x) for x in served.parts) == b"".join(bytes(x) for x in on_worker.parts)
    assert b"N" * 100 in b"".join(bytes(x) for x in served.parts)
    served.free()
    on_worker.free()


def as_user(  # noqa: PLR0917
    c: SessionCaller, uid: int, proc: int, kind: str, args: object, gids: list[int] | None = None
) -> Any:
    """One NFSv3 call with AUTH_SYS uid = gid = ``uid`` (and ``gids`` besides); its
    decoded result."""
    p = NFS3Packer()
    getattr(p, f"pack_{kind}args")(args)
    c.xid += 1
    cred = auth_sys(uid, uid, gids)
    rec = call(nfs3.NFS_PROGRAM, 3, proc, p.get_buffer(), xid=c.xid, cred=cred)
    reply = settle(c.dispatcher.dispatch(rec, c.peer, "tcp"), 30)
    assert reply is not None
    r = parse(reply.parts)
    reply.free()
    u = NFS3Unpacker(r.body)
    res = getattr(u, f"unpack_{kind}res")()
    u.done()
    return res


def test_create_applies_the_initial_size_and_times(c: SessionCaller) -> None:
    """RFC 1813 §3.3.8: obj_attributes are the new file's (knfsd applies them all)."""
    d = folder(c)
    for how in (nfs3.UNCHECKED, nfs3.GUARDED):
        s = sattr(size=4096, mode=0o600, mtime=10**9)
        s.atime = nfs3.set_atime(nfs3.SET_TO_CLIENT_TIME, nfs3.nfstime3(10**9 - 5, 0))
        a = ok(c.create(d, f"new{how}".encode(), how, sattr=s)).obj_attributes.attributes
        assert (a.size, a.mode, a.mtime.seconds, a.atime.seconds) == (4096, 0o600, 10**9, 10**9 - 5)


def test_setting_times_needs_the_owner_or_write_permission(c: SessionCaller) -> None:
    """As utimensat(2) and knfsd: a time of one's choosing only by the owner (PERM);
    "now" by anyone who may write the file (ACCES otherwise)."""
    fh = ok(c.create(folder(c), b"roots", sattr=sattr(mode=0o644))).obj.handle
    chosen, now = unchanged_sattr(), unchanged_sattr()
    chosen.mtime = nfs3.set_mtime(nfs3.SET_TO_CLIENT_TIME, nfs3.nfstime3(86400, 0))
    now.mtime = nfs3.set_mtime(nfs3.SET_TO_SERVER_TIME)
    guard = nfs3.sattrguard3(False)
    for s, status in ((chosen, nfs3.NFS3ERR_PERM), (now, nfs3.NFS3ERR_ACCES)):
        args = nfs3.SETATTR3args(fh, s, guard)
        assert as_user(c, 1000, nfs3.NFSPROC3_SETATTR, "SETATTR3", args).status == status
    before = c.getattr(fh).resok.obj_attributes.mtime
    assert before.seconds != 86400
    ok(c.setattr(fh, sattr(mode=0o666)))  # now anyone may write it: "now" is allowed
    args = nfs3.SETATTR3args(fh, now, guard)
    assert as_user(c, 1000, nfs3.NFSPROC3_SETATTR, "SETATTR3", args).status == nfs3.NFS3_OK
    args = nfs3.SETATTR3args(fh, chosen, guard)
    assert as_user(c, 1000, nfs3.NFSPROC3_SETATTR, "SETATTR3", args).status == nfs3.NFS3ERR_PERM
    ok(c.setattr(fh, chosen))  # root may
    assert c.getattr(fh).resok.obj_attributes.mtime.seconds == 86400


def test_a_time_with_a_second_or_more_of_nanoseconds_is_inval(c: SessionCaller) -> None:
    """nfstime3's nseconds is below 10^9 (RFC 1813 §2.6); ganesha answers INVAL and
    changes nothing.  Carried into the seconds, (2^32 - 1, 10^9) read back 1970."""
    d = folder(c)
    fh = ok(c.create(d, b"timed", sattr=sattr(mtime=86400))).obj.handle
    for seconds, nseconds in ((1000, 10**9), (1000, 2**32 - 1), (2**32 - 1, 10**9)):
        bad = unchanged_sattr()
        bad.mtime = nfs3.set_mtime(nfs3.SET_TO_CLIENT_TIME, nfs3.nfstime3(seconds, nseconds))
        res = c.setattr(fh, bad)
        assert res.status == nfs3.NFS3ERR_INVAL, (seconds, nseconds)
        assert res.resfail.obj_wcc.after.attributes_follow  # wcc data, as every failure
        bad.mtime = nfs3.set_mtime(nfs3.DONT_CHANGE)
        bad.atime = nfs3.set_atime(nfs3.SET_TO_CLIENT_TIME, nfs3.nfstime3(seconds, nseconds))
        assert c.setattr(fh, bad).status == nfs3.NFS3ERR_INVAL
        made = c.create(d, b"made-%d" % nseconds, nfs3.GUARDED, sattr=bad)
        assert made.status == nfs3.NFS3ERR_INVAL
        assert c.lookup(d, b"made-%d" % nseconds).status == nfs3.NFS3ERR_NOENT
    assert c.getattr(fh).resok.obj_attributes.mtime == nfs3.nfstime3(86400, 0)
    last = unchanged_sattr()
    last.mtime = nfs3.set_mtime(nfs3.SET_TO_CLIENT_TIME, nfs3.nfstime3(2**32 - 1, 10**9 - 1))
    ok(c.setattr(fh, last))
    assert c.getattr(fh).resok.obj_attributes.mtime == nfs3.nfstime3(2**32 - 1, 10**9 - 1)


def test_sizes_past_the_largest_file_are_fbig(c: SessionCaller) -> None:
    fh = ok(c.create(folder(c), b"big")).obj.handle
    assert c.write(fh, (1 << 63) - 1, b"x").status == nfs3.NFS3ERR_FBIG
    assert c.setattr(fh, sattr(size=1 << 63)).status == nfs3.NFS3ERR_FBIG
    ok(c.write(fh, 0, b"still fine"))
    assert c.read_all(fh, 10) == b"still fine"


def test_rename_from_the_read_only_export_into_a_session_is_rofs(c: SessionCaller) -> None:
    ro = ok(c.lookup(ok(c.lookup(c.root(), b"vm")).object, b"disk-flat.vmdk")).object
    ro_dir = ok(c.lookup(c.root(), b"vm")).object
    res = c.rename(ro_dir, b"disk-flat.vmdk", folder(c), b"moved")
    assert res.status == nfs3.NFS3ERR_ROFS
    assert c.getattr(ro).status == nfs3.NFS3_OK


def _chown_sattr(mode: int, uid: int, gid: int) -> nfs3.sattr3:
    s = sattr(mode=mode)
    s.uid, s.gid = nfs3.set_uid3(True, uid), nfs3.set_gid3(True, gid)
    return s


def test_new_objects_belong_to_the_caller_unless_root_asks(
    base: FakeNamespace, tmp_path: Path
) -> None:
    """knfsd's nfsd_create_setattr: the uid/gid in CREATE's, MKDIR's and SYMLINK's
    attributes are honoured for root only (after squashing); anyone else, a squashed
    root included, gets an object of its own, never a setuid file owned by root."""
    c = SessionCaller(base, tmp_path / "state")
    c.start("s1", {"web01": ("vm",)}, clients="127.0.0.2(insecure) 127.0.0.1(insecure,root_squash)")
    try:
        c.peer = "127.0.0.2:900"
        d = ok(c.lookup(c.session_root("s1"), b"web01")).object
        pub = nfs3.MKDIR3args(nfs3.diropargs3(d, b"pub"), sattr(mode=0o777))
        pub_fh = ok(as_user(c, 0, nfs3.NFSPROC3_MKDIR, "MKDIR3", pub)).obj.handle
        cases = (("127.0.0.1:900", 0, (65534, 65534)), ("127.0.0.1:900", 1000, (1000, 1000)),
                 ("127.0.0.2:900", 1000, (1000, 1000)), ("127.0.0.2:900", 0, (7, 8)))  # fmt: skip
        for i, (peer, uid, owner) in enumerate(cases):
            c.peer = peer
            asked = _chown_sattr(0o4755, 7, 8)
            where = nfs3.diropargs3(pub_fh, f"f{i}".encode())
            how = nfs3.createhow3(nfs3.UNCHECKED, obj_attributes=asked)
            made = [
                as_user(c, uid, nfs3.NFSPROC3_CREATE, "CREATE3", nfs3.CREATE3args(where, how)),
                as_user(c, uid, nfs3.NFSPROC3_MKDIR, "MKDIR3",
                        nfs3.MKDIR3args(nfs3.diropargs3(pub_fh, f"d{i}".encode()), asked)),
                as_user(c, uid, nfs3.NFSPROC3_SYMLINK, "SYMLINK3", nfs3.SYMLINK3args(
                    nfs3.diropargs3(pub_fh, f"l{i}".encode()), nfs3.symlinkdata3(asked, b"t"))),
            ]  # fmt: skip
            for res in made:
                a = ok(res).obj_attributes.attributes
                assert (a.uid, a.gid) == owner, (peer, uid)
                assert c.getattr(ok(res).obj.handle).resok.obj_attributes.uid == owner[0]
    finally:
        c.manager.close()


def _set(
    c: SessionCaller, uid: int, fh: nfs3.nfs_fh3, s: nfs3.sattr3, gids: list[int] | None = None
) -> int:
    args = nfs3.SETATTR3args(fh, s, nfs3.sattrguard3(False))
    return int(as_user(c, uid, nfs3.NFSPROC3_SETATTR, "SETATTR3", args, gids).status)


def _owner_mode(c: SessionCaller, fh: nfs3.nfs_fh3) -> tuple[int, int, int]:
    a = c.getattr(fh).resok.obj_attributes
    return a.uid, a.gid, a.mode


def test_owner_and_group_changes_as_linux_decides_them(c: SessionCaller) -> None:
    """chown(2)'s rules (Linux's chown_ok, chgrp_ok, setattr_prepare; knfsd's
    nfsd_sanitize_attrs): the owner may give its file a group of its own, only
    root another owner; a set-group-ID bit for a group the caller is not in is
    dropped; a change of owner or group drops a file's set-ID bits; 0xFFFFFFFF is
    no id (chown's -1)."""
    d = folder(c)
    fh = ok(c.create(d, b"f", sattr=_chown_sattr(0o644, 1000, 1000))).obj.handle

    def group(gid: int) -> nfs3.sattr3:
        s = unchanged_sattr()
        s.gid = nfs3.set_gid3(True, gid)
        return s

    def owner(uid: int) -> nfs3.sattr3:
        s = unchanged_sattr()
        s.uid = nfs3.set_uid3(True, uid)
        return s

    assert _set(c, 1000, fh, group(7), [7]) == nfs3.NFS3_OK  # a supplementary group
    assert _owner_mode(c, fh)[:2] == (1000, 7)
    assert _set(c, 1000, fh, group(1000)) == nfs3.NFS3_OK  # its primary group
    assert _set(c, 1000, fh, group(1000)) == nfs3.NFS3_OK  # the same group again
    assert _set(c, 1000, fh, group(9), [7]) == nfs3.NFS3ERR_PERM  # not one of its groups
    assert _set(c, 2000, fh, group(2000)) == nfs3.NFS3ERR_PERM  # not its file
    assert _set(c, 1000, fh, owner(1000)) == nfs3.NFS3_OK  # its own uid again
    assert _set(c, 1000, fh, owner(2000)) == nfs3.NFS3ERR_PERM
    assert _owner_mode(c, fh)[:2] == (1000, 1000)
    ok(c.setattr(fh, group(9)))  # root: a group the owner is not in
    assert _set(c, 1000, fh, sattr(mode=0o2755), [7]) == nfs3.NFS3_OK
    assert _owner_mode(c, fh) == (1000, 9, 0o755)  # set-group-ID dropped, not refused
    ok(c.setattr(fh, group(7)))
    assert _set(c, 1000, fh, sattr(mode=0o2755), [7]) == nfs3.NFS3_OK
    assert _owner_mode(c, fh) == (1000, 7, 0o2755)  # its group: kept
    ok(c.setattr(fh, sattr(mode=0o6755)))
    ok(c.setattr(fh, owner(0)))  # root chowns a set-ID file: the bits go
    assert _owner_mode(c, fh) == (0, 7, 0o755)
    ok(c.setattr(fh, _chown_sattr(0o4755, 1000, 7)))  # with a mode: that mode, less them
    assert _owner_mode(c, fh) == (1000, 7, 0o755)
    ok(c.setattr(fh, sattr(mode=0o2745)))  # set-group-ID without group execute: a lock mark
    ok(c.setattr(fh, group(7)))
    assert _owner_mode(c, fh) == (1000, 7, 0o2745)
    ok(c.setattr(fh, _chown_sattr(0o644, 0xFFFFFFFF, 0xFFFFFFFF)))  # -1: no change
    assert _owner_mode(c, fh) == (1000, 7, 0o644)
    sub = ok(c.mkdir(d, b"sub")).obj.handle
    ok(c.setattr(sub, sattr(mode=0o2755)))
    ok(c.setattr(sub, owner(1000)))  # a folder keeps its set-group-ID bit
    assert _owner_mode(c, sub) == (1000, 0, 0o2755)


def test_a_set_group_id_folder_gives_new_entries_its_group(c: SessionCaller) -> None:
    """Linux's inode_init_owner: in a set-group-ID folder a new entry takes the
    folder's group, a new folder the bit too; a new group-executable file keeps a
    set-group-ID bit only for a group of the caller's."""
    d = folder(c)
    shared = ok(c.mkdir(d, b"shared")).obj.handle
    ok(c.setattr(shared, _chown_sattr(0o2777, 0, 7)))

    def made(proc: int, kind: str, name: bytes, mode: int) -> tuple[int, int, int]:
        where = nfs3.diropargs3(shared, name)
        s = sattr(mode=mode)
        args: object
        if proc == nfs3.NFSPROC3_CREATE:
            args = nfs3.CREATE3args(where, nfs3.createhow3(nfs3.GUARDED, obj_attributes=s))
        elif proc == nfs3.NFSPROC3_MKDIR:
            args = nfs3.MKDIR3args(where, s)
        else:
            args = nfs3.SYMLINK3args(where, nfs3.symlinkdata3(s, b"target"))
        return _owner_mode(c, ok(as_user(c, 1000, proc, kind, args)).obj.handle)

    assert made(nfs3.NFSPROC3_CREATE, "CREATE3", b"f", 0o644) == (1000, 7, 0o644)
    assert made(nfs3.NFSPROC3_MKDIR, "MKDIR3", b"d", 0o755) == (1000, 7, 0o2755)
    assert made(nfs3.NFSPROC3_SYMLINK, "SYMLINK3", b"l", 0o777)[:2] == (1000, 7)
    assert made(nfs3.NFSPROC3_CREATE, "CREATE3", b"x", 0o2755) == (1000, 7, 0o755)
    assert made(nfs3.NFSPROC3_CREATE, "CREATE3", b"m", 0o2644) == (1000, 7, 0o2644)
    plain = ok(c.mkdir(d, b"plain")).obj.handle
    ok(c.setattr(plain, sattr(mode=0o777)))
    args = nfs3.MKDIR3args(nfs3.diropargs3(plain, b"d"), sattr(mode=0o755))
    new = ok(as_user(c, 1000, nfs3.NFSPROC3_MKDIR, "MKDIR3", args)).obj.handle
    assert _owner_mode(c, new) == (1000, 1000, 0o755)  # an ordinary folder: the caller's


def test_sticky_folder_entries_removed_or_renamed_by_their_owners_only(c: SessionCaller) -> None:
    """Linux's may_delete (check_sticky), answered NFS3ERR_PERM as knfsd's EPERM: in a
    sticky folder only root, the folder's owner and the entry's owner remove or
    rename an entry, or rename another over it."""
    d = folder(c)
    tmp_args = nfs3.MKDIR3args(nfs3.diropargs3(d, b"tmp"), _chown_sattr(0o1777, 3000, 3000))
    tmp = ok(as_user(c, 0, nfs3.NFSPROC3_MKDIR, "MKDIR3", tmp_args)).obj.handle

    def make(uid: int, name: bytes) -> None:
        how = nfs3.createhow3(nfs3.UNCHECKED, obj_attributes=sattr(mode=0o666))
        args = nfs3.CREATE3args(nfs3.diropargs3(tmp, name), how)
        ok(as_user(c, uid, nfs3.NFSPROC3_CREATE, "CREATE3", args))

    def remove(uid: int, name: bytes, proc: int = nfs3.NFSPROC3_REMOVE) -> int:
        kind = "REMOVE3" if proc == nfs3.NFSPROC3_REMOVE else "RMDIR3"
        args = nfs3.REMOVE3args(nfs3.diropargs3(tmp, name))
        return int(as_user(c, uid, proc, kind, args).status)

    def rename(uid: int, src: bytes, dst: bytes) -> int:
        args = nfs3.RENAME3args(nfs3.diropargs3(tmp, src), nfs3.diropargs3(tmp, dst))
        return int(as_user(c, uid, nfs3.NFSPROC3_RENAME, "RENAME3", args).status)

    for name in (b"a", b"b", b"c", b"d"):
        make(1000, name)
    make(2000, b"mine")
    sub = nfs3.MKDIR3args(nfs3.diropargs3(tmp, b"sub"), sattr(mode=0o777))
    ok(as_user(c, 1000, nfs3.NFSPROC3_MKDIR, "MKDIR3", sub))
    assert remove(2000, b"a") == nfs3.NFS3ERR_PERM
    assert remove(2000, b"sub", nfs3.NFSPROC3_RMDIR) == nfs3.NFS3ERR_PERM
    assert rename(2000, b"a", b"taken") == nfs3.NFS3ERR_PERM  # the entry renamed
    assert rename(2000, b"mine", b"a") == nfs3.NFS3ERR_PERM  # the entry replaced
    assert ok(c.lookup(tmp, b"a")) and ok(c.lookup(tmp, b"mine")) and ok(c.lookup(tmp, b"sub"))
    assert remove(2000, b"nothing") == nfs3.NFS3ERR_NOENT  # a missing name is still NOENT
    assert remove(1000, b"a") == nfs3.NFS3_OK  # the entry's owner
    assert rename(3000, b"b", b"b2") == nfs3.NFS3_OK  # the folder's owner
    assert remove(0, b"c") == nfs3.NFS3_OK  # root
    assert rename(2000, b"mine", b"mine2") == nfs3.NFS3_OK  # one's own, to a free name
    assert remove(1000, b"sub", nfs3.NFSPROC3_RMDIR) == nfs3.NFS3_OK
    ok(c.setattr(tmp, sattr(mode=0o777)))  # not sticky: write permission is enough
    assert remove(2000, b"d") == nfs3.NFS3_OK


def test_a_write_or_truncate_by_a_user_drops_the_set_id_bits(c: SessionCaller) -> None:
    """Linux's file_remove_privs (should_remove_suid): a WRITE or a truncate by a caller
    without CAP_FSETID (anyone but root) drops set-user-ID, and set-group-ID when
    group execute is set; durably (a later GETATTR sees it); root's keep them."""
    d = ok(c.mkdir(folder(c), b"pub")).obj.handle
    ok(c.setattr(d, sattr(mode=0o777)))

    def make(name: bytes, mode: int) -> nfs3.nfs_fh3:
        fh = ok(c.create(d, name, sattr=sattr(mode=0o666))).obj.handle
        ok(c.setattr(fh, sattr(mode=mode)))  # root's: mode as asked, set-ID bits too
        return fh

    def mode(fh: nfs3.nfs_fh3) -> int:
        return int(ok(c.getattr(fh)).obj_attributes.mode)

    def write(uid: int, fh: nfs3.nfs_fh3) -> int:
        args = nfs3.WRITE3args(fh, 0, 4, nfs3.FILE_SYNC, b"evil")
        return int(
            ok(as_user(c, uid, nfs3.NFSPROC3_WRITE, "WRITE3", args)).file_wcc.after.attributes.mode
        )

    def truncate(uid: int, fh: nfs3.nfs_fh3) -> None:
        args = nfs3.SETATTR3args(fh, sattr(size=0), nfs3.sattrguard3(False))
        ok(as_user(c, uid, nfs3.NFSPROC3_SETATTR, "SETATTR3", args))

    for mode_before, dropped in (
        (0o6777, 0o777),
        (0o4757, 0o757),
        (0o2676, 0o676),
        (0o2666, 0o2666),
    ):
        fh = make(b"w%o" % mode_before, mode_before)
        assert write(0, fh) == mode_before and mode(fh) == mode_before  # root keeps them
        assert write(1000, fh) == dropped  # the reply's attributes after the write
        assert mode(fh) == dropped
        assert c.read_all(fh, 4) == b"evil"
        fh = make(b"t%o" % mode_before, mode_before)
        truncate(0, fh)
        assert mode(fh) == mode_before
        truncate(1000, fh)
        assert mode(fh) == dropped
        fh = make(b"c%o" % mode_before, mode_before)  # CREATE over it: a truncate
        ok(c.write(fh, 0, b"data"))
        how = nfs3.createhow3(nfs3.UNCHECKED, obj_attributes=sattr(size=0))
        args = nfs3.CREATE3args(nfs3.diropargs3(d, b"c%o" % mode_before), how)
        ok(as_user(c, 1000, nfs3.NFSPROC3_CREATE, "CREATE3", args))
        assert mode(fh) == dropped


def test_an_inline_write_to_a_set_id_file_goes_to_a_worker(c: SessionCaller) -> None:
    """Dropping the bits is a transaction: the loop's WRITE (nowait) hands the call to
    a worker before anything changed; a WRITE to a file without them stays inline."""
    fh = ok(c.create(folder(c), b"tool", sattr=sattr(mode=0o666))).obj.handle
    ok(c.setattr(fh, sattr(mode=0o4777)))
    p = NFS3Packer()
    p.pack_WRITE3args(nfs3.WRITE3args(fh, 0, 4, nfs3.FILE_SYNC, b"evil"))
    rec = call(
        nfs3.NFS_PROGRAM, 3, nfs3.NFSPROC3_WRITE, p.get_buffer(), xid=91, cred=auth_sys(1000, 1000)
    )
    with pytest.raises(WouldBlock):
        c.dispatcher.dispatch(rec, c.peer, "tcp", True)
    assert ok(c.getattr(fh)).obj_attributes.mode == 0o4777
    assert c.read_all(fh, 4) == b""
    reply = settle(c.dispatcher.dispatch(rec, c.peer, "tcp"), 30)  # a worker's
    assert reply is not None
    reply.free()
    assert ok(c.getattr(fh)).obj_attributes.mode == 0o777
    assert c.read_all(fh, 4) == b"evil"
    p = NFS3Packer()
    p.pack_WRITE3args(nfs3.WRITE3args(fh, 4, 4, nfs3.FILE_SYNC, b"more"))
    again = call(
        nfs3.NFS_PROGRAM, 3, nfs3.NFSPROC3_WRITE, p.get_buffer(), xid=92, cred=auth_sys(1000, 1000)
    )
    inline = settle(c.dispatcher.dispatch(again, c.peer, "tcp", True), 30)
    assert inline is not None
    inline.free()
    assert c.read_all(fh, 8) == b"evilmore"


def test_a_missing_session_is_answered_as_one_not_admitted(
    base: FakeNamespace, tmp_path: Path
) -> None:
    """mountd's get_rootfh: a path exported to no entry for this host is
    MNT3ERR_ACCES whether it exists or not: a stranger cannot tell which
    session names exist; a listed host's missing folder below one is NOENT."""
    c = SessionCaller(base, tmp_path / "state", peer="10.66.6.6:900")
    c.start("payroll-db", {"web01": ("vm",)}, clients="10.0.0.9(insecure)")
    try:
        for name in (b"payroll-db", b"no-such-session", b"payroll-db/web01"):
            assert c.mount(b"/recover/instant/" + name).fhs_status == mount3.MNT3ERR_ACCES
        c.peer = "10.0.0.9:900"
        assert c.mount(b"/recover/instant/no-such-session").fhs_status == mount3.MNT3ERR_ACCES
        assert c.mount(b"/recover/instant/payroll-db/nothing").fhs_status == mount3.MNT3ERR_NOENT
        assert c.mount(b"/recover/instant/payroll-db").fhs_status == mount3.MNT3_OK
    finally:
        c.manager.close()
