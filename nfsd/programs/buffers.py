"""A bounded pool of reusable READ buffers.

A READ reply is built by ``preadv`` into one of these buffers and sent
from it as it lies; the buffer comes back when the reply has been sent.
Allocating a fresh 1 MiB object per reply costs a third of the
throughput, and an unbounded number of them is how 64 clients asking for
1 MiB each would take the server's memory: the pool caps both.  Buffers
are created on first need, up to ``count``; a READ that finds none free
waits for one.
"""

from __future__ import annotations

import threading


class BufferPool:
    """At most ``count`` buffers of ``size`` bytes, created lazily."""

    def __init__(self, size: int, count: int) -> None:
        self.size = size
        self.count = count
        self._free: list[bytearray] = []
        self._created = 0
        self._cond = threading.Condition()

    def acquire(self) -> bytearray:
        """A buffer, waiting for one to come back if all ``count`` are out."""
        with self._cond:
            while (buf := self._take()) is None:
                self._cond.wait()
            return buf

    def try_acquire(self) -> bytearray | None:
        """A buffer if one is free (or may be created) now; None otherwise."""
        with self._cond:
            return self._take()

    def _take(self) -> bytearray | None:
        if self._free:
            return self._free.pop()
        if self._created < self.count:
            self._created += 1
            return bytearray(self.size)
        return None

    def release(self, buf: bytearray) -> None:
        with self._cond:
            self._free.append(buf)
            self._cond.notify()

    @property
    def created(self) -> int:
        return self._created
