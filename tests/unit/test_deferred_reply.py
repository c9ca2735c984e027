"""Deferred replies (``nfsd.rpc.Later``): settled once, composed, sent by the transport.

A WRITE of a session is answered when its group commits, on the store's
committer thread; nothing holds a thread meanwhile.  What must hold: the
reply leaves exactly as a plain one would (RPC header, failure mapping, UDP
rule), the call stays counted in flight until it is sent, a connection
closed meanwhile just frees it, and a settled Later never runs a callback
twice or loses one, whichever thread comes first.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nfsd.rpc import (
    CallContext,
    Dispatcher,
    Later,
    Procedure,
    ProcedureError,
    Program,
    Reply,
    WouldBlock,
    no_args,
    settle,
)
from nfsd.transport.record import LAST_FRAGMENT, RecordReader
from nfsd.transport.server import Limits, RpcServer
from tests.proto.calls import call, parse

PROG = 400077

# -- Later ---------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    before=st.integers(0, 4),
    after=st.integers(0, 4),
    fail=st.booleans(),
)
def test_every_callback_runs_once_with_the_outcome_whenever_it_was_added(
    before: int, after: int, fail: bool
) -> None:
    later: Later[int] = Later()
    seen: list[tuple[int, object]] = []

    def cb(i: int):  # type: ignore[no-untyped-def]
        def got(done: Later[int]) -> None:
            try:
                seen.append((i, done.result()))
            except ValueError as e:
                seen.append((i, e))

        return got

    mapped = later.map(lambda d: d.result() * 2)
    for i in range(before):
        later.then(cb(i))
    error = ValueError("boom")
    if fail:
        later.fail(error)
    else:
        later.complete(21)
    for i in range(before, before + after):
        later.then(cb(i))
    assert sorted(i for i, _ in seen) == list(range(before + after))
    assert all(v is error if fail else v == 21 for _, v in seen)
    with pytest.raises(RuntimeError):
        later.resolve(1)  # exactly once
    if fail:
        with pytest.raises(ValueError):
            mapped.result()
    else:
        assert mapped.result() == 42


def test_a_later_settled_and_waited_for_across_threads_runs_each_callback_once() -> None:
    for _ in range(200):
        later: Later[int] = Later()
        count = [0]
        lock = threading.Lock()

        def add(_: Later[int], lock: threading.Lock = lock, count: list[int] = count) -> None:
            with lock:
                count[0] += 1

        adders = [threading.Thread(target=later.then, args=(add,)) for _ in range(4)]
        for t in adders:
            t.start()
        later.resolve(7)
        for t in adders:
            t.join()
        assert count[0] == 4
        assert later.wait(1) == 7


def test_a_failing_callback_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    later: Later[int] = Later()
    ran: list[int] = []

    def bad(_: Later[int]) -> None:
        raise RuntimeError("callback bug")

    later.then(bad)
    later.then(lambda d: ran.append(d.result()))
    later.resolve(3)
    assert ran == [3]
    assert "callback bug" in caplog.text


def test_wait_times_out_on_a_later_never_settled() -> None:
    with pytest.raises(TimeoutError):
        Later().wait(0.01)
    with pytest.raises(RuntimeError):
        Later().result()


# -- the dispatcher -------------------------------------------------------------


class Deferring:
    """A procedure answering later: each call's Later kept for the test to settle."""

    def __init__(self, on_worker: bool = False) -> None:
        self.lock = threading.Lock()
        self.pending: list[tuple[int, Later[Reply | None]]] = []
        self.freed = 0
        self.on_worker = on_worker

    def run(self, ctx: CallContext, args: object) -> Reply:
        if self.on_worker and ctx.inline:
            raise WouldBlock
        later: Later[Reply | None] = Later()
        with self.lock:
            self.pending.append((ctx.xid, later))
        return Reply([], later=later)

    def body(self, xid: int, size: int = 8) -> Reply:
        def release() -> None:
            with self.lock:
                self.freed += 1

        return Reply([struct.pack(">I", xid) * (size // 4)], release=release)

    def take(self) -> list[tuple[int, Later[Reply | None]]]:
        with self.lock:
            out, self.pending = self.pending, []
            return out


def _fail(status: int, args: object) -> Reply:
    return Reply([struct.pack(">I", status)])


def program(d: Deferring, *, no_amplify: bool = False) -> Program:
    return Program(
        PROG,
        "D",
        {1: {1: Procedure("LATER", no_args, d.run, _fail)}},
        fault_status=99,
        udp_no_amplify=no_amplify,
    )


def test_a_deferred_reply_is_the_reply_a_plain_one_would_be() -> None:
    d = Deferring()
    disp = Dispatcher([program(d)])
    reply = disp.dispatch(call(PROG, 1, 1, xid=5), "127.0.0.1:1", "tcp")
    assert reply is not None and reply.later is not None and reply.parts == []
    ((xid, later),) = d.take()
    assert not reply.later.done
    later.resolve(d.body(xid))
    got = settle(reply, 1)
    assert got is not None
    r = parse(got.parts)
    assert (r.xid, r.stat, r.body) == (5, 0, struct.pack(">I", 5) * 2)


def test_a_deferred_failure_gets_the_procedures_failure_body(
    caplog: pytest.LogCaptureFixture,
) -> None:
    d = Deferring()
    disp = Dispatcher([program(d)])
    replies = [disp.dispatch(call(PROG, 1, 1, xid=x), "127.0.0.1:1", "tcp") for x in (1, 2)]
    (_, a), (_, b) = d.take()
    a.fail(ProcedureError(70))
    b.fail(KeyError("a bug"))
    bodies = [parse(settle(r, 1).parts).body for r in replies]  # type: ignore[union-attr]
    assert bodies == [struct.pack(">I", 70), struct.pack(">I", 99)]
    assert "unexpected error in LATER" in caplog.text


def test_a_deferred_udp_reply_larger_than_its_call_is_not_sent() -> None:
    d = Deferring()
    disp = Dispatcher([program(d, no_amplify=True)])
    record = call(PROG, 1, 1, xid=3)
    reply = disp.dispatch(record, "127.0.0.1:1", "udp")
    ((xid, later),) = d.take()
    later.resolve(d.body(xid, size=len(record) + 64))
    assert settle(reply, 1) is None
    assert d.freed == 1  # the reply not sent is given back


# -- the transport ---------------------------------------------------------------


def _records(xids: range) -> bytes:
    return b"".join(
        struct.pack(">I", LAST_FRAGMENT | len(r)) + r
        for r in (call(PROG, 1, 1, xid=x) for x in xids)
    )


def _wait_for(cond, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


@pytest.mark.parametrize("on_worker", [False, True], ids=["loop", "worker"])
def test_deferred_calls_count_in_flight_until_sent_and_arrive_once_each(on_worker: bool) -> None:
    d = Deferring(on_worker)
    server = RpcServer(Dispatcher([program(d)]), name="d", workers=2, limits=Limits(max_inflight=4))
    port = server.listen("127.0.0.1", 0, udp=False)
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.settimeout(5)
            s.sendall(_records(range(1, 11)))
            _wait_for(lambda: len(d.pending) == 4)
            time.sleep(0.1)
            assert len(d.pending) == 4  # max_inflight: the rest not even read
            reader = RecordReader(1 << 20)
            got: list[int] = []
            while len(got) < 10:
                batch = d.take()
                for xid, later in reversed(batch):  # settled out of order
                    later.resolve(d.body(xid))
                if batch:
                    target = len(got) + len(batch)
                    while len(got) < target:
                        got += [parse([r]).xid for r in reader.feed(s.recv(65536))]
                else:
                    time.sleep(0.002)
            assert sorted(got) == list(range(1, 11))
            s.settimeout(0.2)
            with pytest.raises(TimeoutError):
                s.recv(1)  # no reply twice
        _wait_for(lambda: d.freed == 10)
    finally:
        server.stop()


def test_a_deferred_reply_for_a_closed_connection_is_freed() -> None:
    d = Deferring(on_worker=True)
    server = RpcServer(Dispatcher([program(d)]), name="d", workers=2, limits=Limits())
    port = server.listen("127.0.0.1", 0, udp=False)
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(_records(range(1, 4)))
            _wait_for(lambda: len(d.pending) == 3)
        _wait_for(lambda: server.stats()["connections"] == 0)
        for xid, later in d.take():
            later.resolve(d.body(xid))
        _wait_for(lambda: d.freed == 3)
        # The server still serves.
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.settimeout(5)
            s.sendall(_records(range(9, 10)))
            _wait_for(lambda: len(d.pending) == 1)
            ((xid, later),) = d.take()
            later.resolve(d.body(xid))
            (rec,) = RecordReader(1 << 20).feed(s.recv(65536))
            assert parse([rec]).xid == 9
    finally:
        server.stop()


def test_a_deferred_udp_reply_is_sent_when_it_resolves() -> None:
    d = Deferring()
    server = RpcServer(Dispatcher([program(d)]), name="d", workers=2, limits=Limits())
    port = server.listen("127.0.0.1", 0, udp=True)
    server.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.settimeout(5)
            u.sendto(call(PROG, 1, 1, xid=12), ("127.0.0.1", port))
            _wait_for(lambda: len(d.pending) == 1)
            ((xid, later),) = d.take()
            later.resolve(d.body(xid))
            data = u.recv(65536)
            assert parse([data]).xid == 12
        _wait_for(lambda: d.freed == 1)
    finally:
        server.stop()
