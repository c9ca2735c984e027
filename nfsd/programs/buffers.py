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

import contextlib
import mmap
import threading
import time
from collections.abc import Iterable
from typing import cast

IDLE_TRIM = 2.0  # seconds a free buffer keeps its pages
MAP_BUDGET = 2 * 1024 * 1024  # bytes sent from file mappings before their pages are unmapped
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
        # File mappings READ replies were sent from since their pages were last
        # unmapped (by id: a memoryview is not hashable), the bytes, and when.
        self._maps: dict[int, memoryview] = {}
        self._mapped = 0
        self._mapped_at = 0.0

    def acquire(self) -> mmap.mmap:
        """A buffer, waiting for one to come back if all ``count`` are out.

        The wait has no bound: it relies on every buffer given out coming
        back, which the transport ensures (each reply freed exactly once,
        whether sent, refused by TLS or dropped with its connection; a
        stalled queue leaves the pool after ``DETACH_AFTER``:
        ``nfsd.transport.server``).  A buffer lost breaks that for good;
        a stop does not wait for a thread left here (``_Workers.stop``).
        """
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
            if self._free:  # _take's common case, one Python call less
                self._since.pop()
                return self._free.pop()
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
            touched = self._unmap_all() if now - self._mapped_at >= IDLE_TRIM else []
        _unmap(touched)
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

    def mapped(self, maps: Iterable[memoryview], n: int) -> None:
        """A reply of ``n`` bytes was sent from these file mappings
        (``nfs3.read.by_mapping``; called by its release, once sent: counted
        when made, the replies still queued mapped their pages in after the
        unmapping, 2 workers holding ~17 MiB more than copying at their peak
        under 1 MiB READs of a 1 GiB file, 5 MiB once counted when sent).
        The pages a send touches are mapped into the process and count in
        its RSS (the file's pages, not copies):
        past :data:`MAP_BUDGET` bytes, or at rest (:meth:`trim`), they are
        unmapped, the page cache keeping them (a later send maps them again,
        a minor fault each 64 KiB).  The RSS they add stays under about the
        budget plus the replies being sent.  (2 workers, 1 MiB READs of a
        1 GiB file on 1 and 4 connections, peak RSS of all processes: 109.0
        MiB with a 4 MiB budget, 106.2 with 2, 104.8 with 1, 103.3 copying;
        the CPU a call the same with 4 and 2, a little more with 1 on the
        merged image: unmapping is one ``madvise`` a budget.)"""
        with self._lock:
            for view in maps:
                self._maps[id(view)] = view
            self._mapped += n
            self._mapped_at = time.monotonic()
            if self._mapped < MAP_BUDGET:
                return
            touched = self._unmap_all()
        _unmap(touched)

    def _unmap_all(self) -> list[memoryview]:
        """(lock held) The mappings to unmap, forgotten."""
        touched = list(self._maps.values())
        self._maps.clear()
        self._mapped = 0
        return touched

    @property
    def created(self) -> int:
        return self._created


def _unmap(views: list[memoryview]) -> None:
    """Unmap the pages of file mappings from the process (``MADV_DONTNEED``:
    a shared file mapping loses nothing; the page cache keeps the pages)."""
    for view in views:
        with contextlib.suppress(OSError, ValueError):  # ValueError: unmapped meanwhile
            cast(mmap.mmap, view.obj).madvise(mmap.MADV_DONTNEED)
