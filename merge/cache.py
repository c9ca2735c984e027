"""A bounded, thread-safe LRU map whose entries may expire: every cache of the stack.

Design notes
------------
* Bounded: past ``maxsize`` the least recently used entry goes.  Nothing in
  the namespace grows with the size of the storage.
* Expiry: with ``ttl`` set, an entry older than ``ttl`` seconds (by the
  injected ``clock``) is a miss and is dropped.  ``ttl=None`` keeps entries
  until evicted (the merge cache revalidates its entries itself).
  :meth:`TtlLru.find` also returns an expired entry, flagged stale, and
  keeps it: a layer refreshing a listing compares the new one with it, and
  hands out the old object again when nothing changed.
* ``note(until)``, when given, is told how long each value handed out (or
  stored) stays valid: the memo at the top of the stack (``merge.memo``)
  keeps an answer no longer than everything it was computed from.
* ``on_evict(value)`` is called for every value that leaves the cache
  (evicted, expired, replaced, popped, cleared), *after* the lock is
  released: it may close file descriptors, and must not run under a lock
  that another thread needs to read the cache.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

Clock = Callable[[], float]


class TtlLru(Generic[K, V]):
    """``maxsize`` entries at most, each valid ``ttl`` seconds (or until evicted)."""

    def __init__(
        self,
        maxsize: int,
        ttl: float | None,
        clock: Clock,
        on_evict: Callable[[V], None] | None = None,
        note: Callable[[float], None] | None = None,
    ) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._maxsize = maxsize
        self._ttl = ttl
        self._clock = clock
        self._on_evict = on_evict
        self._note = note if ttl is not None else None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: K) -> V | None:
        """The value of ``key``, or ``None`` when absent or expired."""
        dropped: V | None = None
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return None
            born, value = item
            if self._ttl is not None and self._clock() - born >= self._ttl:
                del self._data[key]
                dropped = value
            else:
                self._data.move_to_end(key)
                if self._note is not None and self._ttl is not None:
                    self._note(born + self._ttl)
                return value
        self._evicted([dropped])
        return None

    def peek(self, key: K) -> V | None:
        """The value of ``key``, an expired one included, or ``None``; no lock taken and
        the order of eviction untouched (a single dict look-up: for a caller that only
        reuses a value it checks itself)."""
        item = self._data.get(key)
        return None if item is None else item[1]

    def discard(self, keys: Sequence[K]) -> None:
        """Drop every one of ``keys`` present (one lock for all; ``on_evict`` as ``pop``).

        Copied when most of it went, so that the memory of what went is returned.
        """
        gone: list[V] = []
        with self._lock:
            data = self._data
            pop = data.pop
            for key in keys:
                item = pop(key, None)
                if item is not None:
                    gone.append(item[1])
            if len(gone) > len(data):
                # A dict never shrinks: copied, the table of what went is given back
                # (costs no more than the pops did).
                self._data = OrderedDict(data)
        self._evicted(gone)

    def find(self, key: K) -> tuple[V, bool] | None:
        """``(value, fresh)`` of ``key``, an expired value included (and kept), or ``None``."""
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return None
            self._data.move_to_end(key)
            born, value = item
            ttl = self._ttl
            if ttl is None:
                return value, True
            if self._clock() - born >= ttl:
                return value, False
        if self._note is not None:
            self._note(born + ttl)
        return value, True

    def put(self, key: K, value: V) -> None:
        """Set ``key``; the value it replaces and any evicted ones go to ``on_evict``."""
        gone: list[V] = []
        with self._lock:
            old = self._data.get(key)
            if old is not None and old[1] is not value:
                gone.append(old[1])
            now = self._clock()
            # A key present is replaced in place (then moved last): the dict keeps
            # the key object it holds, not one more copy of an equal key per put.
            self._data[key] = (now, value)
            if old is not None:
                self._data.move_to_end(key)
            while len(self._data) > self._maxsize:
                gone.append(self._data.popitem(last=False)[1][1])
        if self._note is not None and self._ttl is not None:
            self._note(now + self._ttl)
        self._evicted(gone)

    def pop(self, key: K, value: V | None = None) -> None:
        """Drop ``key`` (only if it still holds ``value``, when given)."""
        with self._lock:
            item = self._data.get(key)
            if item is None or (value is not None and item[1] is not value):
                return
            del self._data[key]
        self._evicted([item[1]])

    def clear(self) -> None:
        with self._lock:
            gone = [v for _, v in self._data.values()]
            self._data.clear()
        self._evicted(gone)

    def _evicted(self, values: Sequence[V | None]) -> None:
        if self._on_evict is not None:
            for v in values:
                if v is not None:
                    self._on_evict(v)
