"""A bounded pool of reusable READ buffers.

A READ reply is built by ``preadv`` into one of these buffers and sent
from it as it lies; the buffer comes back when the reply has been sent.
Allocating a fresh 1 MiB object per reply costs a third of the
throughput, and an unbounded number of them is how 64 clients asking for
1 MiB each would take the server's memory: the pool caps both.  Buffers
are created on first need, up to ``count``; a READ that finds none free
waits for one.  Each is an anonymous mapping, not a ``bytearray``:
``bytearray(n)`` writes its n zeros, so every buffer was resident in full
from its creation, and 4 KiB READs with 64 in flight made a worker's pool
24 MiB; a mapping's pages become resident when a reply fills them (the
same pool: 0.1 MiB).

A burst leaves every buffer it used resident (1 MiB READs on 8
connections: 16 MiB a worker) long after it ended.  The free buffers
are a stack, so a steady load keeps reusing the same few at its top;
one left at rest for :data:`IDLE_TRIM` seconds gives its pages back
(``madvise(MADV_DONTNEED)``: the mapping stays, its next use faults
fresh zero pages in, ~30 µs a MiB) when the transport's sweep calls
:meth:`BufferPool.trim`.
"""

from __future__ import annotations

import mmap
import threading
import time

IDLE_TRIM = 2.0  # seconds a free buffer keeps its pages
CLEAN = float("inf")  # the release time of a buffer whose pages were given back


class BufferPool:
    """At most ``count`` buffers of ``size`` bytes, created lazily."""

    def __init__(self, size: int, count: int) -> None:
        self.size = size
        self.count = count
        self._free: list[mmap.mmap] = []
        self._since: list[float] = []  # when each free buffer came back (CLEAN: trimmed)
        self._created = 0
        # A plain lock for taking and giving back (the Condition's own
        # ``with`` is Python code: 1.7 -> 0.4 µs a READ's pair); the
        # Condition only for a READ that must wait, notified only then.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._waiting = 0

    def acquire(self) -> mmap.mmap:
        """A buffer, waiting for one to come back if all ``count`` are out."""
        with self._lock:
            while (buf := self._take()) is None:
                self._waiting += 1
                try:
                    self._cond.wait()
                finally:
                    self._waiting -= 1
            return buf

    def try_acquire(self) -> mmap.mmap | None:
        """A buffer if one is free (or may be created) now; None otherwise."""
        with self._lock:
            return self._take()

    def _take(self) -> mmap.mmap | None:
        if self._free:
            self._since.pop()
            return self._free.pop()
        if self._created < self.count:
            self._created += 1
            return mmap.mmap(-1, self.size, flags=mmap.MAP_PRIVATE)  # anonymous, private
        return None

    def release(self, buf: mmap.mmap) -> None:
        now = time.monotonic()
        with self._lock:
            self._free.append(buf)
            self._since.append(now)
            if self._waiting:
                self._cond.notify()

    def trim(self, now: float) -> int:
        """Give back the pages of the free buffers at rest for ``IDLE_TRIM``
        seconds (``now``: ``time.monotonic()``); how many were trimmed.

        The oldest are at the bottom of the stack: the scan stops at the
        first one still in use lately.  Only a hint to the kernel: a buffer's
        bytes are rewritten by every READ that takes it, so none is read
        after this; failing costs memory, never a byte."""
        trimmed = 0
        with self._lock:
            since = self._since
            for i, released in enumerate(since):
                if released == CLEAN:
                    continue
                if now - released < IDLE_TRIM:
                    break
                try:
                    self._free[i].madvise(mmap.MADV_DONTNEED)
                except OSError:
                    return trimmed
                since[i] = CLEAN
                trimmed += 1
        return trimmed

    @property
    def created(self) -> int:
        return self._created
