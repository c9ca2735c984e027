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
