"""A session's WRITE through the fast path (``nfs3.fastwrite``) answers as the general path.

One dispatcher, its fast path on or off (``Dispatcher._fast``), over the same
sessions: every generated WRITE is sent through the general path first (the
session then holds what the call writes, and the credential cache is warm),
then with a new xid through each path; both answers must be the same bytes
after the xid.  The clock of the sessions is frozen, so a rewrite of the
same bytes leaves the same wcc.  Generated: clients that are refused, read
only or writable; owners and modes; forged handles, unknown sessions, a
directory, the read-only export's handle, garbage; offsets and lengths
beyond the file, over the loop's limit; a count that is not the data's
length, a bad ``stable_how``, records cut short or too long; a session with
no space left (quota 0).  A separate test checks the fast path does serve
ordinary WRITEs (else this compares the general path with itself).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nfsd.programs.handles import HandleCodec
from nfsd.programs.nfs3.router import INLINE_WRITE
from nfsd.rpc import WouldBlock, settle
from tests.proto.calls import auth_sys, call, unchanged_sattr
from tests.proto.fakens import FakeNamespace, fileid_of
from tests.proto.nfsclient import SECRET
from tests.proto.sessionclient import SessionCaller
from xdr import nfs3
from xdr.nfs3 import NFS3Packer, NFS3Unpacker

DISK = bytes(range(256)) * 64  # 16 KiB
FROZEN = 1_700_000_000_123_456_789
WRITABLE, READ_ONLY, REFUSED = "127.0.0.1:900", "10.0.0.2:900", "10.0.0.9:900"
CLIENTS = "127.0.0.1(insecure,no_root_squash) 10.0.0.2(insecure,ro)"


class World:
    """Two sessions (``s1``; ``s2`` with a quota of 0) and the handles to write with."""

    def __init__(self, tmp: Path) -> None:
        self.base = FakeNamespace(
            {("vm",): None, ("vm", "disk-flat.vmdk"): DISK, ("vm", "a.vmx"): b"x=1\n"}
        )
        self.c = SessionCaller(self.base, tmp / "state", peer=WRITABLE)
        self.c.start("s1", {"web01": ("vm",)}, clients=CLIENTS)
        self.c.start("s2", {"web01": ("vm",)}, clients=CLIENTS, quota=0)
        self.handles: dict[str, nfs3.nfs_fh3] = {}
        for name in ("s1", "s2"):
            d = self.c.lookup(self.c.session_root(name), b"web01").resok.object
            disk = self.c.lookup(d, b"disk-flat.vmdk").resok.object
            self.handles[f"{name}-disk"] = disk
            self.handles[f"{name}-dir"] = d
            session = self.c.manager.by_export(f"/recover/instant/{name}")
            assert session is not None
            session.ns.clock = lambda: FROZEN
        vmx = self.c.lookup(self.handles["s1-dir"], b"a.vmx").resok.object
        sa = unchanged_sattr()
        sa.mode = nfs3.set_mode3(True, 0o600)
        assert self.c.setattr(vmx, sa).status == nfs3.NFS3_OK
        self.handles["s1-vmx"] = vmx  # mode 0600, owned by root: uid 1000 may not write
        disk = self.handles["s1-disk"].data
        self.handles["forged"] = nfs3.nfs_fh3(bytes(disk[:-1]) + bytes([disk[-1] ^ 1]))
        self.handles["gone"] = nfs3.nfs_fh3(bytes(disk[:1]) + b"\xee" * 8 + bytes(disk[9:]))
        ro = HandleCodec(None, SECRET).encode(("f",), fileid_of(("f",)))  # type: ignore[arg-type]
        self.handles["readonly-export"] = nfs3.nfs_fh3(ro)
        self.handles["garbage"] = nfs3.nfs_fh3(b"\x02" + b"\0" * 3)

    def close(self) -> None:
        self.c.manager.close()
        self.base.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("fastwrite"))
    yield w
    w.close()


def answer(w: World, record: bytes, peer: str, inline: bool, fast: bool) -> bytes | str | None:
    """The reply's bytes after the xid (settled), as the transport would serve the call:
    inline first, then on a worker if it says WouldBlock."""
    d = w.c.dispatcher
    keep = d._fast
    if not fast:
        d._fast = None
    try:
        try:
            reply = d.dispatch(record, peer, "tcp", inline)
        except WouldBlock:
            reply = d.dispatch(record, peer, "tcp", False)
        reply = settle(reply, 30)
    finally:
        d._fast = keep
    if reply is None:
        return None
    data = b"".join(bytes(p) for p in reply.parts)
    reply.free()
    return data[4:]


_XIDS = itertools.count(1 << 20)
OTHER_HANDLES = ["s1-dir", "s1-vmx", "s2-disk", "forged", "gone", "readonly-export", "garbage"]
FLAWS = ["ordinary"] * 6 + ["count", "stable", "short", "long", "vers"]


@st.composite
def writes(draw: st.DrawFn) -> tuple[str, str, int, int, int, bytes]:
    """(flaw, handle's name, offset, count, stable, data)."""
    flaw = draw(st.sampled_from(FLAWS))
    fh = draw(st.sampled_from(["s1-disk"] * 4 + OTHER_HANDLES))
    n = draw(st.sampled_from([0, 1, 100, 4096, 4096, INLINE_WRITE, INLINE_WRITE + 4]))
    offset = draw(st.sampled_from([0, 1, 4096, len(DISK) - 1, len(DISK), 1 << 20, 2**63]))
    data = bytes([draw(st.integers(0, 255))]) * n
    count = n + draw(st.sampled_from([-1, 1, 1000])) if flaw == "count" and n else n
    stable = draw(st.sampled_from([3, 7, 2**31])) if flaw == "stable" else nfs3.FILE_SYNC
    return flaw, fh, offset, count, stable, data


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    case=writes(),
    peer=st.sampled_from([WRITABLE, WRITABLE, READ_ONLY, REFUSED]),
    uid=st.sampled_from([0, 1000]),
    inline=st.booleans(),
    cut=st.integers(1, 40),
)
def test_a_session_write_is_answered_as_the_general_path(  # noqa: PLR0917
    world: World, case: tuple, peer: str, uid: int, inline: bool, cut: int
) -> None:
    flaw, name, offset, count, stable, data = case
    fh = world.handles[name]
    p = NFS3Packer()
    p.pack_uint(len(fh.data))
    p.pack_fopaque(len(fh.data), fh.data)
    p.pack_uhyper(offset)
    p.pack_uint(count)
    p.pack_uint(stable)
    p.pack_uint(len(data))
    p.pack_fopaque(len(data), data)
    body = p.get_buffer()

    def record(x: int) -> bytes:
        rec = call(
            nfs3.NFS_PROGRAM, 2 if flaw == "vers" else 3, nfs3.NFSPROC3_WRITE, body,
            xid=x, cred=auth_sys(uid, uid),
        )  # fmt: skip
        if flaw == "short":
            return rec[: len(rec) - cut]
        if flaw == "long":
            return rec + b"\0" * cut
        return rec

    # Each example its own xids: hypothesis draws small ones often, and an xid
    # an earlier example used with the same arguments would be a reply-cache hit.
    xid = next(_XIDS) * 4
    answer(world, record(xid), peer, inline, fast=False)  # the state the others find
    fast = answer(world, record(xid + 1), peer, inline, fast=True)
    general = answer(world, record(xid + 2), peer, inline, fast=False)
    assert fast == general, (flaw, name, peer, uid, inline)


def test_the_fast_path_serves_ordinary_writes_and_their_duplicates(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ordinary session WRITE is the fast path's (inline and on a worker); a
    duplicate of a finished one gets its first answer; refusals are left to the
    general path (None) before anything is recorded."""
    inner = world.c.dispatcher._fast
    assert inner is not None
    writes = inner.__self__.writes  # type: ignore[attr-defined]
    served: list[bool] = []

    def counting(*a):  # type: ignore[no-untyped-def]
        reply = writes(*a)
        served.append(reply is not None)
        return reply

    monkeypatch.setattr(inner.__self__, "writes", counting)  # type: ignore[attr-defined]
    fh = world.handles["s1-disk"]
    p = NFS3Packer()
    p.pack_WRITE3args(nfs3.WRITE3args(fh, 8192, 4096, nfs3.FILE_SYNC, b"F" * 4096))
    for inline in (True, False):
        rec = call(nfs3.NFS_PROGRAM, 3, nfs3.NFSPROC3_WRITE, p.get_buffer(), xid=77 + inline,
                   cred=auth_sys(0, 0))  # fmt: skip
        served.clear()
        first = answer(world, rec, WRITABLE, inline, fast=True)
        again = answer(world, rec, WRITABLE, inline, fast=True)  # finished: the first answer
        assert served == [True, True]
        assert first == again and isinstance(first, bytes)
        drc = writes.__self__.quick.__self__.drc
        hits = drc.hits
        # Its retransmission through the general path is the same call (the same key).
        assert answer(world, rec, WRITABLE, inline, fast=False) == first
        assert drc.hits == hits + 1
        u = NFS3Unpacker(first[20:])  # after the accepted header
        res = u.unpack_WRITE3res()
        assert res.status == nfs3.NFS3_OK and res.resok.committed == nfs3.FILE_SYNC
        served.clear()
        assert answer(world, b"\1\2\3\4" + rec[4:], REFUSED, inline, fast=True)
        assert served == [False]  # refused: left to the general path
    assert world.c.read_all(fh, len(DISK))[8192:12288] == b"F" * 4096


def test_an_unexpected_failure_of_a_deferred_write_is_answered_as_the_general_path(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug once the write is durable (here: its wcc bytes) is logged and answered
    NFS3ERR_SERVERFAULT by either path, the same bytes, and the reply cache forgets
    the call (a retransmission runs it again)."""
    from nfsd.programs.nfs3 import write

    def broken(*a: object) -> bytes:
        raise RuntimeError("a bug")

    monkeypatch.setattr(write, "wcc_ok_bytes", broken)
    p = NFS3Packer()
    p.pack_WRITE3args(nfs3.WRITE3args(world.handles["s1-disk"], 0, 4, nfs3.FILE_SYNC, b"bug!"))

    def rec(xid: int) -> bytes:
        return call(nfs3.NFS_PROGRAM, 3, nfs3.NFSPROC3_WRITE, p.get_buffer(), xid=xid,
                    cred=auth_sys(0, 0))  # fmt: skip

    answer(world, rec(500), WRITABLE, True, fast=False)  # the credential cache warm
    fast = answer(world, rec(501), WRITABLE, True, fast=True)
    general = answer(world, rec(502), WRITABLE, True, fast=False)
    assert fast == general and isinstance(fast, bytes)
    u = NFS3Unpacker(fast[20:])
    assert u.unpack_uint() == nfs3.NFS3ERR_SERVERFAULT
    assert caplog.text.count("unexpected error in WRITE") == 3
    monkeypatch.undo()
    again = answer(world, rec(501), WRITABLE, True, fast=True)  # forgotten: run again
    assert isinstance(again, bytes) and NFS3Unpacker(again[20:]).unpack_uint() == nfs3.NFS3_OK
