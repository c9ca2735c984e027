"""ONC-RPC version 2 messages (RFC 5531 §9) and AUTH_SYS (RFC 5531 appendix A).

Only what a server needs: calls are unpacked, replies are packed.  The
procedure arguments and results that follow a call or reply header are
left to the program's own module.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from xdr.base import Packer, Unpacker, XdrError

RPC_VERSION = 2

# enum msg_type
CALL = 0
REPLY = 1

# enum reply_stat
MSG_ACCEPTED = 0
MSG_DENIED = 1

# enum accept_stat
SUCCESS = 0
PROG_UNAVAIL = 1
PROG_MISMATCH = 2
PROC_UNAVAIL = 3
GARBAGE_ARGS = 4
SYSTEM_ERR = 5

# enum reject_stat
RPC_MISMATCH = 0
AUTH_ERROR = 1

# enum auth_flavor
AUTH_NONE = 0
AUTH_SYS = 1
AUTH_SHORT = 2
AUTH_DH = 3
RPCSEC_GSS = 6

# enum auth_stat
AUTH_OK = 0
AUTH_BADCRED = 1
AUTH_REJECTEDCRED = 2
AUTH_BADVERF = 3
AUTH_REJECTEDVERF = 4
AUTH_TOOWEAK = 5
AUTH_INVALIDRESP = 6
AUTH_FAILED = 7

MAX_AUTH_BYTES = 400
AUTHSYS_MAX_MACHINENAME = 255
AUTHSYS_MAX_GIDS = 16


@dataclass(slots=True)
class opaque_auth:
    """struct opaque_auth { auth_flavor flavor; opaque body<400>; };"""

    flavor: int
    body: bytes


NULL_AUTH = opaque_auth(AUTH_NONE, b"")


@dataclass(slots=True)
class authsys_parms:
    """struct authsys_parms { unsigned int stamp; string machinename<255>;
    unsigned int uid; unsigned int gid; unsigned int gids<16>; };"""

    stamp: int
    machinename: bytes
    uid: int
    gid: int
    gids: list[int]


@dataclass(slots=True)
class call_body:
    """struct call_body { unsigned int rpcvers; unsigned int prog;
    unsigned int vers; unsigned int proc; opaque_auth cred;
    opaque_auth verf; /* procedure-specific parameters start here */ };"""

    rpcvers: int
    prog: int
    vers: int
    proc: int
    cred: opaque_auth
    verf: opaque_auth


class BadAuthLength(XdrError):
    """A call's credential or verifier claims more than 400 bytes (RFC 5531 §8.2).

    The call is answered AUTH_ERROR with ``stat`` (AUTH_BADCRED or
    AUTH_BADVERF), not dropped: its xid is known, and a TCP client waits for
    an answer.
    """

    def __init__(self, xid: int, stat: int, message: str) -> None:
        super().__init__(message)
        self.xid = xid
        self.stat = stat


_HEAD = struct.Struct(">IIIIIIII")  # xid, mtype, rpcvers, prog, vers, proc, flavor, length
_WORD = struct.Struct(">I")
_ACCEPTED = struct.Struct(">IIIIII")


def decode_call(record: bytes | bytearray) -> tuple[int, int, call_body, int]:
    """(xid, msg_type, call_body, offset of the arguments) of a call message.

    The same as ``RpcUnpacker`` reading ``xid``, ``msg_type`` and a
    ``call_body``, with struct for speed: every call passes here.  Raises
    XdrError on a short or malformed header (:class:`BadAuthLength` for an
    oversized credential or verifier); for a message that is not a CALL,
    returns its msg_type with an empty call_body.
    """
    if len(record) < 8:
        raise XdrError("message too short")
    xid, mtype = struct.unpack_from(">II", record)
    if mtype != CALL:
        return xid, mtype, call_body(0, 0, 0, 0, NULL_AUTH, NULL_AUTH), 8
    if len(record) < _HEAD.size:
        raise XdrError("call header too short")
    xid, mtype, rpcvers, prog, vers, proc, flavor, n = _HEAD.unpack_from(record)
    if n > MAX_AUTH_BYTES:
        raise BadAuthLength(xid, AUTH_BADCRED, f"credential of {n} bytes")
    pos = _HEAD.size
    end = pos + ((n + 3) & ~3)
    if end + 8 > len(record):
        raise XdrError("call header too short")
    cred = opaque_auth(flavor, bytes(record[pos : pos + n]))  # a key of the credential cache
    vflavor, vn = struct.unpack_from(">II", record, end)
    if vn > MAX_AUTH_BYTES:
        raise BadAuthLength(xid, AUTH_BADVERF, f"verifier of {vn} bytes")
    pos = end + 8
    end = pos + ((vn + 3) & ~3)
    if end > len(record):
        raise XdrError("call header too short")
    verf = opaque_auth(vflavor, bytes(record[pos : pos + vn]))
    return xid, mtype, call_body(rpcvers, prog, vers, proc, cred, verf), end


def accepted_header(xid: int, stat: int) -> bytes:
    """xid, REPLY, MSG_ACCEPTED, a null verifier and ``stat``, packed."""
    return _ACCEPTED.pack(xid, REPLY, MSG_ACCEPTED, AUTH_NONE, 0, stat)


class RpcPacker(Packer):
    """Packs RPC reply headers (RFC 5531 §9)."""

    def pack_opaque_auth(self, a: opaque_auth) -> None:
        self.pack_enum(a.flavor)
        self.pack_opaque_max(a.body, MAX_AUTH_BYTES)

    def pack_authsys_parms(self, a: authsys_parms) -> None:
        self.pack_uint(a.stamp)
        self.pack_opaque_max(a.machinename, AUTHSYS_MAX_MACHINENAME)
        self.pack_uint(a.uid)
        self.pack_uint(a.gid)
        if len(a.gids) > AUTHSYS_MAX_GIDS:
            raise XdrError("too many gids")
        self.pack_array(a.gids, self.pack_uint)

    def pack_call_header(self, xid: int, c: call_body) -> None:
        """xid, CALL, call_body: the start of a call (used by the client)."""
        self.pack_uint(xid)
        self.pack_enum(CALL)
        self.pack_uint(c.rpcvers)
        self.pack_uint(c.prog)
        self.pack_uint(c.vers)
        self.pack_uint(c.proc)
        self.pack_opaque_auth(c.cred)
        self.pack_opaque_auth(c.verf)

    def pack_accepted_header(self, xid: int, verf: opaque_auth, stat: int) -> None:
        """xid, REPLY, MSG_ACCEPTED, verf, accept_stat: what every accepted reply starts with."""
        self.pack_uint(xid)
        self.pack_enum(REPLY)
        self.pack_enum(MSG_ACCEPTED)
        self.pack_opaque_auth(verf)
        self.pack_enum(stat)

    def pack_prog_mismatch(self, xid: int, low: int, high: int) -> None:
        """accepted reply, PROG_MISMATCH, with the versions supported."""
        self.pack_accepted_header(xid, NULL_AUTH, PROG_MISMATCH)
        self.pack_uint(low)
        self.pack_uint(high)

    def pack_rpc_mismatch(self, xid: int) -> None:
        """rejected reply, RPC_MISMATCH: only version 2 is spoken."""
        self.pack_uint(xid)
        self.pack_enum(REPLY)
        self.pack_enum(MSG_DENIED)
        self.pack_enum(RPC_MISMATCH)
        self.pack_uint(RPC_VERSION)
        self.pack_uint(RPC_VERSION)

    def pack_auth_error(self, xid: int, stat: int) -> None:
        """rejected reply, AUTH_ERROR with an auth_stat."""
        self.pack_uint(xid)
        self.pack_enum(REPLY)
        self.pack_enum(MSG_DENIED)
        self.pack_enum(AUTH_ERROR)
        self.pack_enum(stat)


class RpcUnpacker(Unpacker):
    """Unpacks RPC calls (RFC 5531 §9)."""

    def unpack_opaque_auth(self) -> opaque_auth:
        flavor = self.unpack_enum()
        return opaque_auth(flavor, self.unpack_opaque_max(MAX_AUTH_BYTES))

    def unpack_authsys_parms(self) -> authsys_parms:
        return authsys_parms(
            stamp=self.unpack_uint(),
            machinename=self.unpack_opaque_max(AUTHSYS_MAX_MACHINENAME),
            uid=self.unpack_uint(),
            gid=self.unpack_uint(),
            gids=self.unpack_array_max(AUTHSYS_MAX_GIDS, self.unpack_uint),
        )

    def unpack_call_body(self) -> call_body:
        return call_body(
            rpcvers=self.unpack_uint(),
            prog=self.unpack_uint(),
            vers=self.unpack_uint(),
            proc=self.unpack_uint(),
            cred=self.unpack_opaque_auth(),
            verf=self.unpack_opaque_auth(),
        )

    def unpack_reply_header(self) -> tuple[int, int, int]:
        """(xid, reply_stat, accept_stat or reject_stat): used by the client.

        For accepted replies the verifier is skipped; for PROG_MISMATCH and
        rejected replies the caller reads what follows.
        """
        xid = self.unpack_uint()
        if self.unpack_enum() != REPLY:
            raise XdrError("not a reply")
        stat = self.unpack_enum()
        if stat == MSG_ACCEPTED:
            self.unpack_opaque_auth()
        return xid, stat, self.unpack_enum()
