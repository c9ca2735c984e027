"""GETATTR, ACCESS, READ, LOOKUP and READDIRPLUS of the read-only export, from the record's bytes.

Design notes
------------
A libnfs or Linux client's steady state is GETATTR and READ with the same
AUTH_SYS credentials, on handles the server issued.  Through the general
path (``nfsd.rpc.Dispatcher``) such a call builds a ``call_body``, two
``opaque_auth``, an argument unpacker and its objects, then routes through
the procedure table, ``nfs3.router`` and ``Nfs3Service.path_of``: about
half a GETATTR's time in the dispatcher (``bench/dispatch_micro.py``).
Here one call reads the header and the arguments (:func:`parse_call`:
``nfsd._fastcall.parse_call``, or its twin :func:`parse_call_py` without
the extension or with ``RECOVERY_FS_PURE=1``), and the reply goes out as
one buffer (plus a READ's data).

What it may skip and what it may not:

* It serves only what it recognises *exactly*: an RPC v2 CALL of NFSv3
  GETATTR, ACCESS, READ, LOOKUP (of a name that exists) or READDIRPLUS (a
  page of a listing already encoded whole: ``readdir.readdirplus_encoded``)
  over TCP, AUTH_SYS
  whose bytes the dispatcher already decoded (its credential cache), a
  null verifier, a handle of the read-only export that ``HandleCodec``
  has already verified (its cache holds only MAC-checked bytes), and no
  byte more or less than the arguments.  Anything else - and every refusal or error - returns None:
  the general path then serves the call and writes the answer, so no
  failure reply is ever built here.
* A session's handle (``nfs3.router``): answered by the router's ``quick``
  (the session's access check and procedure, the same code as the general
  path's, never waiting on the session's database; None on any refusal or
  failure), or left to the general path when no sessions are routed.
* A WRITE: a session's only, its header read here, the rest by
  ``nfs3.fastwrite`` (``FastPath.writes``); None without sessions.
* It keeps no state of its own (but the fattr3 bytes of the last
  ``Attrs`` object), so it has no deadline to honour: each
  call asks ``AccessControl.nfs_status`` (the exports' decisions, their
  TTL and generation, squashing), the namespace (rule 8's expiry, a
  replaced file noticed by ``open``) and ``may`` exactly as the general
  path does, in the same order: the access check before the handle.
* READ shares ``read.read_reply`` with the general path, LOOKUP
  ``attrs.lookup3_ok``, ACCESS ``attrs.access_granted``, READDIRPLUS
  ``readdir``'s page and reply body; the bytes are
  the same (``tests/unit/test_fastpath.py`` runs generated calls through
  both and compares the replies byte for byte).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, cast

from merge.namespace import Attrs, Kind, NamespaceError, PresentedPath
from nfsd.native import fastcall
from nfsd.programs.access import AccessControl
from nfsd.programs.errors import NfsError
from nfsd.programs.nfs3.attrs import access_granted, lookup3_ok
from nfsd.programs.nfs3.fastattr import LastFattr3
from nfsd.programs.nfs3.read import read_reply
from nfsd.programs.nfs3.readdir import readdirplus_encoded
from nfsd.programs.nfs3.service import (
    MAY_EXEC,
    MAY_READ,
    RTMAX,
    Nfs3Service,
    decode_name,
    may,
)
from nfsd.programs.sessions import HANDLE_SIZE as _SESSION_SIZE
from nfsd.programs.sessions import VERSION as _SESSION_VERSION
from nfsd.rpc import Buffer, CallContext, CredCache, Reply
from nfsd.transport.tls import Security
from xdr import nfs3
from xdr.base import XdrError
from xdr.rpc import (
    AUTH_SYS,
    CALL,
    MAX_AUTH_BYTES,
    RPC_VERSION,
    SUCCESS,
    accepted_header,
    authsys_parms,
)

_HEAD = struct.Struct(">8I")  # xid, msg_type, rpcvers, prog, vers, proc, cred flavour, length
_VERF_FH = struct.Struct(">3I")  # verifier flavour, verifier length, handle length
_READ_ARGS = struct.Struct(">QI")  # offset, count
_PLUS_ARGS = struct.Struct(">Q8xII")  # cookie, (its verifier: never checked), dircount, maxcount
_GETATTR, _READ, _LOOKUP = nfs3.NFSPROC3_GETATTR, nfs3.NFSPROC3_READ, nfs3.NFSPROC3_LOOKUP
_ACCESS, _READDIRPLUS = nfs3.NFSPROC3_ACCESS, nfs3.NFSPROC3_READDIRPLUS
_NFS_PROGRAM = nfs3.NFS_PROGRAM
_DIR = Kind.DIR
_ARGS_AFTER_HANDLE = {  # LOOKUP: its name
    _GETATTR: 0,
    _READ: _READ_ARGS.size,
    _ACCESS: 4,
    _READDIRPLUS: _PLUS_ARGS.size,
}
_WRITE = nfs3.NFSPROC3_WRITE  # a session's: nfs3.fastwrite (FastPath.writes)
_SERVED = frozenset((*_ARGS_AFTER_HANDLE, _LOOKUP, _WRITE))
_U32 = struct.Struct(">I")
SessionQuick = Callable[[int, CallContext, Any], "Reply | None"]
"""``nfs3.router.Router.quick``: a session's GETATTR, ACCESS, READ or LOOKUP, or None."""
SessionWrite = Callable[..., "Reply | None"]
"""``nfs3.fastwrite.FastWrite.serve``: a WRITE, its call header read (see there)."""

# A successful reply's header after its xid (the call's own four bytes):
# REPLY, MSG_ACCEPTED, a null verifier, SUCCESS; then NFS3_OK (and TRUE, the
# post_op_attr that follows for READ).
_ACCEPTED = accepted_header(0, SUCCESS)[4:]
_ACCEPTED_OK = _ACCEPTED + struct.pack(">I", nfs3.NFS3_OK)
_ACCEPTED_OK_ATTRS = _ACCEPTED + struct.pack(">II", nfs3.NFS3_OK, 1)


Call = tuple[int, int, bytes, bytes, int, "int | bytes", int]
"""What :func:`parse_call` reads: (xid, procedure, credential's bytes, handle,
offset past the handle, a, b), (a, b) being READ's (offset, count), ACCESS's
(mask, 0), LOOKUP's (name, 0), or (0, 0)."""


def parse_call_py(record: bytes) -> Call | None:
    """The header and arguments of a call the fast path may serve, else None.

    An RPC v2 CALL of NFSv3 GETATTR, ACCESS, READ, LOOKUP, WRITE or READDIRPLUS, AUTH_SYS
    (of at most MAX_AUTH_BYTES), a null verifier, a handle of at most
    NFS3_FHSIZE bytes, and past it no byte more or less than the
    arguments (a LOOKUP's name at most MAXNAMLEN), but for a WRITE, whose
    rest ``nfs3.fastwrite`` reads (its handle cut short by the record's end,
    as a slice is).  The twin of ``nfsd._fastcall.parse_call``.
    """
    size = len(record)
    if size < _HEAD.size + _VERF_FH.size:
        return None
    xid, mtype, rpcvers, prog, vers, proc, flavor, n = _HEAD.unpack_from(record)
    if (
        proc not in _SERVED
        or mtype != CALL
        or rpcvers != RPC_VERSION
        or prog != nfs3.NFS_PROGRAM
        or vers != 3
        or flavor != AUTH_SYS
        or n > MAX_AUTH_BYTES
    ):
        return None
    end = _HEAD.size + ((n + 3) & ~3)
    if end + _VERF_FH.size > size:
        return None
    vflavor, vlen, fhlen = _VERF_FH.unpack_from(record, end)
    if vflavor or vlen or fhlen > nfs3.NFS3_FHSIZE:
        return None
    cred = record[_HEAD.size : _HEAD.size + n]
    pos = end + _VERF_FH.size
    fh = record[pos : pos + fhlen]
    pos += (fhlen + 3) & ~3
    a: int | bytes = 0
    b = 0
    if proc == _LOOKUP:
        if pos + 4 > size:
            return None
        (namelen,) = _U32.unpack_from(record, pos)
        if namelen > nfs3.MAXNAMLEN or size != pos + 4 + ((namelen + 3) & ~3):
            return None
        a = record[pos + 4 : pos + 4 + namelen]
    elif proc != _WRITE:
        if size != pos + _ARGS_AFTER_HANDLE[proc]:
            return None
        if proc == _READ:
            a, b = _READ_ARGS.unpack_from(record, pos)
        elif proc == _ACCESS:
            (a,) = _U32.unpack_from(record, pos)
    return xid, proc, cred, fh, pos, a, b


parse_call: Callable[[bytes], Call | None] = (
    fastcall.parse_call if fastcall is not None else parse_call_py
)


class FastPath:
    """Its :meth:`serve` is the NFS program's ``Program.fast``: see the notes above.

    (A bound method rather than a callable object: a call costs 0.1 µs less.)
    """

    def __init__(self, svc: Nfs3Service, access: AccessControl) -> None:
        self.svc = svc
        self.access = access
        self._fattr3 = LastFattr3()
        self._cred: tuple[tuple | None, authsys_parms] = (None, authsys_parms(0, b"", 0, 0, []))
        # Sessions routed: ``nfs3.router.Router.quick``, set by ``route_sessions``.
        self.sessions: SessionQuick | None = None
        # Session WRITEs: ``nfs3.fastwrite.FastWrite.serve``, set by ``programs.build``.
        self.writes: SessionWrite | None = None

    def _context(  # noqa: PLR0917 (what serve has read)
        self, xid: int, proc: int, fields: tuple, peer: str, inline: bool,
        alone: bool, security: Security, sendfile: bool,
    ) -> CallContext:  # fmt: skip
        """The call's context, its AUTH_SYS credential from the dispatcher's cache.

        The ``authsys_parms`` of the fields used last is used again (one
        client's calls carry the same credential): nothing changes one in
        place (squashing, ``nfsd.programs.access.squash``, puts a new one in
        the context), so sharing it is as good as a fresh one, 0.2 µs less.
        """
        last = self._cred  # one tuple: read and replaced whole, safe across threads
        if last[0] is fields:
            cred = last[1]
        else:
            cred = authsys_parms(fields[0], fields[1], fields[2], fields[3], list(fields[4]))
            self._cred = (fields, cred)
        # Positional (note, status: the defaults): 0.2 µs less than by keyword.
        return CallContext(
            xid, _NFS_PROGRAM, 3, proc, AUTH_SYS, cred, peer, "tcp", "", 0,
            inline, alone, security, sendfile,
        )  # fmt: skip

    def serve(  # noqa: PLR0917 (FastPath's signature)
        self,
        record: bytes,
        peer: str,
        inline: bool,
        security: Security,
        creds: CredCache,
        alone: bool,
        sendfile: bool = False,
    ) -> Reply | None:
        call = parse_call(record)
        if call is None:
            return None
        xid, proc, cred, fh, pos, a, b = call
        fields = creds.get(cred)
        if fields is None:
            return None  # not decoded yet: the general path decodes and keeps it
        if proc == _WRITE:
            if self.writes is None:
                return None
            ctx = self._context(xid, proc, fields, peer, inline, alone, security, sendfile)
            return self.writes(record, pos, fh, ctx)
        name = cast(bytes, a) if proc == _LOOKUP else b""
        session = len(fh) == _SESSION_SIZE and fh[0] == _SESSION_VERSION  # is_session_handle
        if session and (self.sessions is None or proc == _READDIRPLUS):
            return None  # a session's listing: the general path's
        ctx = self._context(xid, proc, fields, peer, inline, alone, security, sendfile)
        if session:
            return self._session(record, ctx, proc, fh, pos, name)
        if self.access.nfs_status(ctx):
            return None  # refused: the general path answers (and logs) it
        svc = self.svc
        path = svc.handles.cached(fh)
        if path is None:
            return None
        try:
            attrs = svc.namespace.getattr(path)
            if proc == _LOOKUP:
                return self._lookup(record[:4], ctx, path, attrs, name)
            if proc == _READDIRPLUS:
                cookie, dircount, maxcount = _PLUS_ARGS.unpack_from(record, pos)
                body = readdirplus_encoded(svc, ctx, path, attrs, cookie, dircount, maxcount)
                if body is None:
                    return None
                body[0] = record[:4] + _ACCEPTED + cast(bytes, body[0])
                return Reply(body)
            fattr3 = self._fattr3.get(attrs, svc.fsid)
            if proc == _GETATTR:
                return Reply([record[:4] + _ACCEPTED_OK + fattr3])
            if proc == _ACCESS:
                granted = access_granted(attrs, ctx, cast(int, a))
                return Reply([record[:4] + _ACCEPTED_OK_ATTRS + fattr3 + _U32.pack(granted)])
            if attrs.kind == _DIR or not may(attrs, ctx, MAY_READ, owner_override=True):
                return None
            head = record[:4] + _ACCEPTED_OK_ATTRS + fattr3
            return read_reply(svc, path, cast(int, a), min(b, RTMAX), ctx, head)
        except (NamespaceError, NfsError, XdrError):
            return None

    def _session(  # noqa: PLR0917
        self, record: bytes, ctx: CallContext, proc: int, fh: bytes, pos: int, name: bytes
    ) -> Reply | None:
        """A session's call, answered by the router's ``quick`` (its access check,
        the session procedure) with the RPC header put in front; None for the
        general path (a refusal, a failure)."""
        assert self.sessions is not None
        handle = nfs3.nfs_fh3(fh)
        args: object
        if proc == _GETATTR:
            args = nfs3.GETATTR3args(handle)
        elif proc == _READ:
            offset, count = _READ_ARGS.unpack_from(record, pos)
            args = nfs3.READ3args(handle, offset, count)
        elif proc == _ACCESS:
            args = nfs3.ACCESS3args(handle, _U32.unpack_from(record, pos)[0])
        else:
            args = nfs3.LOOKUP3args(nfs3.diropargs3(handle, name))
        reply = self.sessions(proc, ctx, args)
        if reply is not None:
            reply.parts[0] = record[:4] + _ACCEPTED + bytes(cast(Buffer, reply.parts[0]))
        return reply

    def _lookup(
        self, xid: bytes, ctx: CallContext, dirpath: PresentedPath, dattrs: Attrs, name: bytes
    ) -> Reply | None:
        """LOOKUP's answer when it finds the name; None for anything else
        (".", "..", a name no entry can have, a refusal, an error)."""
        if dattrs.kind != Kind.DIR or not may(dattrs, ctx, MAY_EXEC):
            return None
        if name in {b".", b".."}:
            return None
        svc = self.svc
        path = (*dirpath, decode_name(name))  # NfsError for a name no entry can have
        a = svc.namespace.getattr(path)
        fh = svc.handles.encode(path, a.fileid)
        return Reply([xid + _ACCEPTED + lookup3_ok(fh, a, dattrs, svc.fsid)])
