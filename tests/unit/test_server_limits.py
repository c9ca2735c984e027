"""The transport's limits under hostile peers (issue 7), with small limits
and short timeouts so that each test takes a few seconds.

The tests that measure the server as a process (RSS, CPU time, descriptor
exhaustion) run it in a child process (``SERVE`` below) over a toy program
whose READ answers 64 KiB of known bytes from a buffer pool, on a worker.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nfsd.programs.buffers import BufferPool
from nfsd.rpc import Dispatcher, Procedure, Program, Reply, WouldBlock, no_args
from nfsd.transport.record import LAST_FRAGMENT
from nfsd.transport.server import Limits, RpcServer
from tests.proto.calls import call, parse
from tests.unit.test_server import recv_records, send
from xdr.base import Unpacker

REPO = Path(__file__).resolve().parents[2]
PROG_NO = 400002
NULL, READ, SLOW, STRANGER = 0, 1, 2, 3
READ_SIZE = 64 * 1024
PATTERN = bytes(i % 251 for i in range(READ_SIZE + 251))
RELEASE = threading.Event()


def expected(offset: int) -> bytes:
    """The bytes the toy READ answers at ``offset``."""
    return PATTERN[offset % 251 : offset % 251 + READ_SIZE]


def admitted(ctx, args):  # type: ignore[no-untyped-def]
    """A NULL the exports admitted (an access check said so): it validates."""
    ctx.admitted = True
    return Reply([])


def toy_program(pool: BufferPool) -> Program:
    """NULL (inline, admitted), READ of 64 KiB from the pool (on a worker), SLOW,
    STRANGER (a NULL no access check admitted: a host the exports do not list)."""

    def read(ctx, offset):  # type: ignore[no-untyped-def]
        if ctx.inline:
            raise WouldBlock
        buf = pool.acquire()
        buf[:READ_SIZE] = expected(offset)
        return Reply([memoryview(buf)[:READ_SIZE]], release=lambda: pool.release(buf))

    def slow(ctx, args):  # type: ignore[no-untyped-def]
        if ctx.inline:
            raise WouldBlock
        RELEASE.wait(10)
        return Reply([b"slow"])

    def offset_arg(u: Unpacker) -> int:
        return u.unpack_uhyper()

    return Program(
        number=PROG_NO,
        name="TOY",
        versions={
            1: {
                NULL: Procedure("NULL", no_args, admitted),
                READ: Procedure("READ", offset_arg, read),
                SLOW: Procedure("SLOW", no_args, slow),
                STRANGER: Procedure("STRANGER", no_args, lambda c, a: Reply([])),
            }
        },
    )


def read_call(offset: int, xid: int = 7) -> bytes:
    return call(PROG_NO, 1, READ, struct.pack(">Q", offset), xid=xid)


def wire(record: bytes) -> bytes:
    return struct.pack(">I", LAST_FRAGMENT | len(record)) + record


def null_ok(sock: socket.socket, xid: int = 1) -> bool:
    send(sock, call(PROG_NO, 1, NULL, xid=xid))
    replies = recv_records(sock, 1, timeout=1.0)
    return len(replies) == 1 and parse(replies).xid == xid


def read_ok(sock: socket.socket, offset: int) -> bool:
    send(sock, read_call(offset))
    replies = recv_records(sock, 1, timeout=1.0)
    return len(replies) == 1 and parse(replies).body == expected(offset)


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """Whether the server closes ``sock`` within ``timeout`` (data is read away)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(1 << 16):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def wait_for(predicate, timeout: float = 3.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


@pytest.fixture()
def serve() -> Iterator:  # type: ignore[type-arg]
    """A factory: ``serve(limits, pool_count)`` → (server, port), stopped after."""
    servers: list[RpcServer] = []

    def start(limits: Limits, buffers: int = 8) -> tuple[RpcServer, int]:
        RELEASE.clear()
        pool = BufferPool(1 << 20, buffers)
        s = RpcServer(Dispatcher([toy_program(pool)]), name="lim", workers=4, limits=limits)
        port = s.listen("127.0.0.1", 0, udp=False)
        s.start()
        servers.append(s)
        return s, port

    yield start
    RELEASE.set()
    for s in servers:
        s.stop()


def connect(server: RpcServer, port: int) -> socket.socket:
    """A connection the server has accepted (so that ages are in order)."""
    before = server.stats()["accepted"]
    sock = socket.create_connection(("127.0.0.1", port))
    assert wait_for(lambda: server.stats()["accepted"] != before)
    return sock


def test_past_max_unvalidated_the_oldest_unvalidated_connection_is_closed(serve) -> None:  # type: ignore[no-untyped-def]
    server, port = serve(Limits(max_unvalidated=3))
    valid = connect(server, port)
    assert null_ok(valid)
    silent = [connect(server, port) for _ in range(3)]
    assert server.stats()["unvalidated"] == 3
    newest = connect(server, port)
    assert closed_by_server(silent[0], 1.0)
    assert not any(closed_by_server(s, 0.2) for s in (*silent[1:], newest))
    assert null_ok(valid, xid=2)  # validated connections are never counted
    stats = server.stats()
    assert (stats["unvalidated"], stats["closed"]) == (3, {"unvalidated": 1})


def test_calls_the_exports_do_not_admit_never_validate_a_connection(serve) -> None:  # type: ignore[no-untyped-def]
    """A host not listed, answered (a NULL, a refusal), cannot hold the slots:
    its connections stay unvalidated and the oldest goes for a new one."""
    server, port = serve(Limits(max_connections=3, max_unvalidated=10))
    strangers = [connect(server, port) for _ in range(3)]
    for i, s in enumerate(strangers):
        send(s, call(PROG_NO, 1, STRANGER, xid=i + 1))
        assert len(recv_records(s, 1, timeout=1.0)) == 1  # answered...
    assert server.stats()["unvalidated"] == 3  # ...and still unvalidated
    client = connect(server, port)
    assert null_ok(client)  # a listed client gets in: the oldest stranger goes
    assert closed_by_server(strangers[0], 1.0)
    assert server.stats()["unvalidated"] == 2


def test_at_max_connections_an_unvalidated_one_goes_first_then_new_ones_are_refused(serve) -> None:  # type: ignore[no-untyped-def]
    server, port = serve(Limits(max_connections=3, max_unvalidated=10))
    valid = [connect(server, port) for _ in range(2)]
    for i, s in enumerate(valid):
        assert null_ok(s, xid=i)
    silent = connect(server, port)
    late = connect(server, port)  # the cap: the silent one makes room
    assert closed_by_server(silent, 1.0)
    assert null_ok(late)
    refused = socket.create_connection(("127.0.0.1", port))  # all three validated
    assert closed_by_server(refused, 1.0)
    assert all(null_ok(s, xid=9) for s in (*valid, late))
    stats = server.stats()
    assert stats["refused"] == {"max_connections": 1}
    assert stats["closed"] == {"max_connections": 1}
    assert stats["connections"] == 3


def test_after_the_exports_change_a_host_taken_off_cannot_keep_its_slots(serve) -> None:  # type: ignore[no-untyped-def]
    """Validated under the old lists, a host taken off them kept every slot
    with NULLs (answered whoever calls), and a listed host was refused.  After
    ``exports_changed`` a connection keeps its hold only by a call the lists
    admit again; the others make room, oldest first, after the unvalidated."""
    server, port = serve(Limits(max_connections=4, max_unvalidated=10))
    removed = [connect(server, port) for _ in range(3)]
    kept = connect(server, port)
    for i, s in enumerate((*removed, kept)):
        assert null_ok(s, xid=i)
    refused = socket.create_connection(("127.0.0.1", port))
    assert closed_by_server(refused, 1.0)  # all four validated: as before

    server.exports_changed()
    assert wait_for(lambda: server.stats()["stale"] == 4)
    assert null_ok(kept, xid=5)  # admitted again: validated again
    assert server.stats()["stale"] == 3
    for i, s in enumerate(removed):  # refused now: they stay stale
        send(s, call(PROG_NO, 1, STRANGER, xid=10 + i))
        assert len(recv_records(s, 1, timeout=1.0)) == 1
    assert server.stats()["stale"] == 3
    newcomer = connect(server, port)  # the oldest stale connection makes room
    assert closed_by_server(removed[0], 1.0)
    assert null_ok(newcomer)
    silent = connect(server, port)  # the next stale one goes for it...
    assert closed_by_server(removed[1], 1.0)
    late = connect(server, port)  # ...but an unvalidated one goes before a stale one
    assert closed_by_server(silent, 1.0)
    assert not closed_by_server(removed[2], 0.2)
    assert null_ok(late)
    last = connect(server, port)  # then the last stale one
    assert closed_by_server(removed[2], 1.0)
    assert null_ok(last)
    again = socket.create_connection(("127.0.0.1", port))  # all validated again
    assert closed_by_server(again, 1.0)
    assert all(null_ok(s, xid=20) for s in (kept, newcomer, late, last))
    stats = server.stats()
    assert (stats["stale"], stats["unvalidated"], stats["connections"]) == (0, 0, 4)


def test_an_idle_connection_is_closed_but_not_one_waiting_for_a_reply(serve) -> None:  # type: ignore[no-untyped-def]
    server, port = serve(Limits(idle_timeout=0.5))
    started = time.monotonic()
    idle = connect(server, port)
    waiting = connect(server, port)
    send(waiting, call(PROG_NO, 1, SLOW, xid=5))
    assert closed_by_server(idle, 3.0)
    assert 0.5 <= time.monotonic() - started < 2.0
    time.sleep(0.5)
    RELEASE.set()
    reply = recv_records(waiting, 1, timeout=2.0)
    assert parse(reply).body == b"slow"
    assert server.stats()["closed"] == {"idle": 1}


def test_a_slow_calls_connection_is_idle_from_its_reply_not_from_its_call(serve) -> None:  # type: ignore[no-untyped-def]
    """A call that ran longer than the idle timeout: its connection was closed by
    the first sweep after its reply went out (idle counted from the call), so a
    client's next call right after a slow one found it gone.  Now the idle time
    starts at the reply (within a sweep): closed no sooner than the timeout after
    the call was let go, and still closed once idle that long."""
    server, port = serve(Limits(idle_timeout=0.5))
    waiting = connect(server, port)
    send(waiting, call(PROG_NO, 1, SLOW, xid=6))
    time.sleep(1.5)  # three idle timeouts while the call runs: not idle, busy
    let_go = time.monotonic()
    RELEASE.set()
    assert parse(recv_records(waiting, 1, timeout=2.0)).body == b"slow"
    assert closed_by_server(waiting, 3.0)
    # The reply left after let_go; idle from the last sweep that saw it queued, at
    # most a sweep (0.125 s here) before it: closed 0.5 s after that at the soonest.
    assert time.monotonic() - let_go >= 0.35
    assert server.stats()["closed"] == {"idle": 1}


def test_a_record_trickled_a_byte_at_a_time_is_closed_at_the_record_timeout(serve) -> None:  # type: ignore[no-untyped-def]
    server, port = serve(Limits(record_timeout=1.5, idle_timeout=0.5))
    trickle = connect(server, port)
    record = wire(call(PROG_NO, 1, NULL))
    started = time.monotonic()
    closed_at = None
    for i in range(len(record)):  # each byte is progress, and must not reset the clock
        try:
            trickle.send(record[i : i + 1])
        except OSError:
            closed_at = time.monotonic() - started
            break
        if closed_by_server(trickle, 0.1):
            closed_at = time.monotonic() - started
            break
        time.sleep(0.15)
    # The whole record takes ~10 s to trickle: a clock reset by each byte would
    # never close it in time.  The upper bound is loose for a loaded CI machine.
    assert closed_at is not None and 1.5 <= closed_at < 6.0
    assert server.stats()["closed"] == {"record_timeout": 1}


def test_a_client_that_does_not_read_stops_being_read_stalls_only_itself_and_is_closed(
    serve,  # type: ignore[no-untyped-def]
) -> None:
    limits = Limits(max_inflight=4, max_unsent=256 * 1024, send_timeout=3.0)
    server, port = serve(limits, buffers=4)
    hog = connect(server, port)
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    hog.setblocking(False)
    pushed = 0
    calls = 200_000  # 15 MB of calls, 12 GiB of replies: more than any socket buffer holds
    stream = b"".join(wire(read_call(i, xid=i)) for i in range(calls))
    deadline = time.monotonic() + 2.0
    while pushed < len(stream) and time.monotonic() < deadline:
        try:
            pushed += hog.send(stream[pushed : pushed + 65536])
        except BlockingIOError:
            time.sleep(0.05)  # TCP pushes back: the server stopped reading
    assert pushed < len(stream)
    served = server.stats()["calls"]
    # Memory held for it is the replies up to max_unsent, plus the kernel's buffers.
    assert served * READ_SIZE < limits.max_unsent + 16 * (1 << 20)
    # Meanwhile another client is served: its READ needs one of the 4 pooled
    # buffers, which the hog's stalled replies give back after DETACH_AFTER.
    with socket.create_connection(("127.0.0.1", port)) as good:
        for offset in (0, 1, 12345):
            started = time.monotonic()
            assert null_ok(good) and read_ok(good, offset)
            assert time.monotonic() - started < 1.0
    assert wait_for(lambda: server.stats()["closed"] == {"send_timeout": 1}, 4.0)
    hog.close()


def test_the_buffered_budget_closes_the_largest_holder(serve) -> None:  # type: ignore[no-untyped-def]
    server, port = serve(Limits(max_buffered=300_000))
    small = connect(server, port)
    small.sendall(struct.pack(">I", LAST_FRAGMENT | 1000) + b"s" * 500)
    large = connect(server, port)
    large.sendall(struct.pack(">I", LAST_FRAGMENT | 1_000_000) + b"l" * 400_000)
    assert closed_by_server(large, 2.0)
    assert not closed_by_server(small, 0.3)
    assert server.stats()["closed"] == {"max_buffered": 1}


def test_zero_length_fragments_and_a_stream_without_a_last_fragment(serve) -> None:  # type: ignore[no-untyped-def]
    server, port = serve(Limits(record_timeout=1.0))
    with connect(server, port) as s:
        s.sendall(struct.pack(">I", 0) * 5000 + wire(call(PROG_NO, 1, NULL, xid=3)))
        assert parse(recv_records(s, 1)).xid == 3  # thousands of empty fragments: one call
    empty = connect(server, port)
    empty.sendall(struct.pack(">I", 0) * 100)  # a record begun that holds no byte
    assert closed_by_server(empty, 3.0)
    endless = connect(server, port)
    fragment = struct.pack(">I", 100) + b"f" * 100  # the last-fragment bit never set
    with pytest.raises(OSError):
        for _ in range(200_000):  # 20 MiB, over DEFAULT_MAX_RECORD
            endless.sendall(fragment)
    assert server.stats()["closed"] == {"record_timeout": 1, "record_too_large": 1}


def test_an_internal_error_costs_one_connection_not_the_server(serve, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    server, port = serve(Limits())
    victim = connect(server, port)
    peer = f"127.0.0.1:{victim.getsockname()[1]}"
    on_readable = server._on_readable

    def buggy(conn):  # type: ignore[no-untyped-def]
        if conn.peer == peer:
            raise RuntimeError("a bug")
        on_readable(conn)

    monkeypatch.setattr(server, "_on_readable", buggy)
    victim.sendall(b"x")
    assert closed_by_server(victim, 2.0)
    with connect(server, port) as other:
        assert null_ok(other)
    assert server.stats()["closed"] == {"error": 1}


# -- the server as a process --------------------------------------------------

SERVE = """
import json, logging, resource, sys, time
from nfsd.programs.buffers import BufferPool
from nfsd.rpc import Dispatcher
from nfsd.transport.server import Limits, RpcServer
from tests.unit.test_server_limits import toy_program
limits, nofile = json.loads(sys.argv[1]), int(sys.argv[2])
if nofile:
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
s = RpcServer(Dispatcher([toy_program(BufferPool(1 << 20, 8))]), name="child", workers=4,
              limits=Limits(**limits))
print(s.listen("127.0.0.1", 0, udp=False), flush=True)
s.start()
while True:
    time.sleep(3600)
"""


class Child:
    """The server in a process of its own: its port, RSS, CPU time, log."""

    def __init__(self, limits: dict, nofile: int = 0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVE, json.dumps(limits), str(nofile)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def rss(self) -> int:
        """Resident bytes now."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def cpu(self) -> float:
        """Seconds of CPU used so far (user + system)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=2.0)

    def stop(self) -> str:
        """Kill it; its log."""
        assert self.proc.poll() is None, "the server exited"
        self.proc.kill()
        _, err = self.proc.communicate(timeout=5)
        return err


@pytest.fixture()
def children() -> Iterator:  # type: ignore[type-arg]
    started: list[Child] = []

    def start(limits: dict, nofile: int = 0) -> Child:
        child = Child(limits, nofile)
        started.append(child)
        return child

    yield start
    for c in started:
        if c.proc.poll() is None:
            c.proc.kill()
            c.proc.communicate(timeout=5)


NOFILE = 64  # the child's descriptor limit in the exhaustion tests


def test_out_of_descriptors_the_server_backs_off_without_spinning(children) -> None:  # type: ignore[no-untyped-def]
    child = children({"max_unvalidated": 1000}, nofile=NOFILE)
    good = child.connect()
    assert null_ok(good)
    flood: list[socket.socket] = []
    for i in range(2 * NOFILE):  # validated connections, until accept fails
        s = child.connect()
        flood.append(s)
        try:
            if not null_ok(s, xid=i):
                break
        except OSError:
            break
    else:
        pytest.fail("accept never ran out of descriptors")
    for s in (*flood, *(child.connect() for _ in range(20))):
        s.setblocking(False)  # more waiting in the listen queue
    cpu = child.cpu()
    time.sleep(2.0)
    assert child.cpu() - cpu < 0.2  # backing off, not spinning on accept
    for i in range(5):
        started = time.monotonic()
        assert null_ok(good, xid=100 + i) and read_ok(good, i)
        assert time.monotonic() - started < 1.0
    for s in flood:
        s.close()
    with child.connect() as late:  # descriptors back: accepting again
        assert null_ok(late)
    log = child.stop()
    assert "cannot accept" in log, log


def test_out_of_descriptors_a_silent_flood_makes_room_for_a_new_client(children) -> None:  # type: ignore[no-untyped-def]
    child = children({"max_unvalidated": 1000}, nofile=NOFILE)
    flood = [child.connect() for _ in range(2 * NOFILE)]  # never a call: unvalidated
    time.sleep(0.3)
    started = time.monotonic()
    with child.connect() as good:
        assert null_ok(good) and read_ok(good, 99)
    assert time.monotonic() - started < 1.0
    for s in flood:
        s.close()
    assert "out of descriptors" in child.stop()


TRICKLE, IDLE = 400, 400
RSS_GROWTH_BOUND = 32 << 20  # for 800 hostile connections; a thread each took 100 KB


def test_hostile_load_trickle_and_idle_connections_beside_a_good_client(children) -> None:  # type: ignore[no-untyped-def]
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] > 2 * (TRICKLE + IDLE) + 100
    child = children({"max_connections": 2000, "max_unvalidated": 2000})
    good = child.connect()
    assert null_ok(good) and read_ok(good, 0)
    rss = child.rss()
    trickle = [child.connect() for _ in range(TRICKLE)]
    idle = [child.connect() for _ in range(IDLE)]
    record = wire(call(PROG_NO, 1, NULL))
    worst = 0.0
    for k in range(4):  # two seconds, every trickler sends a byte each half second
        for s in trickle:
            s.send(record[k : k + 1])
        for i in range(3):
            started = time.monotonic()
            assert null_ok(good, xid=k * 10 + i)
            assert read_ok(good, k * 1000 + i)
            worst = max(worst, time.monotonic() - started)
        time.sleep(0.5)
    assert worst < 1.0
    growth = child.rss() - rss
    assert growth < RSS_GROWTH_BOUND, f"RSS grew by {growth >> 20} MiB"
    for s in (*trickle, *idle):
        s.close()
    with child.connect() as late:
        assert null_ok(late)
    child.stop()
