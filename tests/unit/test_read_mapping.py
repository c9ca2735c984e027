"""Large READs on plain TCP sent from the storage file's mapping (``read.by_mapping``).

Through a real socket whose send buffer is small (every large reply goes
out in many partial sends, the rest from the connection's queue on
POLLOUT), a client receives exactly the copying path's bytes: merged
images with changed extents at every boundary, zeros past the base, EOF,
several calls in flight.  A stalled queue keeps the views as they are (it
never reads them); a file cut short under a queued view closes the
connection, and the process lives; the pages the sends map in are
unmapped past the budget and at rest; TLS and UDP never get a view.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from merge.sources import FileSource, Handle
from merge.stack import build_namespace
from nfsd.programs import buffers as buffers_mod
from nfsd.programs.buffers import BufferPool
from nfsd.programs.nfs3 import read
from nfsd.transport import server as server_mod
from nfsd.transport.tls import Security
from tests.proto.nfsclient import Caller
from tests.unit.merge_helpers import KIB, MIB
from tests.unit.test_read_sendfile import (
    Served,
    _wait,
    marked,
    reads,
    received_are_the_copying_paths,
    recv_record,
    reference,
    storage,  # noqa: F401 (the fixture)
)

PEER = "127.0.0.1:900"

if not read.cachestat_works():
    pytest.skip("no cachestat here: READs are never sent from a mapping", allow_module_level=True)


@pytest.fixture(scope="module")
def served(storage: Path) -> Iterator[Served]:  # noqa: F811 (the fixture above)
    s = Served(storage)
    s.server.sendfile_loopback = False  # loopback: mappings, not FileRuns
    yield s
    s.server.stop()


def views(parts: list) -> list[memoryview]:  # type: ignore[type-arg]
    """The parts that are views of a file mapping."""
    return [
        p
        for p in parts
        if isinstance(p, memoryview) and p.readonly and isinstance(p.obj, mmap.mmap)
    ]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(calls=reads([4096, read.MAP_MIN - 1, read.MAP_MIN, 200 * KIB, MIB - 1, MIB]))
def test_bytes_received_are_the_copying_paths(served: Served, calls) -> None:  # type: ignore[no-untyped-def]
    received_are_the_copying_paths(served, calls)


def test_a_large_read_goes_through_the_socket_from_the_mapping(served: Served, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    made: list[int] = []
    real = read.by_mapping

    def spy(maps, runs):  # type: ignore[no-untyped-def]
        parts = real(maps, runs)
        made.append(len(views(parts or [])))
        return parts

    monkeypatch.setattr(read, "by_mapping", spy)
    for fh, at in ((served.merged, 100 * KIB), (served.plain, 5)):
        record = served.record(fh, at, MIB)
        expected = reference(served, record)  # and now in the page cache
        with served.connect() as c:
            c.sendall(marked(record))
            assert recv_record(c) == expected
    assert len(made) == 2 and made[0] >= 3 and made[1] == 1  # base and pancbt runs; one


def test_small_reads_uncached_data_tls_and_udp_are_copied(served: Served, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    record = served.record(served.plain, 0, MIB)
    reference(served, record)  # cached
    dispatch = served.caller.dispatcher.dispatch
    reply = dispatch(record, PEER, "tcp")
    assert reply is not None and views(reply.parts)
    reply.free()
    small = dispatch(served.record(served.plain, 0, read.MAP_MIN - 1), PEER, "tcp")
    assert small is not None and not views(small.parts)
    small.free()
    tls = dispatch(record, PEER, "tcp", security=Security("tls"))
    assert tls is not None and not views(tls.parts)
    tls.free()
    udp = dispatch(record, PEER, "udp")
    assert udp is not None and not views(udp.parts)
    udp.free()
    monkeypatch.setattr(read, "mapped_resident", lambda view: False)
    cold = dispatch(record, PEER, "tcp")
    assert cold is not None and not views(cold.parts)
    assert b"".join(bytes(p) for p in cold.parts) == reference(served, record)  # type: ignore[arg-type]
    cold.free()


def test_one_check_per_span_of_a_file(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    maps = {3: memoryview(bytes(4 * MIB)), 4: memoryview(bytes(MIB))}
    asked: list[tuple[int, int]] = []

    def spy(v: memoryview) -> bool:
        fd = next(fd for fd, m in maps.items() if m.obj is v.obj)
        asked.append((fd, len(v)))
        return True

    monkeypatch.setattr(read, "mapped_resident", spy)
    runs = [
        (3, 0, 8192),
        (4, 0, 4096),  # the pancbt's runs, one after another
        (3, 12288, 4096),
        (4, 4096, 4096),
        (-1, 0, 4096),  # zeros
        (3, 20480 + read.BRIDGE + 1, 4096),  # too far from the last: a span of its own
    ]
    parts = read.by_mapping(maps, runs)  # type: ignore[arg-type]
    assert parts is not None and [len(p) for p in parts] == [r[2] for r in runs]
    assert sorted(asked) == [(3, 4096), (3, 16384), (4, 8192)]
    assert read.by_mapping(maps, [(5, 0, 10)]) is None  # type: ignore[list-item]  # no mapping
    assert read.by_mapping(maps, [(4, MIB - 10, 11)]) is None  # type: ignore[list-item]  # past it
    monkeypatch.setattr(read, "mapped_resident", lambda v: False)
    assert read.by_mapping(maps, runs[:1]) is None  # type: ignore[arg-type]


def test_mapped_resident_sees_the_page_cache(tmp_path: Path) -> None:
    f = tmp_path / "f.img"
    f.write_bytes(os.urandom(MIB))
    source = FileSource.open(str(f), lambda st: None)  # type: ignore[arg-type,return-value]
    try:
        (view,) = source.maps().values()
        os.fsync(source.fd)
        os.posix_fadvise(source.fd, 0, 0, os.POSIX_FADV_DONTNEED)  # evicted
        if read.mapped_resident(view[5 : 200 * KIB]):
            pytest.skip("this file system keeps its pages (tmpfs)")
        os.pread(source.fd, 4096, 100 * KIB)
        assert not read.mapped_resident(view[5 : 200 * KIB])  # partly
        assert read.mapped_resident(view[100 * KIB + 1 : 100 * KIB + 4000])
        os.pread(source.fd, MIB, 0)
        assert read.mapped_resident(view[5 : 200 * KIB])
        assert read.mapped_resident(view)
    finally:
        source.release()


def test_a_stalled_queue_keeps_its_views(served: Served, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(server_mod, "DETACH_AFTER", 0.05)
    records = [served.record(served.plain, i * MIB // 2, MIB) for i in range(3)]
    for r in records:
        reference(served, r)  # cached
    with served.connect() as c:
        c.sendall(b"".join(marked(r) for r in records))
        conns = lambda: list(served.server._conns)  # noqa: E731
        _wait(lambda: any(k.detached for k in conns()))  # stalled: left the pool
        (conn,) = conns()
        with conn.lock:
            assert views([e[0] for e in conn.outq])  # not copied by the transport
        received = [recv_record(c) for _ in records]
    by_xid = {r[:4]: r for r in received}
    for r in records:
        assert by_xid[r[:4]] == reference(served, r)


def test_a_file_cut_short_under_a_queued_view_closes_the_connection(tmp_path: Path) -> None:
    (tmp_path / "f.img").write_bytes(os.urandom(2 * MIB))
    s = Served.__new__(Served)
    s.caller = Caller(build_namespace(str(tmp_path)))
    s.plain = s.caller.walk("f.img")
    s.server = server_mod.RpcServer(s.caller.dispatcher, name="t", workers=1)
    s.port = s.server.listen("127.0.0.1", 0, udp=False)
    for ls in s.server._listeners:
        ls.setsockopt(server_mod.socket.SOL_SOCKET, server_mod.socket.SO_SNDBUF, 8192)
    s.server.start()
    s.xid = 1
    try:
        record = s.record(s.plain, 0, MIB)
        small = s.record(s.plain, 0, 4096)
        expected_small = reference(s, small)
        reference(s, record)  # cached
        with s.connect() as c:
            c.sendall(marked(record))
            _wait(lambda: any(views([e[0] for e in k.outq]) for k in s.server._conns))
            os.truncate(tmp_path / "f.img", 4096)  # never done to the storage: a fault
            got = 0
            with contextlib.suppress(ConnectionResetError):
                while data := c.recv(65536):  # a timeout fails the test
                    got += len(data)
            assert got < 4 + MIB
        _wait(lambda: not s.server._conns)
        with s.connect() as c:  # the process lives, and serves the rest of the file
            c.sendall(marked(small))
            assert recv_record(c)[:100] == expected_small[:100]
    finally:
        s.server.stop()


def _rss_of(path: Path) -> int:
    """kB of ``path``'s mappings resident in this process (/proc/self/smaps)."""
    total, ours = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if "-" in line.split(" ", 1)[0]:  # a mapping's header
            ours = line.endswith(str(path))
        elif ours and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def test_mapped_pages_leave_the_rss_past_the_budget_and_at_rest(tmp_path: Path) -> None:
    f = tmp_path / "big.img"
    f.write_bytes(os.urandom(4 * MIB))
    source = FileSource.open(str(f), lambda st: None)  # type: ignore[arg-type,return-value]
    with Handle(source) as h:
        (view,) = h.maps().values()
        pool = BufferPool(MIB, 2)
        assert _rss_of(f) == 0
        bytes(view)  # what a send faults in (here read in user space: the file is ours)
        assert _rss_of(f) >= 4 * 1024 - 64
        pool.mapped([view], buffers_mod.MAP_BUDGET // 2)
        assert _rss_of(f) >= 4 * 1024 - 64  # under the budget: kept
        pool.mapped([view], buffers_mod.MAP_BUDGET // 2)
        assert _rss_of(f) == 0
        bytes(view)
        pool.mapped([view], buffers_mod.MAP_BUDGET // 2)
        pool.trim(time.monotonic())  # not at rest yet
        assert _rss_of(f) > 0
        pool.trim(time.monotonic() + buffers_mod.IDLE_TRIM)
        assert _rss_of(f) == 0
        assert bytes(view[:4]) == f.read_bytes()[:4]  # the mapping itself stays
    source.release()  # the cache's reference: closed, unmapped with the last view
    del view
    assert _rss_of(f) == 0 and str(f) not in Path("/proc/self/maps").read_text()


def test_no_mapping_for_an_empty_file(tmp_path: Path) -> None:
    f = tmp_path / "empty"
    f.write_bytes(b"")
    source = FileSource.open(str(f), lambda st: None)  # type: ignore[arg-type,return-value]
    assert source.maps() == {}
    source.release()


def test_a_read_from_the_mapping_is_inline_on_any_connection(served: Served) -> None:
    record = served.record(served.merged, 100 * KIB, MIB)
    expected = reference(served, record)  # cached
    reply = served.caller.dispatcher.dispatch(record, PEER, "tcp", inline=True, alone=False)
    assert reply is not None and views(reply.parts)
    assert b"".join(bytes(p) for p in reply.parts) == expected  # type: ignore[arg-type]


def test_a_reply_counts_its_bytes_once_sent(served: Served, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    counted: list[int] = []
    monkeypatch.setattr(BufferPool, "mapped", lambda self, maps, n: counted.append(n))
    record = served.record(served.plain, 0, MIB)
    reference(served, record)  # cached
    reply = served.caller.dispatcher.dispatch(record, PEER, "tcp")
    assert reply is not None and views(reply.parts)
    assert not counted  # made, not sent
    reply.free()  # what the transport calls once the last byte is sent
    assert counted == [MIB]
