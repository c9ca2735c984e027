"""The READ buffer pool: a READ that finds every buffer out waits, and is
woken by the release that frees one (the pool notifies only when someone
waits: a missed wake-up would hang that READ for good)."""

from __future__ import annotations

import threading
import time

from nfsd.programs.buffers import BufferPool


def test_waiting_reads_are_woken_one_release_each() -> None:
    pool = BufferPool(4096, 2)
    held = [pool.acquire(), pool.acquire()]
    assert pool.try_acquire() is None
    got: list[object] = []
    waiters = [
        threading.Thread(target=lambda: got.append(pool.acquire()), daemon=True) for _ in range(5)
    ]
    for t in waiters:
        t.start()
    time.sleep(0.05)  # all five waiting
    for i in range(5):
        # Each release frees one waiter, whose buffer is given back next.
        pool.release(held.pop() if held else got[i - 2])  # type: ignore[arg-type]
        deadline = time.monotonic() + 5
        while len(got) < i + 1 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert len(got) == i + 1, "a waiting READ was not woken"
    assert pool.created == 2


def _resident_kib() -> int:
    """This process's anonymous resident memory (RssAnon), in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise AssertionError("no RssAnon in /proc/self/status")


def test_buffers_at_rest_give_their_pages_back_and_the_busy_ones_keep_them() -> None:
    size = 8 << 20
    pool = BufferPool(size, 3)
    bufs = [pool.acquire() for _ in range(3)]
    for b in bufs:
        b[:] = b"\x5a" * size  # every page resident, as a large READ leaves it
    before = _resident_kib()
    for b in bufs:
        pool.release(b)
    now = time.monotonic()
    assert pool.trim(now) == 0  # just used: kept
    busy = pool.acquire()  # the top of the stack: what a steady load reuses
    pool.release(busy)
    assert pool.trim(now + 3.0) == 3
    after = _resident_kib()
    assert before - after >= 2 * size // 1024 * 9 // 10, (before, after)
    assert pool.trim(now + 4.0) == 0  # trimmed once, not again
    again = pool.acquire()
    assert again[:size] == bytes(size)  # a trimmed buffer reads zeros, never old bytes
    again[:4] = b"next"
    assert again[:4] == b"next"
    pool.release(again)
    assert pool.created == 3


def test_only_buffers_released_long_enough_ago_are_trimmed() -> None:
    pool = BufferPool(4096, 4)
    bufs = [pool.acquire() for _ in range(4)]
    pool.release(bufs[0])
    pool.release(bufs[1])
    t = time.monotonic()
    pool.release(bufs[2])
    pool.release(bufs[3])
    # Released at about the same moment: none before 2 s, all after.
    assert pool.trim(t + 0.5) == 0
    assert pool.trim(t + 10) == 4


def test_the_transport_sweep_runs_the_programs_housekeeping() -> None:
    from nfsd.rpc import Dispatcher, Procedure, Program, Reply, no_args
    from nfsd.transport.server import Limits, RpcServer

    calls: list[float] = []
    prog = Program(400079, "I", {1: {0: Procedure("NULL", no_args, lambda c, a: Reply([]), None)}})
    prog.idle = calls.append
    server = RpcServer(Dispatcher([prog]), name="i", workers=1, limits=Limits(idle_timeout=0.2))
    server.listen("127.0.0.1", 0, udp=False)
    server.start()
    try:
        deadline = time.monotonic() + 5
        while len(calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        server.stop()
    assert len(calls) >= 2 and calls == sorted(calls)
