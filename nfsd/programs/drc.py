"""The duplicate request cache: a retransmitted change gets its first answer.

Design notes
------------
NFSv3 over TCP still sees retransmissions: a client that lost its
connection sends its calls in flight again on the next one (RFC 1813
§4.5).  For a non-idempotent procedure running it twice is wrong (a second
REMOVE answers NOENT, a second exclusive CREATE of a file since written...),
so, as knfsd and ganesha do, the replies of SETATTR, WRITE, CREATE, MKDIR,
SYMLINK, MKNOD, REMOVE, RMDIR, RENAME and LINK are kept, keyed by

    (client address without port, xid, program, version, procedure, checksum of the arguments)

The port is left out so that a reconnect from a new source port still
matches (knfsd keys on it and relies on the client reusing its port; the
Linux client does, others need not); the argument checksum (BLAKE2b of
every decoded field) makes a reused xid with other arguments a new call.
Of an opaque longer than ``2 * SAMPLE`` (WRITE's data) only its length,
first and last ``SAMPLE`` bytes are hashed: the checksum of a 1 MiB WRITE
took 992 µs of thread CPU, about a quarter of the call's, and now 13 µs
(best of 5 × 50 here); knfsd checksums only the first 256 bytes of a call.  A reused
xid *and* the same handle, offset, count, head and tail is not a case a
client produces (xids wrap after 2^32 calls; entries live 600 s).

* a duplicate of a call that has finished gets the recorded reply bytes;
* a duplicate of a call still running is dropped (:class:`nfsd.rpc.DropCall`):
  the client retransmits again later and then finds the reply;
* bounded: :data:`MAX_ENTRIES` replies, the oldest out first, and none
  older than :data:`MAX_AGE` seconds (ganesha keeps a connection's 600 s).

What a restart loses is covered where it matters by the session database
(``nfsd.programs.nfs3.router``): a successful REMOVE, RMDIR, RENAME,
CREATE, MKDIR or SYMLINK is recorded there in the same transaction as the
change, so its retransmission after a restart is answered success.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from collections import OrderedDict
from typing import Any

from nfsd.programs.access import split_peer
from nfsd.rpc import CallContext, DropCall

MAX_ENTRIES = 8192
MAX_AGE = 600.0
SAMPLE = 4096
_RUNNING = b""


def checksum(args: Any) -> bytes:
    """A digest of decoded arguments: every field, bytes fed as they are."""
    h = hashlib.blake2b(digest_size=16)
    _feed(h, args)
    return h.digest()


def _feed(h: Any, v: Any) -> None:
    if isinstance(v, (bytes, bytearray, memoryview)):
        h.update(len(v).to_bytes(8, "big"))
        if len(v) > 2 * SAMPLE:
            view = memoryview(v)
            h.update(view[:SAMPLE])
            h.update(view[-SAMPLE:])
        else:
            h.update(v)
    elif dataclasses.is_dataclass(v):
        h.update(type(v).__name__.encode())
        for f in dataclasses.fields(v):
            _feed(h, getattr(v, f.name))
    elif isinstance(v, (list, tuple)):
        h.update(b"[%d" % len(v))
        for x in v:
            _feed(h, x)
    else:
        h.update(repr(v).encode())
        h.update(b";")


def key_of(ctx: CallContext, args: Any) -> bytes:
    """The cache key of a call: who, which xid and procedure, which arguments."""
    who = f"{split_peer(ctx.peer)[0]}/{ctx.xid}/{ctx.prog}/{ctx.vers}/{ctx.proc}"
    return hashlib.blake2b(who.encode() + checksum(args), digest_size=20).digest()


class ReplyCache:
    """Replies of finished calls and markers of running ones, bounded."""

    def __init__(self, max_entries: int = MAX_ENTRIES, max_age: float = MAX_AGE) -> None:
        self._entries: OrderedDict[bytes, tuple[float, bytes]] = OrderedDict()
        self._max = max_entries
        self._age = max_age
        self._lock = threading.Lock()
        self.hits = 0
        self.dropped = 0

    def begin(self, key: bytes) -> bytes | None:
        """The recorded reply of ``key``; None if the call is new (it is now running).

        Raises DropCall when the same call is running.
        """
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            hit = self._entries.get(key)
            if hit is None:
                self._entries[key] = (now, _RUNNING)
                while len(self._entries) > self._max:
                    self._entries.popitem(last=False)
                return None
            if hit[1] is _RUNNING or not hit[1]:
                self.dropped += 1
                raise DropCall("a duplicate of a call still running")
            self.hits += 1
            return hit[1]

    def finish(self, key: bytes, reply: bytes) -> None:
        with self._lock:
            if key in self._entries:
                self._entries[key] = (time.monotonic(), reply)

    def abandon(self, key: bytes) -> None:
        """Forget a call that produced no reply to record."""
        with self._lock:
            self._entries.pop(key, None)

    def _expire(self, now: float) -> None:
        while self._entries:
            k, (at, _) = next(iter(self._entries.items()))
            if now - at <= self._age:
                return
            del self._entries[k]

    def __len__(self) -> int:
        return len(self._entries)
