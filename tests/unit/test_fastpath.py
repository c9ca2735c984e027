"""The fast path (GETATTR, ACCESS, READ, LOOKUP, READDIRPLUS) answers what the general path does.

Every generated call goes through two dispatchers over the same namespace
and the same exports: one with the NFS program's fast path, one without.
Each record is sent twice (the first call fills the credential and handle
caches the fast path relies on); every reply must be the same bytes, and a
WouldBlock must happen on both or neither.  A separate test checks that
the fast path does serve the ordinary calls (else the comparison would
only compare the general path with itself).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exports import parse as parse_exports
from merge.namespace import Attrs, PresentedPath
from nfsd.programs import build_programs
from nfsd.programs.access import AccessControl
from nfsd.programs.errors import NfsError
from nfsd.programs.handles import HandleCodec
from nfsd.programs.listings import cookie_of
from nfsd.programs.nfs3.readdir import readdirplus3
from nfsd.programs.nfs3.service import Nfs3Service
from nfsd.programs.sessions import HANDLE_SIZE
from nfsd.programs.sessions import VERSION as SESSION_VERSION
from nfsd.rpc import CallContext, Dispatcher, WouldBlock
from tests.proto.calls import call, parse
from tests.proto.fakens import FakeNamespace, fileid_of
from xdr import nfs3
from xdr.nfs3 import NFS3Packer, NFS3Unpacker
from xdr.rpc import AUTH_NONE, AUTH_SYS, RpcPacker, authsys_parms, opaque_auth

SECRET = b"s" * 32
DATA = bytes(range(256)) * 40  # 10,240 bytes


class Moded(FakeNamespace):
    """Files and folders of several owners and modes."""

    def _attrs(self, path: PresentedPath) -> Attrs:
        a = super()._attrs(path)
        if path == ("private",):
            return dataclasses.replace(a, mode=0o400, uid=1000, gid=1000)
        if path == ("group",):
            return dataclasses.replace(a, mode=0o040, uid=7, gid=1000)
        if path == ("closed",):
            return dataclasses.replace(a, mode=0o000, uid=7, gid=7)
        if path == ("locked",):
            return dataclasses.replace(a, mode=0o700, uid=1000, gid=1000)
        return a


PATHS: list[PresentedPath] = [
    (),
    ("f",),
    ("d",),
    ("private",),
    ("group",),
    ("closed",),
    ("locked",),
    ("locked", "inside"),
    ("many",),
]
MANY = [f"entry-{i:03}" for i in range(120)]  # a folder paged in several READDIRPLUS calls
NAMES = [b"f", b"d", b"private", b"locked", b"inside", b"nope", b".", b"..", b"", b"a/b", b"x\0"]
PROCS = [nfs3.NFSPROC3_GETATTR, nfs3.NFSPROC3_READ, nfs3.NFSPROC3_LOOKUP, nfs3.NFSPROC3_ACCESS]
PROCS += [nfs3.NFSPROC3_READDIRPLUS] * 2
FOLDERS = [(), ("d",), ("locked",), ("many",), ("many",), ("f",)]
# Cookies: from the start, each entry's (a page starting after it), none, the largest.
COOKIES = [0, 1, 2**63, 2**64 - 1, *(cookie_of(n) for n in (*MANY[::7], "f", "locked"))]
# dircount, maxcount: too small for one entry, nfs-ls's, a few entries, past 1 MiB.
COUNTS = [0, 8, 120, 300, 512, 1024, 4096, 8192, 2**20 + 1, 2**32 - 1]
LOOKUPS = [((), b"f"), ((), b"locked"), ((), b"nope"), (("locked",), b"inside")]

EXPORTS = [
    "/recover/images *(insecure,no_root_squash,sec=sys:none)\n",
    "/recover/images 10.0.0.2(root_squash)\n",
    "/recover/images 10.0.0.2(insecure,all_squash,anonuid=1000,anongid=1000)\n",
    "/recover/images 10.0.0.0/24(insecure,sec=none)\n",
    "/recover/images 10.0.0.9(insecure)\n",
]
PEERS = ["10.0.0.2:800", "10.0.0.2:40000", "10.0.0.3:700", "[::ffff:10.0.0.2]:900"]


@pytest.fixture(scope="module")
def ns() -> Iterator[Moded]:
    n = Moded(
        {
            ("f",): DATA,
            ("d",): None,
            ("private",): DATA[:100],
            ("group",): DATA[:33],
            ("closed",): b"x",
            ("locked",): None,
            ("locked", "inside"): b"in",
            ("many",): None,
            **{("many", name): name.encode() for name in MANY},
        }
    )
    yield n
    n.close()


def _dispatchers(ns: Moded, exports: str, listed: bool = False) -> tuple[Dispatcher, Dispatcher]:
    """Two dispatchers over ``ns``, with and without the fast path; ``listed``:
    each folder listed already in both (as on a server where an allowed client
    has listed them: the fast path's READDIRPLUS then reaches its checks)."""
    out = []
    for fast in (True, False):
        access = AccessControl(
            None, "/recover/images", Path("/nonexistent"), table=parse_exports(exports, "<t>")
        )
        programs = build_programs(ns, SECRET, access)
        if listed:
            nfs = next(p for p in programs if p.fast is not None)
            _list_folders(nfs.fast.__self__.svc)  # type: ignore[union-attr]
        if not fast:
            for p in programs:
                p.fast = None
        d = Dispatcher(programs)
        if fast:
            # As on a server that has run a while: every handle verified once
            # (by an allowed client, perhaps not the one calling now).
            codec = d._fast.__self__.svc.handles  # type: ignore[union-attr]
            for path in PATHS:
                codec.resolve(codec.encode(path, fileid_of(path)))
        out.append(d)
    return out[0], out[1]


def _list_folders(svc: Nfs3Service) -> None:
    """Every folder of FOLDERS listed by READDIRPLUS, past any access check."""
    cred = authsys_parms(0, b"", 0, 0, [])
    for folder in dict.fromkeys(FOLDERS):
        ctx = CallContext(
            1, nfs3.NFS_PROGRAM, 3, nfs3.NFSPROC3_READDIRPLUS, AUTH_SYS, cred, "", "tcp"
        )
        args = nfs3.READDIRPLUS3args(nfs3.nfs_fh3(_handle(folder)), 0, b"\0" * 8, 4096, 8192)
        with contextlib.suppress(NfsError):  # not a folder
            readdirplus3(svc, ctx, args)


def _cred(uid: int, gid: int, gids: list[int]) -> opaque_auth:
    p = RpcPacker()
    p.pack_authsys_parms(authsys_parms(5, b"client", uid, gid, gids))
    return opaque_auth(AUTH_SYS, p.get_buffer())


def _answer(
    d: Dispatcher, record: bytes, peer: str, inline: bool, alone: bool = False
) -> bytes | str | None:
    try:
        reply = d.dispatch(record, peer, "tcp", inline, alone=alone)
    except WouldBlock:
        return "WouldBlock"
    if reply is None:
        return None
    data = b"".join(bytes(p) for p in reply.parts)
    reply.free()
    return data


def _handle(path: PresentedPath) -> bytes:
    return HandleCodec(None, SECRET).encode(path, fileid_of(path))  # type: ignore[arg-type]


valid_handles = st.sampled_from(PATHS).map(_handle)
handles = st.one_of(
    valid_handles,
    valid_handles,
    valid_handles,
    st.binary(max_size=70),
    st.just(bytes([SESSION_VERSION]) + b"\0" * (HANDLE_SIZE - 1)),
)
creds = st.builds(
    _cred,
    st.sampled_from([0, 7, 1000, 1001]),
    st.sampled_from([0, 7, 1000, 5]),
    st.lists(st.sampled_from([0, 1000, 5]), max_size=3),
)
# Mostly ordinary calls (the fast path's), each of the rest now and then.
ORDINARY = "ordinary"
FLAWS = [ORDINARY] * 8 + ["vers", "rpcvers", "verf", "auth_none", "short", "long", "fsstat"]


@st.composite
def records(draw: st.DrawFn) -> bytes:
    flaw = draw(st.sampled_from(FLAWS))
    proc = draw(st.sampled_from(PROCS))
    if flaw == "fsstat":
        proc = nfs3.NFSPROC3_FSSTAT  # one the fast path leaves: the same handle argument
    fh = draw(handles)
    name = draw(st.sampled_from(NAMES) | st.binary(max_size=300))
    if proc == nfs3.NFSPROC3_LOOKUP and draw(st.booleans()):  # mostly a name in a folder
        folder, name = draw(st.sampled_from(LOOKUPS))
        fh = _handle(folder)
    if proc == nfs3.NFSPROC3_READDIRPLUS and draw(st.booleans()):  # mostly a folder
        fh = _handle(draw(st.sampled_from(FOLDERS)))
    p = NFS3Packer()
    p.pack_uint(len(fh))
    p.pack_fopaque(len(fh), fh)
    if proc == nfs3.NFSPROC3_READ:
        p.pack_uhyper(draw(st.sampled_from([0, 1, 4095, 4096, 10_000, 10_240, 2**40])))
        p.pack_uint(draw(st.sampled_from([0, 1, 100, 4096, 65_536, 65_537, 2**20, 2**21])))
    elif proc == nfs3.NFSPROC3_LOOKUP:
        p.pack_uint(len(name))
        p.pack_fopaque(len(name), name)
    elif proc == nfs3.NFSPROC3_ACCESS:
        p.pack_uint(draw(st.sampled_from([0x3F, 0x1, 0x2, 0x20, 0xFFFFFFFF, 0])))
    elif proc == nfs3.NFSPROC3_READDIRPLUS:
        p.pack_uhyper(draw(st.sampled_from(COOKIES)))
        p.pack_fopaque(8, draw(st.sampled_from([b"\0" * 8, b"verifier"])))
        p.pack_uint(draw(st.sampled_from(COUNTS)))  # dircount
        p.pack_uint(draw(st.sampled_from(COUNTS)))  # maxcount
    record = call(
        nfs3.NFS_PROGRAM,
        2 if flaw == "vers" else 3,
        proc,
        p.get_buffer(),
        xid=draw(st.integers(0, 2**32 - 1)),
        cred=opaque_auth(AUTH_NONE, b"") if flaw == "auth_none" else draw(creds),
        verf=opaque_auth(AUTH_SYS if flaw == "verf" else AUTH_NONE, b""),
        rpcvers=3 if flaw == "rpcvers" else 2,
    )
    if flaw == "short":
        record = record[: draw(st.integers(0, len(record) - 1))]
    elif flaw == "long":
        record += draw(st.binary(min_size=1, max_size=8))
    return record


@settings(
    max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    exports=st.sampled_from(EXPORTS),
    peer=st.sampled_from(PEERS),
    record=records(),
    # Inline READs of these memfd files are always WouldBlock (no RWF_NOWAIT): mostly not inline.
    inline=st.sampled_from([False, False, False, True]),
    alone=st.booleans(),
    listed=st.booleans(),
)
def test_fast_path_answers_as_the_general_path(  # noqa: PLR0917 (hypothesis arguments)
    ns: Moded, exports: str, peer: str, record: bytes, inline: bool, alone: bool, listed: bool
) -> None:
    fast, general = _dispatchers(ns, exports, listed)
    for _ in range(2):
        assert _answer(fast, record, peer, inline, alone) == _answer(
            general, record, peer, inline, alone
        )
    assert fast.fast_failures == 0  # a failure would be answered by the general path


def _counting(fast: Dispatcher, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether the fast path served each call from now on (a reply, not None)."""
    served: list[bool] = []
    inner = fast._fast
    assert inner is not None

    def counting(*args):  # type: ignore[no-untyped-def]
        reply = inner(*args)
        served.append(reply is not None)
        return reply

    monkeypatch.setattr(fast, "_fast", counting)
    return served


def test_fast_path_serves_the_ordinary_calls(ns: Moded, monkeypatch: pytest.MonkeyPatch) -> None:
    fast, _ = _dispatchers(ns, EXPORTS[0])
    served = _counting(fast, monkeypatch)
    fh = HandleCodec(ns, SECRET).encode(("f",), fileid_of(("f",)))  # type: ignore[arg-type]
    for args in (nfs3.GETATTR3args(nfs3.nfs_fh3(fh)), nfs3.READ3args(nfs3.nfs_fh3(fh), 5, 4096)):
        p = NFS3Packer()
        if isinstance(args, nfs3.GETATTR3args):
            p.pack_GETATTR3args(args)
            proc = nfs3.NFSPROC3_GETATTR
        else:
            p.pack_READ3args(args)
            proc = nfs3.NFSPROC3_READ
        record = call(nfs3.NFS_PROGRAM, 3, proc, p.get_buffer(), cred=_cred(1, 1, []))
        served.clear()
        for _ in range(3):
            reply = fast.dispatch(record, "10.0.0.2:1", "tcp")
            assert reply is not None
            reply.free()
        # The first call may fill the caches; the others take the fast path.
        assert served[1:] == [True, True]


def test_fast_path_pages_a_listing_after_its_first_call(
    ns: Moded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """READDIRPLUS through a folder: the first call lists and encodes it (the
    general path), every later page is the fast path's, and each page's bytes
    are the general path's, to the last entry and eof."""
    fast, general = _dispatchers(ns, EXPORTS[0])
    served = _counting(fast, monkeypatch)
    fh = nfs3.nfs_fh3(_handle(("many",)))
    cookie, names, eof, xid = 0, [], False, 7
    while not eof:
        p = NFS3Packer()
        p.pack_READDIRPLUS3args(nfs3.READDIRPLUS3args(fh, cookie, b"\0" * 8, 512, 1024))
        record = call(nfs3.NFS_PROGRAM, 3, nfs3.NFSPROC3_READDIRPLUS, p.get_buffer(), xid=xid,
                      cred=_cred(1, 1, []))  # fmt: skip
        xid += 1
        answer = _answer(fast, record, "10.0.0.2:1", False)
        assert answer == _answer(general, record, "10.0.0.2:1", False)
        assert isinstance(answer, bytes)
        res = NFS3Unpacker(parse([answer]).body).unpack_READDIRPLUS3res()
        assert res.status == nfs3.NFS3_OK
        entries = res.resok.reply.entries
        names += [e.name for e in entries]
        cookie, eof = entries[-1].cookie, res.resok.reply.eof
    assert names == sorted((n.encode() for n in MANY), key=lambda n: cookie_of(n.decode()))
    assert len(served) > 5
    assert served[0] is False  # the folder listed first by the general path
    assert all(served[1:])
    assert fast.fast_failures == 0


@pytest.mark.parametrize("exports", EXPORTS)
def test_every_caller_of_a_listed_folder_gets_the_general_paths_answer(
    ns: Moded, monkeypatch: pytest.MonkeyPatch, exports: str
) -> None:
    """Each folder listed already (by an allowed client): every host and user,
    allowed or not, gets from the fast path what the general path answers (a
    refused host, a folder it may not read, a file: the general path's error)."""
    fast, general = _dispatchers(ns, exports, listed=True)
    served = _counting(fast, monkeypatch)
    for folder in dict.fromkeys(FOLDERS):
        fh = nfs3.nfs_fh3(_handle(folder))
        p = NFS3Packer()
        p.pack_READDIRPLUS3args(nfs3.READDIRPLUS3args(fh, 0, b"\0" * 8, 1024, 2048))
        for uid in (0, 7, 1000, 1001):
            record = call(nfs3.NFS_PROGRAM, 3, nfs3.NFSPROC3_READDIRPLUS, p.get_buffer(),
                          cred=_cred(uid, uid, []))  # fmt: skip
            for peer in PEERS:
                for _ in range(2):  # the first call decodes the credential
                    want = _answer(general, record, peer, False)
                    assert _answer(fast, record, peer, False) == want
    assert fast.fast_failures == 0
    if exports == EXPORTS[0]:  # every host allowed: the readable folders' pages are fast
        assert served.count(True) >= len(PEERS) * 4 * 3


def test_a_sessions_listing_is_left_to_the_general_path(ns: Moded) -> None:
    """READDIRPLUS of a session's handle never reaches the sessions' quick path
    (it serves GETATTR, ACCESS, READ and LOOKUP only)."""
    fast, general = _dispatchers(ns, EXPORTS[0])
    asked = []
    fast._fast.__self__.sessions = lambda *args: asked.append(args)  # type: ignore[union-attr]
    fh = nfs3.nfs_fh3(bytes([SESSION_VERSION]) + b"\0" * (HANDLE_SIZE - 1))
    p = NFS3Packer()
    p.pack_READDIRPLUS3args(nfs3.READDIRPLUS3args(fh, 0, b"\0" * 8, 8192, 8192))
    record = call(nfs3.NFS_PROGRAM, 3, nfs3.NFSPROC3_READDIRPLUS, p.get_buffer(),
                  cred=_cred(1, 1, []))  # fmt: skip
    for inline in (False, True):
        for _ in range(2):
            assert _answer(fast, record, "10.0.0.2:1", inline) == _answer(
                general, record, "10.0.0.2:1", inline
            )
    assert asked == []
    assert fast.fast_failures == 0


def test_a_failing_fast_path_leaves_the_call_to_the_general_path_and_logs_rarely(
    ns: Moded, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in the fast path costs a traceback now and then, never a reply."""
    fast, general = _dispatchers(ns, EXPORTS[0])

    def broken(*args):  # type: ignore[no-untyped-def]
        raise RuntimeError("a bug")

    fast._fast = broken
    fh = _handle(("f",))
    p = NFS3Packer()
    p.pack_GETATTR3args(nfs3.GETATTR3args(nfs3.nfs_fh3(fh)))
    record = call(nfs3.NFS_PROGRAM, 3, nfs3.NFSPROC3_GETATTR, p.get_buffer(), cred=_cred(1, 1, []))
    for _ in range(50):
        assert _answer(fast, record, "10.0.0.2:1", False) == _answer(
            general, record, "10.0.0.2:1", False
        )
    assert fast.fast_failures == 50
    assert caplog.text.count("the fast path failed") == 1


def test_the_fast_paths_context_is_what_keywords_would_build() -> None:
    """``FastPath._context`` builds ``CallContext`` positionally: a field
    moved or added in ``CallContext`` must not shift its arguments."""
    from nfsd.programs.nfs3.fastpath import FastPath
    from nfsd.rpc import CallContext
    from nfsd.transport.tls import PLAIN

    fp = FastPath.__new__(FastPath)
    fp._cred = (None, authsys_parms(0, b"", 0, 0, []))
    fields = (7, b"host", 1000, 100, (5, 6))
    for inline, alone, sendfile in ((True, False, True), (False, True, False)):
        got = fp._context(0x1234, nfs3.NFSPROC3_READ, fields, "10.0.0.1:900", inline, alone,
                          PLAIN, sendfile)  # fmt: skip
        want = CallContext(
            0x1234, nfs3.NFS_PROGRAM, 3, nfs3.NFSPROC3_READ, AUTH_SYS,
            authsys_parms(7, b"host", 1000, 100, [5, 6]), "10.0.0.1:900", "tcp",
            inline=inline, alone=alone, security=PLAIN, sendfile=sendfile,
        )  # fmt: skip
        assert got == want
    assert fp._context(1, 1, fields, "p", True, True, PLAIN, False).cred is got.cred  # kept
