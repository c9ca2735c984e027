"""Edges of the deferred WRITE path found in review: a dropped duplicate, a
``done`` that raises, a write racing ``close``, bytes in flight against the
quota, and which of two overlapping WRITEs reads back."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from instant.errors import NoSpace
from instant.store import SMALL_WRITE, Store
from merge.namespace import NamespaceError
from nfsd.rpc import CallContext, Dispatcher, DropCall, Later, Procedure, Program, Reply, no_args
from nfsd.transport.record import LAST_FRAGMENT, RecordReader
from nfsd.transport.server import Limits, RpcServer
from tests.proto.calls import call, parse
from tests.unit.test_deferred_reply import _wait_for
from tests.unit.test_instant_store import BASE, BLOCK, read

PROG = 400078


class Running:
    """A procedure answering later that drops a duplicate of a call still running
    (as ``nfsd.programs.drc.ReplyCache.begin`` does for a WRITE in its group)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: dict[int, Later[Reply | None]] = {}

    def run(self, ctx: CallContext, args: object) -> Reply:
        with self.lock:
            if ctx.xid in self.pending:
                raise DropCall("a duplicate of a call still running")
            later: Later[Reply | None] = Later()
            self.pending[ctx.xid] = later
        return Reply([], later=later)


def _record(xid: int) -> bytes:
    r = call(PROG, 1, 1, xid=xid)
    return struct.pack(">I", LAST_FRAGMENT | len(r)) + r


def test_a_dropped_duplicate_keeps_the_connection_and_its_calls_in_flight() -> None:
    """RFC 1813 / drc.py: a duplicate of a running call is *dropped* (no reply);
    the connection and the other calls in flight on it go on.  The transport
    reads the dispatcher's None as "not an RPC call" and closes the connection:
    the first call's deferred reply (and every other one in flight) is lost."""
    d = Running()
    prog = Program(PROG, "R", {1: {1: Procedure("RUN", no_args, d.run, None)}})
    server = RpcServer(Dispatcher([prog]), name="r", workers=2, limits=Limits())
    port = server.listen("127.0.0.1", 0, udp=False)
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.settimeout(3)
            s.sendall(_record(1) + _record(2))
            _wait_for(lambda: len(d.pending) == 2)
            s.sendall(_record(1))  # a retransmission while xid 1 runs
            time.sleep(0.2)
            for xid, later in list(d.pending.items()):
                later.resolve(Reply([struct.pack(">I", xid)]))
            reader = RecordReader(1 << 20)
            got: list[int] = []
            while len(got) < 2:
                data = s.recv(65536)
                assert data, f"connection closed by the server; replies got: {got}"
                got += [parse([r]).xid for r in reader.feed(data)]
            assert sorted(got) == [1, 2]
        assert server.stats()["closed"].get("not_rpc", 0) == 0
    finally:
        server.stop()


class Boom(BaseException):
    """Not an Exception: what ``except Exception`` around ``done`` lets through."""


def test_a_done_raising_a_base_exception_leaves_no_write_unanswered(tmp_path: Path) -> None:
    """Each ``done`` of a group is told, and later writes are still committed,
    whatever one ``done`` raises (else: the committer thread dies, every later
    write is queued forever, its call never answered, conn.inflight leaks)."""
    s = Store(tmp_path / "s")
    hold = threading.Event()
    s.hook = lambda p: hold.wait(5) if p == "after-sync" else None
    told: list[object] = []
    second = threading.Event()

    def bad(outcome: object) -> None:
        told.append(("bad", outcome))
        raise Boom

    def good(outcome: object) -> None:
        told.append(("good", outcome))
        second.set()

    s.write_async(1, 0, b"a" * BLOCK, len(BASE), done=bad)
    s.write_async(1, BLOCK, b"b" * BLOCK, len(BASE), done=good)
    hold.set()
    assert second.wait(5), f"the group's second write never told: {told}"
    third = threading.Event()
    s.write_async(1, 2 * BLOCK, b"c" * BLOCK, len(BASE), done=lambda o: third.set())
    try:
        assert third.wait(5), "a write after the failing done never told: the committer is dead"
    finally:
        s._closing = True
        s.close()


def test_a_write_after_close_opens_no_log_and_leaks_no_descriptor(tmp_path: Path) -> None:
    """A write racing a session's close (``instant stop``, 30 s after): refused
    as a storage error; no new log file in the state folder, no descriptor left open."""
    d = tmp_path / "s"
    s = Store(d)
    s.close()
    logs_before = sorted(p.name for p in d.iterdir() if p.name.startswith("log-"))
    fds_before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(NamespaceError):
        s.write_async(1, 0, b"x" * BLOCK, len(BASE), done=lambda o: None)
    logs_after = sorted(p.name for p in d.iterdir() if p.name.startswith("log-"))
    assert logs_after == logs_before
    assert len(os.listdir("/proc/self/fd")) == fds_before


def test_queued_writes_cannot_log_more_than_the_quota(tmp_path: Path) -> None:
    """The quick quota check counts only committed bytes (``_used_hint``): while a
    group commits, every write in flight passes it and is written into the log, so
    the log (the cache file system) grows past the quota by every byte in flight
    (before: one write per worker thread; now: max_inflight x connections).
    Each is then refused at commit (NOSPC) but its bytes stay in the log file."""
    big = SMALL_WRITE  # no zero-ahead: the log's size is what was written
    s = Store(tmp_path / "s", quota=4 * big)
    hold = threading.Event()
    s.hook = lambda p: hold.wait(5) if p == "after-sync" else None
    told: list[object] = []
    refused_at_once = 0
    try:
        for i in range(16):
            try:
                s.write_async(1, i * big, b"q" * big, len(BASE), done=told.append)
            except NoSpace:
                refused_at_once += 1
        logs = [p for p in (tmp_path / "s").iterdir() if p.name.startswith("log-")]
        logged = sum(p.stat().st_size for p in logs)
    finally:
        hold.set()
        s.close()
    assert logged <= 4 * big + big, f"{logged} bytes logged for a quota of {4 * big}"
    assert refused_at_once >= 11


def test_of_overlapping_writes_the_last_told_is_the_one_that_reads_back(tmp_path: Path) -> None:
    """Two WRITEs of one range in flight: whichever order they are applied in, the
    one acknowledged last must be the one a READ returns once both are acknowledged
    (within one process: done is called in the group's order, groups in order)."""
    s = Store(tmp_path / "s")
    hold = threading.Event()
    s.hook = lambda p: hold.wait(5) if p == "after-sync" else None
    order: list[int] = []
    all_told = threading.Event()

    def done(i: int):  # type: ignore[no-untyped-def]
        def told(outcome: object) -> None:
            assert not isinstance(outcome, Exception)
            order.append(i)
            if len(order) == 24:
                all_told.set()

        return told

    def writer(first: int) -> None:
        for i in range(first, first + 8):
            s.write_async(1, 0, bytes([i + 1]) * BLOCK, len(BASE), done=done(i))

    try:
        s.write_async(1, 0, bytes([100]) * BLOCK, len(BASE), done=lambda o: None)  # group 1 held
        ts = [threading.Thread(target=writer, args=(k * 8,)) for k in range(3)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        hold.set()
        assert all_told.wait(5)
        (tmp_path / "base").write_bytes(BASE)
        base_fd = os.open(tmp_path / "base", os.O_RDONLY)
        try:
            got = read(s, 1, base_fd)[:BLOCK]
        finally:
            os.close(base_fd)
        assert got == bytes([order[-1] + 1]) * BLOCK
    finally:
        hold.set()
        s.close()
