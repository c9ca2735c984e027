"""Host name look-ups for matching, cached, and never on the caller's thread.

Design notes
------------
* Callers (every NFS call that meets a host-name or wildcard spec) ask and
  get an answer at once from the cache, or wait at most ``wait`` seconds for
  a look-up that runs on one of a few background threads.  A resolver that
  hangs or fails therefore never stalls a call beyond ``wait``: at worst the
  answer is "not known (yet)", ``None``, which matches nothing.
* Answers are kept ``ttl`` seconds (300 by default, as mountd keeps its
  auth cache); failures and empty answers are kept ``neg_ttl`` (30): a
  client whose name does not resolve is refused quickly, and the name
  server is asked again at most every ``neg_ttl``.
* An expired answer is still given (stale) while one refresh runs in the
  background, for at most ``stale`` seconds (30) past its expiry; a refresh
  that fails replaces it (fail closed: a name that no longer resolves
  admits nobody).  Past ``stale`` it is not given any more: a refresh that
  hangs (a name server that never answers, a stuck NSS module) or one that
  could not even be queued (the look-ups bounded, below) must not keep a
  host admitted on an answer of any age.  Callers then wait up to ``wait``
  for the refresh, as for a name never looked up (RFC 8767 bounds a
  resolver's stale answers the same way).
* Bounded: at most ``maxsize`` answers (least recently used evicted) and
  ``maxsize`` look-ups waiting or running.  Past that, a new name is
  answered ``None`` without a look-up: a crowd of strangers' addresses
  cannot make the cache or the queue grow without end.
* Keys and answers are normalized (``exports.clients.normalize_addr`` and
  ``normalize_name``) whatever the look-up functions return.

The look-up functions are injected (tests use fakes, slow and failing ones
included); the defaults use ``socket.getaddrinfo`` and ``socket.gethostbyaddr``.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from exports.clients import normalize_addr, normalize_name

log = logging.getLogger("recovery_fs.exports")

Lookup = Callable[[str], Iterable[str]]
Key = tuple[str, str]  # ("addresses", name) or ("names", address)


def forward_lookup(name: str) -> set[str]:
    """The IP addresses of ``name`` (the system resolver: /etc/hosts, DNS, ...)."""
    infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    return {str(info[4][0]) for info in infos}


def reverse_lookup(addr: str) -> set[str]:
    """The names of ``addr``: its canonical name and aliases."""
    host, aliases, _ = socket.gethostbyaddr(addr)
    return {host, *aliases}


@dataclass(slots=True)
class _Entry:
    value: frozenset[str] | None  # None: the look-up failed or found nothing
    expires: float


class Resolver:
    """Name look-ups cached with a time to live, done on background threads.

    A failing or slow resolver never stalls a caller beyond ``wait``.
    Positive answers are kept ``ttl`` seconds, negative or failed ones
    ``neg_ttl``; an expired entry is still answered (stale) while a refresh
    runs in the background, for at most ``stale`` seconds past its expiry.
    The cache and the queue are bounded.
    """

    def __init__(
        self,
        ttl: float = 300.0,
        neg_ttl: float = 30.0,
        *,
        stale: float = 30.0,
        forward: Lookup | None = None,
        reverse: Lookup | None = None,
        clock: Callable[[], float] = time.monotonic,
        maxsize: int = 4096,
        threads: int = 4,
    ) -> None:
        if maxsize < 1 or threads < 1:
            raise ValueError("maxsize and threads must be at least 1")
        self._ttl = ttl
        self._neg_ttl = neg_ttl
        self._stale = stale
        self._lookups: dict[str, Lookup] = {
            "addresses": forward or forward_lookup,
            "names": reverse or reverse_lookup,
        }
        self._clock = clock
        self._maxsize = maxsize
        self._threads_wanted = threads
        self._cache: OrderedDict[Key, _Entry] = OrderedDict()
        self._pending: dict[Key, threading.Event] = {}
        self._queue: queue.SimpleQueue[Key | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False
        self._full = False  # the queue limit was hit and logged

    def addresses(self, name: str, wait: float = 0.0) -> set[str] | None:
        """The addresses of host ``name``; None when not known (yet), or when it has none."""
        found = self._answer(("addresses", normalize_name(name)), wait)
        return None if found is None else set(found)

    def names(self, addr: str, wait: float = 0.0) -> set[str] | None:
        """The names of address ``addr`` (not forward-confirmed); None when not known (yet)."""
        try:
            key = ("names", normalize_addr(addr))
        except ValueError:
            return None
        found = self._answer(key, wait)
        return None if found is None else set(found)

    def close(self) -> None:
        """Stop the look-up threads (those stuck in a look-up end when it returns)."""
        with self._lock:
            self._closed = True
            waiting = list(self._pending.values())
            self._pending.clear()
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(None)
        for event in waiting:
            event.set()

    def __len__(self) -> int:
        return len(self._cache)

    def pending(self) -> int:
        """How many look-ups are waiting or running."""
        return len(self._pending)

    def looking_up(self, kind: str, arg: str) -> bool:
        """Whether a look-up of ``arg`` is waiting or running: ``kind`` ``"addresses"``
        (``arg`` a name) or ``"names"`` (an address).  A caller given no answer (None)
        learns whether one may come (a verdict not known yet) or none will (the
        look-up failed, found nothing, or was not started)."""
        try:
            key = (kind, normalize_name(arg) if kind == "addresses" else normalize_addr(arg))
        except ValueError:
            return False
        return key in self._pending

    def _answer(self, key: Key, wait: float) -> frozenset[str] | None:
        """The cached answer for ``key``, fresh or stale (at most ``stale`` past its
        expiry); else wait up to ``wait`` for a look-up."""
        stale = None
        with self._lock:
            entry = self._cache.get(key)
            if entry is not None:
                self._cache.move_to_end(key)
                now = self._clock()
                if now < entry.expires:
                    return entry.value
                if now < entry.expires + self._stale:
                    stale = entry.value
            event = self._schedule(key)
        if stale is not None:
            return stale
        if event is None or wait <= 0:
            return None
        event.wait(wait)
        with self._lock:
            entry = self._cache.get(key)
            if entry is None or self._clock() >= entry.expires + self._stale:
                return None  # still the old answer, too old: the refresh did not end
            return entry.value

    def _schedule(self, key: Key) -> threading.Event | None:
        """The event set when ``key``'s look-up ends; starts one unless one runs (lock held)."""
        event = self._pending.get(key)
        if event is not None or self._closed:
            return event
        if len(self._pending) >= self._maxsize:
            if not self._full:  # once until the queue drains: a flood must not flood the log
                self._full = True
                log.warning("name look-ups: %d pending; new names not looked up", self._maxsize)
            return None
        event = self._pending[key] = threading.Event()
        if len(self._threads) < self._threads_wanted:
            thread = threading.Thread(target=self._work, name="exports-resolver", daemon=True)
            self._threads.append(thread)
            thread.start()
        self._queue.put(key)
        return event

    def _work(self) -> None:
        """One look-up thread: look up each key queued, store the answer, wake the waiters."""
        while (key := self._queue.get()) is not None:
            value = self._look_up(key)
            with self._lock:
                event = self._pending.pop(key, None)
                self._full = self._full and bool(self._pending)
                if self._closed:
                    continue
                ttl = self._ttl if value else self._neg_ttl
                self._cache[key] = _Entry(value, self._clock() + ttl)
                self._cache.move_to_end(key)
                while len(self._cache) > self._maxsize:
                    self._cache.popitem(last=False)
            if event is not None:
                event.set()

    def _look_up(self, key: Key) -> frozenset[str] | None:
        """The normalized answer of the look-up function; None for a failure or no answer."""
        kind, arg = key
        normalize = normalize_addr if kind == "addresses" else normalize_name
        try:
            found = self._lookups[kind](arg)
            out = set()
            for item in found:
                try:
                    out.add(normalize(str(item)))
                except ValueError:
                    continue
        except Exception as e:  # any failure of a resolver is "no answer", never a crash
            log.debug("look-up of %s %s failed: %s", kind, arg, e)
            return None
        return frozenset(out) or None
