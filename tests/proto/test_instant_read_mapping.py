"""Large session READs go out from the base's and the data logs' mappings.

A session's READ of 128 KiB or more on plain TCP whose bytes are all in
the page cache is answered with views of the base's mappings and of the
overlay's data logs' (``read.by_mapping``, ``SessionReader.maps``), as the
read-only export's is; a small one, one over TLS and one over UDP are
copied.  Either way the bytes are the file's as the session shows it:
checked against the same READ copied (TLS) and against a naive model of
the file, over rewritten, never written, partly rewritten, truncated and
regrown regions, and across the log's growth (a mapping made again).
"""

from __future__ import annotations

import mmap
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from instant import store as store_mod
from merge.stack import build_namespace
from nfsd.programs.nfs3 import read
from nfsd.rpc import Reply
from nfsd.transport.tls import Security
from tests.proto.calls import call, unchanged_sattr
from tests.proto.sessionclient import SessionCaller
from tests.unit.merge_helpers import KIB, MIB
from xdr import nfs3
from xdr.nfs3 import NFS3Packer

SIZE = 2 * MIB + 5000  # not a multiple of a block: EOF inside a READ


@pytest.fixture()
def session(tmp_path: Path) -> Iterator[tuple[SessionCaller, nfs3.nfs_fh3, bytearray]]:
    storage = tmp_path / "storage"
    (storage / "vm").mkdir(parents=True)
    image = bytearray(random.Random(7).randbytes(SIZE))
    (storage / "vm" / "disk-flat.vmdk").write_bytes(image)
    (storage / "vm" / "a.vmx").write_text("x=1\n")
    base = build_namespace(str(storage))
    caller = SessionCaller(base, tmp_path / "state")
    caller.start("s1", {"web01": ("vm",)})
    d = caller.lookup(caller.session_root("s1"), b"web01").resok.object
    fh = caller.lookup(d, b"disk-flat.vmdk").resok.object
    yield caller, fh, image
    caller.manager.close()


def record(fh: nfs3.nfs_fh3, offset: int, count: int) -> bytes:
    p = NFS3Packer()
    p.pack_READ3args(nfs3.READ3args(fh, offset, count))
    return call(nfs3.NFS_PROGRAM, 3, nfs3.NFSPROC3_READ, p.get_buffer(), xid=random.getrandbits(31))


def views(reply: Reply) -> int:
    return sum(
        1
        for p in reply.parts
        if isinstance(p, memoryview) and p.readonly and isinstance(p.obj, mmap.mmap)
    )


def served(c: SessionCaller, fh: nfs3.nfs_fh3, offset: int, count: int, **kw) -> tuple[int, bytes]:  # type: ignore[no-untyped-def]
    reply = c.dispatcher.dispatch(record(fh, offset, count), c.peer, "tcp", **kw)
    assert reply is not None
    try:
        return views(reply), b"".join(bytes(p) for p in reply.parts)[4:]  # type: ignore[arg-type]
    finally:
        reply.free()


def test_never_written_and_rewritten_regions_are_sent_from_mappings(session) -> None:  # type: ignore[no-untyped-def]
    c, fh, image = session
    offsets = [0, 4 * KIB, MIB - 1, SIZE - 200 * KIB, SIZE - 10]
    for at in offsets:  # the page cache holds the file: it was just written
        mapped_n, mapped = served(c, fh, at, MIB)
        copied_n, copied = served(c, fh, at, MIB, security=Security("tls"))
        assert copied_n == 0 and mapped == copied
        want = bytes(image[at : at + MIB])
        assert mapped.endswith(want + b"\0" * (-len(want) % 4))
        assert mapped_n >= 1 or len(want) < read.MAP_MIN
    small_n, _ = served(c, fh, 0, read.MAP_MIN - 1)
    assert small_n == 0
    # a partly rewritten region: base and log views in one reply
    c.write(fh, 300 * KIB, b"W" * 4096)
    image[300 * KIB : 300 * KIB + 4096] = b"W" * 4096
    n, over = served(c, fh, 0, MIB)
    assert n >= 3 and over.endswith(bytes(image[:MIB]))
    # a wholly rewritten region, by a large write (its pages dropped once
    # durable: copied until a READ brought them back, then mapped)
    c.write(fh, MIB, b"L" * MIB)
    image[MIB : 2 * MIB] = b"L" * MIB
    _, copied = served(c, fh, MIB, MIB, security=Security("tls"))
    n, over = served(c, fh, MIB, MIB)
    assert n == 1 and over == copied and over.endswith(bytes(image[MIB : 2 * MIB]))
    n, beside = served(c, fh, 2 * MIB, MIB)  # the rest of the file is still the base's
    assert n >= 1 and beside.endswith(bytes(image[2 * MIB :]))
    udp_n, _ = served_udp(c, fh)
    assert udp_n == 0


def served_udp(c: SessionCaller, fh: nfs3.nfs_fh3) -> tuple[int, bytes]:
    reply = c.dispatcher.dispatch(record(fh, MIB, MIB), c.peer, "udp")
    assert reply is not None
    try:
        return views(reply), b""
    finally:
        reply.free()


def test_a_queued_view_keeps_its_bytes_over_later_writes_and_the_logs_growth(
    session, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """A reply made before a WRITE of its region holds the old bytes (the
    log's bytes under a committed map never change); a READ past the log's
    mapping maps it again (no ``REMAP_INTERVAL`` here), the old mapping
    living on under its views."""
    monkeypatch.setattr(store_mod, "REMAP_INTERVAL", 0.0)
    c, fh, _ = session
    c.write(fh, 0, b"a" * (256 * KIB))
    served(c, fh, 0, 256 * KIB, security=Security("tls"))  # into the page cache
    early = c.dispatcher.dispatch(record(fh, 0, 256 * KIB), c.peer, "tcp")
    assert early is not None and views(early) == 1
    try:
        for i in range(4):  # the log grows past the mapping made for ``early``
            c.write(fh, i * 64 * KIB, bytes([0x62 + i]) * (64 * KIB))
        want = b"".join(bytes([0x62 + i]) * (64 * KIB) for i in range(4))
        served(c, fh, 0, 256 * KIB, security=Security("tls"))
        n, now = served(c, fh, 0, 256 * KIB)
        assert n >= 1 and now.endswith(want)
        assert b"".join(bytes(p) for p in early.parts).endswith(b"a" * (256 * KIB))
    finally:
        early.free()


MODEL_CASES = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
"""The settings of a test run on the ``session`` fixture with changes (:data:`OPS`)."""
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, 3 * MIB), st.integers(1, MIB)),
        st.tuples(st.just("size"), st.integers(0, 3 * MIB), st.just(0)),
    ),
    max_size=6,
)
"""Changes to make on the file (:func:`changed`): small and large writes, past the
end too, truncates and regrowths."""


def reads_of(least: int) -> st.SearchStrategy[list[tuple[int, int]]]:
    """1-4 READs (offset, count) of ``least`` bytes or more, past the end too."""
    return st.lists(
        st.tuples(st.integers(0, 3 * MIB), st.integers(least, MIB)), min_size=1, max_size=4
    )


@MODEL_CASES
@given(ops=OPS, reads=reads_of(read.MAP_MIN))
def test_mapped_reads_equal_a_naive_model(session, monkeypatch, ops, reads) -> None:  # type: ignore[no-untyped-def]
    """Writes (small, large, past the end), truncates and regrowths, then
    READs sent from the mappings where they can be (a log mapped again as
    soon as it grew: no ``REMAP_INTERVAL`` here): the bytes of a naive model
    of the file, and of the same READ copied."""
    monkeypatch.setattr(store_mod, "REMAP_INTERVAL", 0.0)
    c, fh, _ = session
    model = changed(c, fh, ops)
    for at, n in reads:
        _, copied = served(c, fh, at, n, security=Security("tls"))  # (brings pages in)
        n_views, mapped = served(c, fh, at, n)
        want = bytes(model[at : at + n])
        assert copied == mapped
        if want.strip(b"\0"):  # some bytes of the base or a log: sent from their mappings
            assert n_views >= 1
        assert mapped.endswith(want + b"\0" * (-len(want) % 4))
        assert int.from_bytes(mapped[-len(want) - (-len(want) % 4) - 4 :][:4], "big") == len(want)


def changed(c: SessionCaller, fh: nfs3.nfs_fh3, ops: list[tuple[str, int, int]]) -> bytearray:
    """``ops`` (``("write", offset, length)`` of random bytes, ``("size", size, 0)``)
    made on the file; a naive model of its bytes after them."""
    model = bytearray(c.read_all(fh, SIZE + 4 * MIB))
    rnd = random.Random(repr(ops))
    for kind, at, n in ops:
        if kind == "write":
            data = rnd.randbytes(n)
            assert c.write(fh, at, data).status == nfs3.NFS3_OK
            if len(model) < at:
                model.extend(bytes(at - len(model)))
            model[at : at + n] = data
        else:
            assert c.setattr(fh, sattr_size(at)).status == nfs3.NFS3_OK
            del model[at:]
            model.extend(bytes(max(0, at - len(model))))
    return model


def sattr_size(size: int) -> nfs3.sattr3:
    s = unchanged_sattr()
    s.size = nfs3.set_size3(True, size)
    return s
