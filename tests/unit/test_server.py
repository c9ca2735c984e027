"""The socket transport: concurrency on one connection, caps, hostile peers."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from nfsd.rpc import Dispatcher, Procedure, Program, Reply, WouldBlock, no_args
from nfsd.transport import server as server_module
from nfsd.transport.record import LAST_FRAGMENT, RecordReader
from nfsd.transport.server import UDP_BACKLOG, Limits, RpcServer, _Workers
from tests.proto.calls import call, parse
from xdr import rpc
from xdr.base import Unpacker

RELEASE = threading.Event()


def slow(ctx, args):  # type: ignore[no-untyped-def]
    if ctx.inline:
        raise WouldBlock  # as a READ of bytes not in the page cache does
    RELEASE.wait(10)
    return Reply([b"slow"])


def fast(ctx, args):  # type: ignore[no-untyped-def]
    return Reply([b"fast"])


def big(ctx, args):  # type: ignore[no-untyped-def]
    if ctx.inline:
        raise WouldBlock
    return Reply([bytes(4 * 1024 * 1024)])


def echo(u: Unpacker) -> bytes:
    return u.unpack_opaque()


PROG = Program(
    number=400001,
    name="T",
    versions={
        1: {
            0: Procedure("NULL", no_args, lambda c, a: Reply([])),
            1: Procedure("SLOW", no_args, slow),
            2: Procedure("FAST", no_args, fast),
            3: Procedure("BIG", no_args, big),
            4: Procedure("ECHO", echo, lambda c, a: Reply([struct.pack(">I", len(a))])),
        }
    },
)


@pytest.fixture()
def server() -> Iterator[tuple[RpcServer, int]]:
    RELEASE.clear()
    s = RpcServer(
        Dispatcher([PROG]),
        name="t",
        workers=4,
        limits=Limits(send_timeout=2.0, record_timeout=1.0),
    )
    port = s.listen("127.0.0.1", 0)
    s.start()
    yield s, port
    RELEASE.set()
    s.stop()


def send(sock: socket.socket, record: bytes) -> None:
    sock.sendall(struct.pack(">I", LAST_FRAGMENT | len(record)) + record)


def recv_records(sock: socket.socket, n: int, timeout: float = 5.0) -> list[bytes]:
    sock.settimeout(timeout)
    reader = RecordReader(64 << 20)
    out: list[bytes] = []
    while len(out) < n:
        data = sock.recv(1 << 20)
        if not data:
            break
        out += reader.feed(data)
    return out


def test_a_slow_call_does_not_hold_up_the_calls_behind_it(server) -> None:  # type: ignore[no-untyped-def]
    _, port = server
    with socket.create_connection(("127.0.0.1", port)) as s:
        send(s, call(400001, 1, 1, xid=1))
        send(s, call(400001, 1, 2, xid=2))
        first = parse(recv_records(s, 1))
        assert first.xid == 2 and first.body == b"fast"
        RELEASE.set()
        second = parse(recv_records(s, 1))
        assert second.xid == 1 and second.body == b"slow"


def test_a_record_split_into_many_fragments_is_reassembled(server) -> None:  # type: ignore[no-untyped-def]
    _, port = server
    payload = b"z" * 10000
    record = call(400001, 1, 4, struct.pack(">I", len(payload)) + payload)
    with socket.create_connection(("127.0.0.1", port)) as s:
        for i in range(0, len(record), 1000):
            piece = record[i : i + 1000]
            last = LAST_FRAGMENT if i + 1000 >= len(record) else 0
            s.sendall(struct.pack(">I", last | len(piece)) + piece)
        r = parse(recv_records(s, 1))
        assert r.body == struct.pack(">I", 10000)


def test_an_oversized_record_closes_only_that_connection(server) -> None:  # type: ignore[no-untyped-def]
    _, port = server
    with socket.create_connection(("127.0.0.1", port)) as bad:
        bad.sendall(struct.pack(">I", LAST_FRAGMENT | 0x7FFFFFFF) + b"x" * 100)
        bad.settimeout(5)
        assert bad.recv(10) == b""
    with socket.create_connection(("127.0.0.1", port)) as good:
        send(good, call(400001, 1, 2))
        assert parse(recv_records(good, 1)).body == b"fast"


def test_a_record_that_is_not_a_call_closes_the_connection(server) -> None:  # type: ignore[no-untyped-def]
    _, port = server
    with socket.create_connection(("127.0.0.1", port)) as s:
        send(s, b"\xff" * 64)
        s.settimeout(5)
        assert s.recv(10) == b""


def test_garbage_then_vanishing_peers_leave_the_server_serving(server) -> None:  # type: ignore[no-untyped-def]
    _, port = server
    for junk in (b"\x00" * 3, b"\xff" * 64, struct.pack(">I", LAST_FRAGMENT | 8) + b"12345678"):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(junk)
    with socket.create_connection(("127.0.0.1", port)) as s:
        send(s, call(400001, 1, 2))
        assert parse(recv_records(s, 1)).body == b"fast"


def test_a_client_that_never_reads_does_not_stall_others(server) -> None:  # type: ignore[no-untyped-def]
    _, port = server
    hog = socket.create_connection(("127.0.0.1", port))
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    for i in range(16):
        send(hog, call(400001, 1, 3, xid=i))  # 4 MiB replies it never reads
    time.sleep(0.5)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as s:
        for i in range(50):
            send(s, call(400001, 1, 2, xid=1000 + i))
        assert len(recv_records(s, 50)) == 50
    assert time.monotonic() - started < 2.0
    hog.close()


def test_udp_calls_are_answered(server) -> None:  # type: ignore[no-untyped-def]
    _, port = server
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.settimeout(5)
        u.sendto(call(400001, 1, 2, xid=77), ("127.0.0.1", port))
        r = parse([u.recv(65535)])
        assert (r.xid, r.stat, r.body) == (77, rpc.SUCCESS, b"fast")
        u.sendto(b"\x01\x02", ("127.0.0.1", port))  # garbage: no answer, no harm
        u.sendto(call(400001, 1, 2, xid=78), ("127.0.0.1", port))
        assert parse([u.recv(65535)]).xid == 78


def test_udp_calls_waiting_for_a_worker_are_bounded(server) -> None:  # type: ignore[no-untyped-def]
    """Datagrams past UDP_BACKLOG waiting for a worker are dropped (UDP is lossy),
    not queued without bound (a flood with forged sources behind slow calls)."""
    s, port = server
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        # SLOW: every worker waits for RELEASE.  Sent in bursts the server reads
        # before the next (a socket buffer overflowing would drop them first).
        deadline = time.monotonic() + 10
        xid = 0
        while s._udp_dropped == 0 and time.monotonic() < deadline:
            for _ in range(16):
                xid += 1
                u.sendto(call(400001, 1, 1, xid=xid), ("127.0.0.1", port))
            time.sleep(0.005)
        assert s._udp_dropped > 0
        assert s._workers.backlog() <= UDP_BACKLOG
        RELEASE.set()
    deadline = time.monotonic() + 5
    while s._workers.backlog() and time.monotonic() < deadline:
        time.sleep(0.01)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as v:  # served again
        v.settimeout(5)
        v.sendto(call(400001, 1, 2, xid=99999), ("127.0.0.1", port))
        r = parse([v.recv(65535)])
        assert (r.xid, r.body) == (99999, b"fast")


def test_stop_ends_every_thread(server) -> None:  # type: ignore[no-untyped-def]
    s, port = server
    conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
    for c in conns:
        send(c, call(400001, 1, 1))  # a worker is busy with each until RELEASE
    time.sleep(0.2)
    assert any(t.name.startswith("t-") for t in threading.enumerate())
    RELEASE.set()
    s.stop()
    assert [t.name for t in threading.enumerate() if t.name.startswith("t-")] == []
    for c in conns:
        c.close()


def test_an_idle_connection_outlives_the_send_timeout(server) -> None:  # type: ignore[no-untyped-def]
    _, port = server  # send_timeout is 2 s in the fixture
    with socket.create_connection(("127.0.0.1", port)) as s:
        time.sleep(3)
        send(s, call(400001, 1, 2))
        assert parse(recv_records(s, 1)).body == b"fast"


def test_thousands_of_pipelined_calls_in_one_send_are_all_answered(server) -> None:  # type: ignore[no-untyped-def]
    _, port = server
    batch = b"".join(
        struct.pack(">I", LAST_FRAGMENT | len(r)) + r
        for r in (call(400001, 1, 2, xid=i) for i in range(3000))
    )
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(batch)
        replies = recv_records(s, 3000)
    assert sorted(parse([r]).xid for r in replies) == list(range(3000))


def test_half_a_record_left_hanging_closes_the_connection(server) -> None:  # type: ignore[no-untyped-def]
    _, port = server  # record_timeout is 1 s in the fixture
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(struct.pack(">I", LAST_FRAGMENT | 1000) + b"x" * 10)
        s.settimeout(5)
        started = time.monotonic()
        assert s.recv(10) == b""
        assert time.monotonic() - started < 4


def test_a_stop_waits_for_stuck_worker_threads_once_not_once_each(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Threads stuck in a call (a READ waiting for a pooled buffer that never
    comes back) are left behind after STOP_WAIT for all of them: 5 s each
    held a worker process's SIGTERM past its supervisor's patience."""
    monkeypatch.setattr(server_module, "STOP_WAIT", 0.3)
    stuck = threading.Event()
    workers = _Workers(4, "stuck")
    workers.start()
    for _ in range(4):
        workers.submit(stuck.wait, 30)
    started = time.monotonic()
    try:
        workers.stop()
        assert time.monotonic() - started < 1.5
    finally:
        stuck.set()
