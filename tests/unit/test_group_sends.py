"""A WRITE group's replies sent together (``nfsd.rpc.batched``, ``Store`` gather).

The store's committer settles a group's deferred replies in a row inside the
writes' ``gather`` block; the transport keeps the sends of replies settled
there and makes them when the block ends, one ``sendmsg`` per connection.
What must hold: nothing held is lost (an exception in the block, a flush
that raises, a gather that cannot be entered), the calls stay counted in
flight until sent, a reply settled outside such a block is sent at once.
"""

from __future__ import annotations

import socket
import struct
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from instant.store import Store
from nfsd.rpc import (
    CallContext,
    Dispatcher,
    DropCall,
    Later,
    Procedure,
    Program,
    Reply,
    at_end,
    hold,
    no_args,
)
from nfsd.rpc import batched as held
from nfsd.transport.record import LAST_FRAGMENT, RecordReader
from nfsd.transport.server import Limits, RpcServer
from tests.proto.calls import call, parse
from tests.unit.test_deferred_reply import _wait_for
from tests.unit.test_instant_store import BASE, BLOCK

PROG = 400079

# -- nfsd.rpc: hold / batched ---------------------------------------------------


def test_outside_a_block_nothing_is_held() -> None:
    assert hold("k", 1, lambda k, items: None) is False


@settings(max_examples=100, deadline=None)
@given(items=st.lists(st.tuples(st.sampled_from("abc"), st.integers()), max_size=12))
def test_a_block_flushes_each_key_once_with_its_items_in_order(
    items: list[tuple[str, int]],
) -> None:
    flushed: list[tuple[str, list[int]]] = []

    def flush(key: str, got: list[Any]) -> None:
        flushed.append((key, got))

    with held():
        with held():  # nested: the outer block sends
            for key, item in items:
                assert hold(key, item, flush)
        assert flushed == []
    keys = list(dict.fromkeys(k for k, _ in items))
    assert flushed == [(k, [i for kk, i in items if kk == k]) for k in keys]
    assert hold("a", 0, flush) is False  # the block is over


def test_an_exception_in_the_block_or_a_flush_loses_no_other_key() -> None:
    flushed: list[str] = []

    def flush(key: str, got: list[Any]) -> None:
        if key == "bad":
            raise RuntimeError("a broken send")
        flushed.append(key)

    with pytest.raises(ValueError), held():
        hold("bad", 1, flush)
        hold("good", 2, flush)
        raise ValueError("a done that raised")
    assert flushed == ["good"]


def test_an_inner_block_that_raises_leaves_the_batch_to_the_outer() -> None:
    flushed: list[tuple[str, list[Any]]] = []

    def flush(key: str, got: list[Any]) -> None:
        flushed.append((key, got))

    with held():
        with pytest.raises(ValueError), held():
            hold("k", 1, flush)
            raise ValueError("inner")
        assert flushed == [] and hold("k", 2, flush)
    assert flushed == [("k", [1, 2])]
    with held():  # a new batch after it
        hold("k", 3, flush)
    assert flushed[-1] == ("k", [3])


def test_a_block_is_the_threads_own() -> None:
    seen: list[bool] = []
    with held():
        t = threading.Thread(target=lambda: seen.append(hold("k", 1, lambda k, i: None)))
        t.start()
        t.join()
    assert seen == [False]


def test_at_end_calls_once_at_the_end_of_the_batch_however_often_asked() -> None:
    calls: list[int] = []
    assert at_end(lambda: calls.append(0)) is False  # outside a batch: the caller's

    def kick() -> None:
        calls.append(1)

    with held():
        assert all(at_end(kick) for _ in range(3))
        assert calls == []
    assert calls == [1]


# -- instant.store: the dones of a group inside its gathers ---------------------------


def committer_waits(s: Store) -> bool:
    """Whether the store's committer waits for writes (CPython's Condition)."""
    return len(s._qwake._waiters) == 1  # type: ignore[attr-defined]


def test_writes_queued_in_a_batch_wake_the_committer_at_its_end_one_group(
    tmp_path: Path,
) -> None:
    s = Store(tmp_path / "s")
    told: list[int] = []
    all_told = threading.Event()

    def done(outcome: object) -> None:
        assert isinstance(outcome, int)
        told.append(outcome)
        if len(told) == 5:
            all_told.set()

    try:
        s.write(1, 0, b"o" * BLOCK, len(BASE))  # the log open, the committer started
        _wait_for(lambda: committer_waits(s))  # not still finishing that group
        groups = s.stats.groups
        with held():
            for i in range(5):
                s.write_async(1, i * BLOCK, b"w" * BLOCK, len(BASE), done=done, wake_later=at_end)
            assert not all_told.wait(0.2)  # queued, the committer not woken
        assert all_told.wait(5)
        assert s.stats.groups - groups == 1
    finally:
        s.close()


def _held_at_sync(tmp_path: Path) -> tuple[Store, threading.Event, threading.Event]:
    """A store whose committer waits after each group's sync until ``release`` is
    set; ``reached`` is set once it waits there."""
    s = Store(tmp_path / "s")
    release, reached = threading.Event(), threading.Event()

    def hook(point: str) -> None:
        if point == "after-sync":
            reached.set()
            release.wait(5)

    s.hook = hook
    return s, release, reached


def test_a_groups_dones_run_inside_each_distinct_gather_once(tmp_path: Path) -> None:
    s, hold_group, held = _held_at_sync(tmp_path)
    events: list[str] = []
    told = threading.Event()

    def gather(name: str):  # type: ignore[no-untyped-def]
        @contextmanager
        def block():  # type: ignore[no-untyped-def]
            events.append(f"enter {name}")
            yield
            events.append(f"exit {name}")

        return block

    ga, gb = gather("a"), gather("b")

    def done(i: int):  # type: ignore[no-untyped-def]
        def d(outcome: object) -> None:
            assert not isinstance(outcome, Exception)
            events.append(f"done {i}")
            if i == 3:
                told.set()

        return d

    try:
        s.write_async(1, 0, b"x" * BLOCK, len(BASE), done=lambda o: None)  # group 1 held
        assert held.wait(5)  # the next four queue behind it: one group
        for i, g in enumerate([ga, gb, ga, None]):
            s.write_async(1, (i + 1) * BLOCK, b"y" * BLOCK, len(BASE), done=done(i), gather=g)
        hold_group.set()
        assert told.wait(5)
        _wait_for(lambda: len(events) == 8)
        assert events[:2] == ["enter a", "enter b"]
        assert events[2:6] == ["done 0", "done 1", "done 2", "done 3"]
        assert sorted(events[6:]) == ["exit a", "exit b"]
    finally:
        hold_group.set()
        s.close()


def test_a_gather_that_cannot_be_entered_leaves_no_write_unanswered(tmp_path: Path) -> None:
    s = Store(tmp_path / "s")
    got: list[object] = []
    told = threading.Event()

    def broken():  # type: ignore[no-untyped-def]
        raise RuntimeError("no batch today")

    def done(outcome: object) -> None:
        got.append(outcome)
        told.set()

    try:
        s.write_async(1, 0, b"z" * BLOCK, len(BASE), done=done, gather=broken)
        assert told.wait(5)
        assert got == [len(BASE)]
    finally:
        s.close()


# -- the transport: one send per connection for the block's replies ------------------


class Pending:
    """A procedure answering later, each call's Later kept for the test to settle."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: dict[int, Later[Reply | None]] = {}

    def run(self, ctx: CallContext, args: object) -> Reply:
        later: Later[Reply | None] = Later()
        with self.lock:
            self.pending[ctx.xid] = later
        return Reply([], later=later)


def _record(xid: int) -> bytes:
    r = call(PROG, 1, 1, xid=xid)
    return struct.pack(">I", LAST_FRAGMENT | len(r)) + r


def _server(d: Pending) -> tuple[RpcServer, int]:
    prog = Program(PROG, "P", {1: {1: Procedure("RUN", no_args, d.run, None)}})
    server = RpcServer(Dispatcher([prog]), name="g", workers=2, limits=Limits())
    port = server.listen("127.0.0.1", 0, udp=False)
    server.start()
    return server, port


def _client(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(3)
    return s


def _replies(s: socket.socket, n: int) -> list[int]:
    reader = RecordReader(1 << 20)
    got: list[int] = []
    while len(got) < n:
        data = s.recv(65536)
        assert data, f"connection closed by the server; replies got: {got}"
        got += [parse([r]).xid for r in reader.feed(data)]
    return got


def test_replies_settled_in_a_block_leave_at_its_end_in_one_send(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    d = Pending()
    server, port = _server(d)
    sends: list[int] = []
    real = RpcServer._send_now

    def counted(self: RpcServer, conn: Any, replies: list[Reply]) -> bool:
        sends.append(len(replies))
        return real(self, conn, replies)

    monkeypatch.setattr(RpcServer, "_send_now", counted)
    try:
        with _client(port) as s, _client(port) as s2:
            s.sendall(b"".join(_record(x) for x in (1, 2, 3)))
            s2.sendall(_record(9))
            _wait_for(lambda: len(d.pending) == 4)
            with held():
                for xid in (1, 2, 3, 9):
                    d.pending[xid].resolve(Reply([struct.pack(">I", xid)]))
                s.settimeout(0.2)
                with pytest.raises(TimeoutError):
                    s.recv(1)  # held until the block ends
                s.settimeout(3)
                assert sends == []
            assert sorted(sends) == [1, 3]  # one send per connection
            assert sorted(_replies(s, 3)) == [1, 2, 3]
            assert _replies(s2, 1) == [9]
            # Counted in flight until sent: the connection goes on as usual.
            d.pending.clear()
            s.sendall(_record(4))
            _wait_for(lambda: 4 in d.pending)
            d.pending[4].resolve(Reply([struct.pack(">I", 4)]))  # outside a block: at once
            assert _replies(s, 1) == [4]
        assert server.stats()["closed"].get("not_rpc", 0) == 0
    finally:
        server.stop()


class Boom(BaseException):
    """Past the dispatcher's mapping: the transport's reply is None (no RPC call)."""


def test_in_a_block_a_drop_keeps_its_connection_and_a_none_closes_its_own_only() -> None:
    d = Pending()
    server, port = _server(d)
    try:
        with _client(port) as s, _client(port) as s2:
            s.sendall(_record(1) + _record(2) + _record(3))
            s2.sendall(_record(5))
            _wait_for(lambda: len(d.pending) == 4)
            with held():
                d.pending[1].resolve(Reply([struct.pack(">I", 1)]))
                d.pending[2].fail(DropCall("a duplicate"))  # no reply, the connection goes on
                d.pending[3].resolve(Reply([struct.pack(">I", 3)]))
                d.pending[5].fail(Boom())  # no reply and the connection goes
            assert sorted(_replies(s, 2)) == [1, 3]
            _wait_for(lambda: server.stats()["closed"].get("not_rpc", 0) == 1)
            assert s2.recv(1) == b""
            s.sendall(_record(4))
            _wait_for(lambda: 4 in d.pending)
            d.pending[4].resolve(Reply([struct.pack(">I", 4)]))
            assert _replies(s, 1) == [4]
    finally:
        server.stop()
