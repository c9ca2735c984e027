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
Of an opaque longer than ``2 * SAMPLE`` only its length, first and last
``SAMPLE`` bytes are hashed (a 1 MiB WRITE's checksum: 992 → 13 µs).

WRITE's key is cheaper still (:func:`_write_input`): its handle, offset,
count, stable and data length as they are, and of the data only a CRC-32
(of all of it up to ``2 * SAMPLE`` bytes, else of its first and last
``SAMPLE``), not a BLAKE2b over 4 KiB: the hash of a 4 KiB WRITE's data was
~13 % of the loop's time on random 4 KiB WRITEs.  And that input, prefixed
with who and which call, is the key itself (:func:`key_of`): no hash at all.
knfsd keys its cache on xid, procedure, version, protocol, the call's
length, the client's address and a checksum of only the first 256 bytes of
the call (``RC_CSUMLEN``, fs/nfsd/cache.h).  The reply cache guards against a *retransmission*: the
same xid from the same client within :data:`MAX_AGE` (600 s) of the first;
a client moves its xid with every call and wraps it after 2^32 calls, so a
reused xid with the same handle, offset and count but other data is not a
case a client produces, and should one, the CRC still tells such data
apart but for a chance of 2^-32.  A WRITE's key is never stored (only
:data:`~nfsd.programs.nfs3.router.RECORDED` procedures' keys are committed
to the session database, and WRITE is not one), so its form may change
between versions; the keys of the recorded procedures may not
(``tests/unit/test_drc_checksum.py`` pins them).

* a duplicate of a call that has finished gets the recorded reply bytes;
* a duplicate of a call still running is dropped (:class:`nfsd.rpc.DropCall`):
  the client retransmits again later and then finds the reply;
* bounded: :data:`MAX_ENTRIES` replies, the oldest out first, and none
  older than :data:`MAX_AGE` seconds (ganesha keeps a connection's 600 s),
  the oldest looked at once a second.

What a restart loses is covered where it matters by the session database
(``nfsd.programs.nfs3.router``): a successful REMOVE, RMDIR, RENAME,
CREATE, MKDIR or SYMLINK is recorded there in the same transaction as the
change, so its retransmission after a restart is answered success.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import threading
import time
import zlib
from collections import OrderedDict
from typing import Any

from nfsd.programs.access import split_peer
from nfsd.rpc import CallContext, DropCall
from xdr.nfs3 import WRITE3args

MAX_ENTRIES = 8192
MAX_AGE = 600.0
SAMPLE = 4096
_RUNNING = b""


def checksum(args: Any) -> bytes:
    """A digest of decoded arguments: every field; of an opaque longer than
    ``2 * SAMPLE``, its length and first and last ``SAMPLE`` bytes; of a WRITE's
    data a CRC-32 (see above)."""
    if type(args) is WRITE3args:
        return hashlib.blake2b(_write_input(args), digest_size=16).digest()
    out = bytearray()
    _feed(out, args)
    return hashlib.blake2b(out, digest_size=16).digest()


def _write_input(a: WRITE3args) -> bytes:
    """WRITE's digest input (see above): its fields as they are and a CRC-32 of its
    data (all of it up to ``2 * SAMPLE`` bytes, else its first and last ``SAMPLE``);
    fields of unexpected types (not from the decoder) take the general walk.  The
    fast path and the general path build the same ``WRITE3args``, so a call and its
    retransmission by the other path have the same key (``tests/unit/test_drc_checksum.py``)."""
    fh, data = a.file.data, a.data
    if not (
        type(a.offset) is int
        and type(a.count) is int
        and type(a.stable) is int
        and isinstance(fh, bytes)
        and len(fh) <= 2 * SAMPLE
        and isinstance(data, (bytes, memoryview))
    ):
        out = bytearray()
        _feed(out, a)
        return bytes(out)
    n = len(data)
    if n > 2 * SAMPLE:
        view = memoryview(data)
        crc = zlib.crc32(view[-SAMPLE:], zlib.crc32(view[:SAMPLE]))
    else:
        crc = zlib.crc32(data)
    return b"WRITE3/crc32 %b%b%d;%d;%d;%d;%d" % (
        len(fh).to_bytes(8, "big"), fh, a.offset, a.count, a.stable, n, crc,
    )  # fmt: skip


@functools.cache
def _plan(t: type) -> tuple[bytes, tuple[str, ...]] | None:
    """Per argument type: its name and fields if a dataclass (``dataclasses.fields``
    per value cost a third of a WRITE's key), else None."""
    if not dataclasses.is_dataclass(t):
        return None
    return t.__name__.encode(), tuple(f.name for f in dataclasses.fields(t))


def _feed(out: bytearray, v: Any) -> None:
    """Append ``v``'s digest input to ``out`` (one hash update for the whole call)."""
    if type(v) is int:  # most fields; repr's bytes (a bool's differ: not here)
        out += b"%d;" % v
        return
    if isinstance(v, (bytes, bytearray, memoryview)):
        out += len(v).to_bytes(8, "big")
        if len(v) > 2 * SAMPLE:
            view = memoryview(v)
            out += view[:SAMPLE]
            out += view[-SAMPLE:]
        else:
            out += v
        return
    plan = _plan(v.__class__)
    if plan is not None:
        out += plan[0]
        for name in plan[1]:
            _feed(out, getattr(v, name))
    elif isinstance(v, (list, tuple)):
        out += b"[%d" % len(v)
        for x in v:
            _feed(out, x)
    else:
        out += repr(v).encode()
        out += b";"


def key_of(ctx: CallContext, args: Any) -> bytes:
    """The cache key of a call: who, which xid and procedure, which arguments.

    A WRITE's is its digest input itself (~100 bytes, never stored: no hash to
    make twice a call, ~1.5 µs of the loop's WRITE); every other procedure's a
    20-byte BLAKE2b, which no WRITE's key can equal (longer)."""
    who = f"{split_peer(ctx.peer)[0]}/{ctx.xid}/{ctx.prog}/{ctx.vers}/{ctx.proc}".encode()
    if type(args) is WRITE3args:
        return who + b"/" + _write_input(args)
    return hashlib.blake2b(who + checksum(args), digest_size=20).digest()


class ReplyCache:
    """Replies of finished calls and markers of running ones, bounded."""

    def __init__(self, max_entries: int = MAX_ENTRIES, max_age: float = MAX_AGE) -> None:
        self._entries: OrderedDict[bytes, tuple[float, bytes]] = OrderedDict()
        self._max = max_entries
        self._age = max_age
        self._lock = threading.Lock()
        self._next_expiry = 0.0
        self.hits = 0
        self.dropped = 0

    def begin(self, key: bytes) -> bytes | None:
        """The recorded reply of ``key``; None if the call is new (it is now running).

        Raises DropCall when the same call is running.
        """
        now = time.monotonic()
        with self._lock:
            if now >= self._next_expiry:  # the oldest looked at once a second, not a call
                self._next_expiry = now + 1.0
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
