"""Every NFSv3 procedure, bytes in and bytes out: listings, refusals, limits."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.proto.calls import call, parse, unchanged_sattr
from tests.proto.fakens import FakeNamespace
from tests.proto.nfsclient import Caller
from xdr import nfs3, rpc
from xdr.nfs3 import NFS3Packer

N = 10_000


@pytest.fixture(scope="module")
def ns() -> FakeNamespace:
    tree: dict = {("big",): None, ("f",): b"data", ("d",): None, ("d", "x"): b"1"}
    for i in range(N):
        tree[("big", f"entry-{i:05d}-{'n' * (i % 40)}")] = b""
    n = FakeNamespace(tree)
    yield n
    n.close()


@pytest.fixture()
def c(ns: FakeNamespace) -> Caller:
    return Caller(ns)


def reply_size(c: Caller, proc: int, pack) -> int:  # type: ignore[no-untyped-def]
    p = NFS3Packer()
    pack(p)
    record = call(nfs3.NFS_PROGRAM, 3, proc, p.get_buffer())
    return len(parse([c.raw(record)]).body)


def list_all(c: Caller, plus: bool, count: int) -> list[bytes]:
    fh = c.walk("big")
    names: list[bytes] = []
    cookie = 0
    verf = b"\0" * 8
    for _ in range(N + 2):
        if plus:
            res = c.readdirplus(fh, cookie, dircount=count, maxcount=count, verf=verf)
        else:
            res = c.readdir(fh, cookie, count=count, verf=verf)
        assert res.status == nfs3.NFS3_OK
        verf = res.resok.cookieverf
        entries = res.resok.reply.entries
        names += [e.name for e in entries]
        if plus:
            for e in entries:
                assert e.name_attributes.attributes_follow
                assert e.name_handle.handle_follows
        if res.resok.reply.eof:
            return names
        assert entries, "no progress without eof"
        cookie = entries[-1].cookie
    raise AssertionError("listing did not end")


@pytest.mark.parametrize("plus", [False, True])
@pytest.mark.parametrize("count", [1024, 8192, 65536, 1 << 20])
def test_10000_entries_list_completely_each_name_once(c: Caller, plus: bool, count: int) -> None:
    names = list_all(c, plus, count)
    assert len(names) == N
    assert len(set(names)) == N


@settings(max_examples=30, deadline=None)
@given(count=st.integers(0, 20000))
def test_readdir_reply_never_exceeds_count(ns: FakeNamespace, count: int) -> None:
    c = Caller(ns)
    fh = c.walk("big")
    size = reply_size(
        c,
        nfs3.NFSPROC3_READDIR,
        lambda p: p.pack_READDIR3args(nfs3.READDIR3args(fh, 0, b"\0" * 8, count)),
    )
    res = c.readdir(fh, 0, count=count)
    if res.status == nfs3.NFS3_OK:
        assert size <= count
    else:
        assert res.status == nfs3.NFS3ERR_TOOSMALL


@pytest.mark.parametrize("plus", [False, True])
def test_a_count_of_2_32_minus_1_gets_one_page_of_at_most_1_mib(c: Caller, plus: bool) -> None:
    """READDIRPLUS of 10,000 entries does not fit 1 MiB: the page stops there."""
    fh = c.walk("big")
    huge = 2**32 - 1
    if plus:
        args = nfs3.READDIRPLUS3args(fh, 0, b"\0" * 8, huge, huge)
        size = reply_size(c, nfs3.NFSPROC3_READDIRPLUS, lambda p: p.pack_READDIRPLUS3args(args))
        reply = c.readdirplus(fh, 0, dircount=huge, maxcount=huge).resok.reply
    else:
        args3 = nfs3.READDIR3args(fh, 0, b"\0" * 8, huge)
        size = reply_size(c, nfs3.NFSPROC3_READDIR, lambda p: p.pack_READDIR3args(args3))
        reply = c.readdir(fh, 0, count=huge).resok.reply
    assert size <= 1024 * 1024
    assert reply.entries
    assert reply.eof == (not plus)
    if plus:
        assert size > 1024 * 1024 - 300


@settings(max_examples=30, deadline=None)
@given(maxcount=st.integers(0, 40000), dircount=st.integers(0, 40000))
def test_readdirplus_reply_never_exceeds_maxcount(
    ns: FakeNamespace, maxcount: int, dircount: int
) -> None:
    c = Caller(ns)
    fh = c.walk("big")
    args = nfs3.READDIRPLUS3args(fh, 0, b"\0" * 8, dircount, maxcount)
    size = reply_size(c, nfs3.NFSPROC3_READDIRPLUS, lambda p: p.pack_READDIRPLUS3args(args))
    res = c.readdirplus(fh, 0, dircount=dircount, maxcount=maxcount)
    if res.status == nfs3.NFS3_OK:
        assert size <= maxcount
    else:
        assert res.status == nfs3.NFS3ERR_TOOSMALL


def test_cookies_survive_entries_coming_and_going(ns: FakeNamespace) -> None:
    tree = {("d",): None, **{("d", f"n{i}"): b"" for i in range(300)}}
    n = FakeNamespace(tree)
    c = Caller(n)
    fh = c.walk("d")
    first = c.readdir(fh, 0, count=2048).resok
    seen = [e.name for e in first.reply.entries]
    # Remove an entry already listed and add new ones; resume with the old cookie.
    del n.tree[("d", seen[0].decode())]
    for i in range(300, 350):
        n.tree[("d", f"n{i}")] = None
    cookie = first.reply.entries[-1].cookie
    while True:
        res = c.readdir(fh, cookie, count=2048, verf=first.cookieverf)
        assert res.status == nfs3.NFS3_OK
        seen += [e.name for e in res.resok.reply.entries]
        if res.resok.reply.eof:
            break
        cookie = res.resok.reply.entries[-1].cookie
    assert len(seen) == len(set(seen))
    assert {f"n{i}".encode() for i in range(1, 300)} <= set(seen) | {seen[0]}
    n.close()


def test_an_unknown_cookie_verifier_is_not_refused(c: Caller) -> None:
    res = c.readdir(c.walk("d"), 0, verf=b"whatever")
    assert res.status == nfs3.NFS3_OK


def test_readdir_of_a_file_is_notdir(c: Caller) -> None:
    assert c.readdir(c.walk("f")).status == nfs3.NFS3ERR_NOTDIR
    assert c.readdirplus(c.walk("f")).status == nfs3.NFS3ERR_NOTDIR


def test_access_never_grants_modify_extend_delete(c: Caller) -> None:
    everything = 0x3F
    for fh, expect in (
        (c.root(), nfs3.ACCESS3_READ | nfs3.ACCESS3_LOOKUP),
        (c.walk("f"), nfs3.ACCESS3_READ),
    ):
        res = c.nfs(
            nfs3.NFSPROC3_ACCESS,
            lambda p, fh=fh: p.pack_ACCESS3args(nfs3.ACCESS3args(fh, everything)),
            "unpack_ACCESS3res",
        )
        assert res.status == nfs3.NFS3_OK
        assert res.resok.access == expect


def test_fsinfo_offers_1mib_and_huge_files(c: Caller) -> None:
    res = c.nfs(
        nfs3.NFSPROC3_FSINFO,
        lambda p: p.pack_FSINFO3args(nfs3.FSINFO3args(c.root())),
        "unpack_FSINFO3res",
    )
    ok = res.resok
    assert (ok.rtmax, ok.rtpref, ok.maxfilesize) == (1 << 20, 1 << 20, 2**63 - 1)
    assert (ok.time_delta.seconds, ok.time_delta.nseconds) == (0, 1)


def test_fsstat_and_pathconf(c: Caller) -> None:
    st_ = c.nfs(
        nfs3.NFSPROC3_FSSTAT,
        lambda p: p.pack_FSSTAT3args(nfs3.FSSTAT3args(c.root())),
        "unpack_FSSTAT3res",
    )
    assert st_.status == nfs3.NFS3_OK and st_.resok.abytes == 0
    pc = c.nfs(
        nfs3.NFSPROC3_PATHCONF,
        lambda p: p.pack_PATHCONF3args(nfs3.PATHCONF3args(c.root())),
        "unpack_PATHCONF3res",
    )
    assert pc.status == nfs3.NFS3_OK and pc.resok.name_max == 255


def test_readlink_is_inval_there_are_no_symlinks(c: Caller) -> None:
    res = c.nfs(
        nfs3.NFSPROC3_READLINK,
        lambda p: p.pack_READLINK3args(nfs3.READLINK3args(c.walk("f"))),
        "unpack_READLINK3res",
    )
    assert res.status == nfs3.NFS3ERR_INVAL


def modifying_calls(f: nfs3.nfs_fh3, d: nfs3.nfs_fh3) -> list[tuple[int, str, object, int]]:
    """(proc, name, args, wcc/attr words expected to carry attributes)."""
    where = nfs3.diropargs3(d, b"new")
    return [
        (
            nfs3.NFSPROC3_SETATTR,
            "SETATTR3",
            nfs3.SETATTR3args(f, unchanged_sattr(), nfs3.sattrguard3(False)),
            1,
        ),
        (nfs3.NFSPROC3_WRITE, "WRITE3", nfs3.WRITE3args(f, 0, 3, nfs3.FILE_SYNC, b"abc"), 1),
        (
            nfs3.NFSPROC3_CREATE,
            "CREATE3",
            nfs3.CREATE3args(where, nfs3.createhow3(nfs3.UNCHECKED, unchanged_sattr())),
            1,
        ),
        (nfs3.NFSPROC3_MKDIR, "MKDIR3", nfs3.MKDIR3args(where, unchanged_sattr()), 1),
        (
            nfs3.NFSPROC3_SYMLINK,
            "SYMLINK3",
            nfs3.SYMLINK3args(where, nfs3.symlinkdata3(unchanged_sattr(), b"x")),
            1,
        ),
        (
            nfs3.NFSPROC3_MKNOD,
            "MKNOD3",
            nfs3.MKNOD3args(
                where, nfs3.mknoddata3(nfs3.NF3FIFO, pipe_attributes=unchanged_sattr())
            ),
            1,
        ),
        (nfs3.NFSPROC3_REMOVE, "REMOVE3", nfs3.REMOVE3args(nfs3.diropargs3(d, b"x")), 1),
        (nfs3.NFSPROC3_RMDIR, "RMDIR3", nfs3.RMDIR3args(nfs3.diropargs3(d, b"x")), 1),
        (
            nfs3.NFSPROC3_RENAME,
            "RENAME3",
            nfs3.RENAME3args(nfs3.diropargs3(d, b"x"), nfs3.diropargs3(d, b"y")),
            2,
        ),
        (nfs3.NFSPROC3_LINK, "LINK3", nfs3.LINK3args(f, where), 2),
        (nfs3.NFSPROC3_COMMIT, "COMMIT3", nfs3.COMMIT3args(f, 0, 0), 1),
    ]


def test_every_modifying_procedure_is_rofs_with_wcc_data(c: Caller) -> None:
    f, d = c.walk("d", "x"), c.walk("d")
    for proc, name, args, _ in modifying_calls(f, d):
        res = c.nfs(
            proc,
            lambda p, name=name, args=args: getattr(p, f"pack_{name}args")(args),
            f"unpack_{name}res",
        )
        assert res.status == nfs3.NFS3ERR_ROFS, name
        fail = res.resfail
        wccs = [v for v in vars_of(fail) if isinstance(v, nfs3.wcc_data)]
        for w in wccs:
            assert w.before.attributes_follow and w.after.attributes_follow, name


def vars_of(obj: object) -> list[object]:
    return [getattr(obj, s) for s in obj.__slots__]  # type: ignore[attr-defined]


def test_modifying_with_a_bad_handle_is_badhandle_not_rofs(c: Caller) -> None:
    bad = nfs3.nfs_fh3(b"\1" * 30)
    res = c.nfs(
        nfs3.NFSPROC3_SETATTR,
        lambda p: p.pack_SETATTR3args(
            nfs3.SETATTR3args(bad, unchanged_sattr(), nfs3.sattrguard3(False))
        ),
        "unpack_SETATTR3res",
    )
    assert res.status == nfs3.NFS3ERR_BADHANDLE


def test_nfs_v2_is_prog_mismatch_3_3(c: Caller) -> None:
    r = parse([c.raw(call(nfs3.NFS_PROGRAM, 2, 0))])
    assert r.stat == rpc.PROG_MISMATCH
    assert r.body == b"\0\0\0\3\0\0\0\3"


def test_a_handle_longer_than_64_bytes_is_garbage_args(c: Caller) -> None:
    args = b"\0\0\0\x41" + b"\0" * 68
    r = parse([c.raw(call(nfs3.NFS_PROGRAM, 3, nfs3.NFSPROC3_GETATTR, args))])
    assert r.stat == rpc.GARBAGE_ARGS


def test_every_procedure_number_has_an_answer(c: Caller) -> None:
    for proc in range(22):
        r = parse([c.raw(call(nfs3.NFS_PROGRAM, 3, proc, b""))])
        assert r.stat in (rpc.SUCCESS, rpc.GARBAGE_ARGS), proc
    assert parse([c.raw(call(nfs3.NFS_PROGRAM, 3, 22, b""))]).stat == rpc.PROC_UNAVAIL


def test_listings_over_udp_fit_a_datagram(ns: FakeNamespace) -> None:
    c = Caller(ns, transport="udp")
    fh = c.walk("big")
    for proc, pack in (
        (
            nfs3.NFSPROC3_READDIR,
            lambda p: p.pack_READDIR3args(nfs3.READDIR3args(fh, 0, b"\0" * 8, 1 << 20)),
        ),
        (
            nfs3.NFSPROC3_READDIRPLUS,
            lambda p: p.pack_READDIRPLUS3args(
                nfs3.READDIRPLUS3args(fh, 0, b"\0" * 8, 1 << 20, 1 << 20)
            ),
        ),
    ):
        assert reply_size(c, proc, pack) <= 32 * 1024


def test_a_first_listing_leaves_the_reader_then_its_pages_stay(ns: FakeNamespace) -> None:
    import pytest as _pytest

    from nfsd.rpc import WouldBlock

    c = Caller(ns)
    fh = c.walk("d")
    p = NFS3Packer()
    p.pack_READDIR3args(nfs3.READDIR3args(fh, 0, b"\0" * 8, 4096))
    record = call(nfs3.NFS_PROGRAM, 3, nfs3.NFSPROC3_READDIR, p.get_buffer())
    with _pytest.raises(WouldBlock):
        c.dispatcher.dispatch(record, "127.0.0.1:900", "tcp", inline=True)
    assert c.dispatcher.dispatch(record, "127.0.0.1:900", "tcp") is not None  # on a worker
    assert c.dispatcher.dispatch(record, "127.0.0.1:900", "tcp", inline=True) is not None
