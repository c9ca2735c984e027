"""Large session READs to a peer that is not loopback go out by reference.

A session's READ of ``SENDFILE_MIN`` or more on plain TCP, to a transport
that takes ``FileRun`` parts (``CallContext.sendfile``: a peer that is not
loopback), whose bytes are all in the page cache, sends the base's and the
data logs' runs with ``sendfile`` of a ``dup`` of their descriptors, as the
read-only export's does (``read.by_reference``): no copy in user space.
Checked: the bytes are the same READ copied (TLS) and a naive model's, over
rewritten, never written, truncated and regrown regions (hypothesis); the
same through a real socket whose send buffer is small, many READs in
flight; a queued run keeps the bytes of its READ over later writes of its
region and over its log's removal; a READ whose bytes are not cached, a
small one and a loopback peer's are not sent by reference.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given

from instant import store as store_mod
from merge.stack import build_namespace
from nfsd.programs.nfs3 import read
from nfsd.rpc import FileRun, Reply
from nfsd.transport.server import RpcServer
from nfsd.transport.tls import Security
from tests.proto import test_instant_read_mapping as mapping
from tests.proto.sessionclient import SessionCaller
from tests.proto.test_instant_read_mapping import SIZE, record
from tests.unit import test_read_sendfile as sendfile_test
from tests.unit.merge_helpers import KIB, MIB
from tests.unit.test_read_sendfile import marked, recv_record, runs_made
from xdr import nfs3

session = mapping.session  # the fixture: a session of one plain 2 MiB image

if not read.cachestat_works():
    pytest.skip("no cachestat here: READs are never sent by reference", allow_module_level=True)


def materialized(reply: Reply) -> tuple[int, bytes]:
    """(the reply's FileRuns, its bytes with each run read from its descriptor)."""
    runs = 0
    out = bytearray()
    for p in reply.parts:
        if type(p) is FileRun:
            runs += 1
            got = os.pread(p.fd, p.count, p.offset)
            assert len(got) == p.count
            out += got
        else:
            out += bytes(p)  # type: ignore[arg-type]
    return runs, bytes(out)


def served(c: SessionCaller, fh: nfs3.nfs_fh3, offset: int, count: int, **kw) -> tuple[int, bytes]:  # type: ignore[no-untyped-def]
    reply = c.dispatcher.dispatch(record(fh, offset, count), c.peer, "tcp", **kw)
    assert reply is not None
    try:
        runs, data = materialized(reply)
        return runs, data[4:]
    finally:
        reply.free()


def copied(c: SessionCaller, fh: nfs3.nfs_fh3, offset: int, count: int) -> bytes:
    """The same READ copied (TLS takes neither runs nor views); its pages cached after."""
    n, data = served(c, fh, offset, count, security=Security("tls"))
    assert n == 0
    return data


def test_never_written_rewritten_and_mixed_regions_are_sent_by_reference(session) -> None:  # type: ignore[no-untyped-def]
    c, fh, image = session
    c.write(fh, 300 * KIB, b"W" * (40 * KIB))  # a log run above RUN_MIN, between base runs
    image[300 * KIB : 340 * KIB] = b"W" * (40 * KIB)
    c.write(fh, MIB, b"L" * MIB)  # a large write: its pages dropped once durable
    image[MIB : 2 * MIB] = b"L" * MIB
    for at in (0, 4 * KIB, MIB - 1, MIB, SIZE - 300 * KIB):
        want = copied(c, fh, at, MIB)  # and now cached
        runs, sent = served(c, fh, at, MIB, sendfile=True)
        assert sent == want
        tail = bytes(image[at : at + MIB])
        assert sent.endswith(tail + b"\0" * (-len(tail) % 4))
        assert runs >= 1
    runs, _ = served(c, fh, 0, MIB, sendfile=True)
    assert runs >= 3  # base, log, base
    small, _ = served(c, fh, 0, read.SENDFILE_MIN - 1, sendfile=True)
    loopback, _ = served(c, fh, 0, MIB)  # sendfile off: views of mappings instead
    assert small == 0 and loopback == 0


def test_a_merged_image_its_changed_extents_and_rewrites_by_reference(tmp_path: Path) -> None:
    """A session of a merged image (``test_read_sendfile``'s: changed extents at every
    boundary, zeros past the base): its base's runs by reference, the pancbt's
    short ones copied in, a rewrite's from the log; the bytes of a naive model."""
    storage = tmp_path / "storage"
    (storage / "d").mkdir(parents=True)
    (storage / "d" / "disk-flat.vmdk").write_bytes(sendfile_test.BASE)
    (storage / "d" / "disk-pancbt.vmdk").write_bytes(sendfile_test.PANCBT)
    c = SessionCaller(build_namespace(str(storage)), tmp_path / "state")
    try:
        c.start("m", {"d": ("d",)})
        d = c.lookup(c.session_root("m"), b"d").resok.object
        fh = c.lookup(d, b"disk-flat.vmdk").resok.object
        model = bytearray(sendfile_test.MERGED)
        c.write(fh, 2 * MIB + 50 * KIB, b"r" * (100 * KIB))  # over a changed extent
        model[2 * MIB + 50 * KIB : 2 * MIB + 150 * KIB] = b"r" * (100 * KIB)
        for at in (0, 100 * KIB, MIB - 4096, 2 * MIB, len(model) - 300 * KIB):
            want = copied(c, fh, at, MIB)
            runs, sent = served(c, fh, at, MIB, sendfile=True)
            tail = bytes(model[at : at + MIB])
            assert sent == want and sent.endswith(tail + b"\0" * (-len(tail) % 4))
            assert runs >= 1 or at >= len(sendfile_test.BASE), at  # past the base: zeros
    finally:
        c.manager.close()


def test_uncached_bytes_are_copied(session, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    c, fh, _ = session
    want = copied(c, fh, 0, MIB)
    monkeypatch.setattr(read, "resident", lambda fd, start, length: False)
    runs, sent = served(c, fh, 0, MIB, sendfile=True)
    assert runs == 0 and sent == want


def test_a_queued_run_keeps_its_bytes_over_later_writes_and_its_logs_removal(session) -> None:  # type: ignore[no-untyped-def]
    """The log's bytes under a committed map never change, and a log the cleaning
    removes lives on behind the run's ``dup``: a reply made before a WRITE of its
    region, and before its log is unlinked, still sends the bytes of its READ."""
    c, fh, _ = session
    c.write(fh, 0, b"a" * (512 * KIB))
    copied(c, fh, 0, 512 * KIB)
    early = c.dispatcher.dispatch(record(fh, 0, 512 * KIB), c.peer, "tcp", sendfile=True)
    assert early is not None
    try:
        c.write(fh, 0, b"b" * (512 * KIB))
        assert copied(c, fh, 0, 512 * KIB).endswith(b"b" * (512 * KIB))
        store = next(iter(c.manager._by_key.values())).ns.store
        for name in os.listdir(store.dir):
            if name.startswith("log-"):
                os.unlink(store.dir / name)
        runs, data = materialized(early)
        assert runs >= 1 and data.endswith(b"a" * (512 * KIB))
    finally:
        early.free()
    assert all(p.fd == -1 for p in early.parts if type(p) is FileRun)


@mapping.MODEL_CASES
@given(ops=mapping.OPS, reads=mapping.reads_of(read.SENDFILE_MIN))
def test_reads_by_reference_equal_a_naive_model(session, monkeypatch, ops, reads) -> None:  # type: ignore[no-untyped-def]
    """Writes (small, large, past the end), truncates and regrowths, then READs sent
    by reference where they can be: the bytes of a naive model of the file, and
    of the same READ copied."""
    monkeypatch.setattr(store_mod, "REMAP_INTERVAL", 0.0)
    c, fh, _ = session
    model = mapping.changed(c, fh, ops)
    for at, n in reads:
        want_copied = copied(c, fh, at, n)  # (brings pages in)
        runs, sent = served(c, fh, at, n, sendfile=True)
        want = bytes(model[at : at + n])
        assert sent == want_copied
        assert sent.endswith(want + b"\0" * (-len(want) % 4))
        assert runs == 0 or len(want) >= read.RUN_MIN


@pytest.fixture()
def server(session) -> Iterator[tuple[SessionCaller, nfs3.nfs_fh3, bytearray, int]]:  # type: ignore[no-untyped-def]
    """The session served on loopback as to a remote peer (``sendfile_loopback``),
    its connections' send buffers small: every large reply goes out in many
    partial sends, the rest from the queue on POLLOUT."""
    c, fh, image = session
    srv = RpcServer(c.dispatcher, name="t", workers=2)
    srv.sendfile_loopback = True
    port = srv.listen("127.0.0.1", 0, udp=False)
    for s in srv._listeners:  # accepted sockets inherit it
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    srv.start()
    try:
        yield c, fh, image, port
    finally:
        srv.stop()


def test_through_a_socket_many_in_flight(server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    c, fh, _, port = server
    c.write(fh, 100 * KIB, b"x" * (70 * KIB))
    c.write(fh, MIB + 7, b"y" * (300 * KIB))
    made = runs_made(monkeypatch)
    calls = [(0, MIB), (MIB - 5, MIB), (SIZE - 400 * KIB, MIB), (64 * KIB, 300 * KIB)]
    records = [record(fh, at, n) for at, n in calls]
    want = {r[:4]: r[:4] + copied(c, fh, at, n) for r, (at, n) in zip(records, calls, strict=True)}
    made.clear()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(10)
        sock.sendall(b"".join(marked(r) for r in records))
        got = [recv_record(sock) for _ in records]
    assert {g[:4]: g for g in got} == want
    assert len(made) == len(records) and all(n >= 1 for n in made)
