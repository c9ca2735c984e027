"""A session's WRITE from the record's bytes: the fast path's WRITE (``nfs3.fastpath``).

Design notes
------------
Random 4 KiB FILE_SYNC WRITEs to a session are served on the loop
(``nfs3.router``, ``INLINE_WRITE``).  Through the general path each one
decoded the RPC header and its ``opaque_auth`` objects, built an argument
unpacker, went through the procedure table, the router's partial and its
per-procedure lookups, and its deferred reply passed one more ``Later``
(the dispatcher's finish) before the transport: about a third of the
loop's CPU per WRITE (measured: docs/performance-writes.md).  Here
``FastPath.serve`` reads the call header as for its own procedures (one
``struct`` call, the credentials from the dispatcher's cache, the handle),
one more reads the ``WRITE3args`` head, the data is a view of the record
(as ``unpack_opaque_view`` gives it), and the reply gets its RPC header put
in front once the router's reply is there.

What it may skip and what it may not:

* It serves only an exact, ordinary call: RPC v2 CALL of NFSv3 WRITE over
  TCP, AUTH_SYS whose bytes the dispatcher already decoded (its credential
  cache), a null verifier, a session handle (by its layout), a known
  ``stable_how``, ``count`` equal to the data's length, and no byte more or
  less than the arguments.  Anything else returns None and the general
  path serves it (a WRITE to the read-only export, garbage, a refusal).
* The router does the rest, the same code in the same order as the
  general path (``Router.quick_write``: the size rule for the loop, the
  session's access check before its handle is verified, then the duplicate
  request cache around ``write.write3``).  A refused client, an unknown
  session or a duplicate of a call still running returns None *before*
  anything is recorded, so the general path answers (or drops) it exactly
  as it would have; once the reply cache has begun the call, every outcome
  (an error status, a deferred answer) is answered here, and what raises
  (WouldBlock, a bug) has already been forgotten by the cache
  (``Router._keep``).
* The deferred reply is one Later (``router._Recorded``): settled with the
  body on the store's committer, it records it in the reply cache and puts
  the RPC header on in the same step (no Later mapped onto another).  An
  unexpected exception in the deferred answer is logged and answered
  ``NFS3ERR_SERVERFAULT`` with WRITE's failure body, as the dispatcher's
  ``_mapped`` does.  The bytes are the general path's
  (``tests/proto/test_instant_write_fast.py`` compares them).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import cast

from nfsd.programs.sessions import is_session_handle
from nfsd.rpc import Buffer, CallContext, Reply
from xdr import nfs3
from xdr.rpc import (
    SUCCESS,
    accepted_header,
)

_WRITE_HEAD = struct.Struct(">QIII")  # offset, count, stable, data length
_ACCEPTED = accepted_header(0, SUCCESS)[4:]  # after the xid
_STABLE = frozenset((nfs3.UNSTABLE, nfs3.DATA_SYNC, nfs3.FILE_SYNC))

QuickWrite = Callable[[CallContext, nfs3.WRITE3args, bytes], "Reply | None"]
"""``nfs3.router.Router.quick_write``."""


class FastWrite:
    """Its :meth:`serve` is ``FastPath.writes``: a WRITE once its header is read."""

    def __init__(self, quick: QuickWrite) -> None:
        self.quick = quick

    def serve(self, record: bytes, pos: int, fh: bytes, ctx: CallContext) -> Reply | None:
        """A WRITE whose RPC header, credentials and handle ``FastPath.serve`` has
        read and checked (``pos``: where the handle's padding ends; ``ctx``: the
        call's context it made)."""
        size = len(record)
        if not is_session_handle(fh):
            return None  # the read-only export's (ROFS) or garbage: the general path's
        if pos + _WRITE_HEAD.size > size:
            return None
        offset, count, stable, dlen = _WRITE_HEAD.unpack_from(record, pos)
        pos += _WRITE_HEAD.size
        if count != dlen or stable not in _STABLE or size != pos + ((dlen + 3) & ~3):
            return None
        args = nfs3.WRITE3args(
            nfs3.nfs_fh3(fh), offset, count, stable, memoryview(record)[pos : pos + dlen]
        )
        head = record[:4] + _ACCEPTED
        reply = self.quick(ctx, args, head)
        if reply is None or reply.later is not None:
            return reply  # deferred: the router's _Recorded puts the header on
        reply.parts[0] = head + bytes(cast(Buffer, reply.parts[0]))  # a WRITE's: no FileRun
        return reply
