"""Building RPC calls and reading replies as bytes, for sans-IO tests."""

from __future__ import annotations

from dataclasses import dataclass

from xdr import nfs3
from xdr.rpc import (
    AUTH_NONE,
    AUTH_SYS,
    MSG_ACCEPTED,
    RpcPacker,
    RpcUnpacker,
    authsys_parms,
    call_body,
    opaque_auth,
)


def auth_sys(uid: int = 0, gid: int = 0, gids: list[int] | None = None) -> opaque_auth:
    p = RpcPacker()
    p.pack_authsys_parms(authsys_parms(0, b"test", uid, gid, gids or []))
    return opaque_auth(AUTH_SYS, p.get_buffer())


def unchanged_sattr() -> nfs3.sattr3:
    """A sattr3 that sets nothing: the attributes of a CREATE, MKDIR, SETATTR..."""
    return nfs3.sattr3(
        nfs3.set_mode3(False),
        nfs3.set_uid3(False),
        nfs3.set_gid3(False),
        nfs3.set_size3(False),
        nfs3.set_atime(nfs3.DONT_CHANGE),
        nfs3.set_mtime(nfs3.DONT_CHANGE),
    )


def call(
    prog: int,
    vers: int,
    proc: int,
    args: bytes = b"",
    *,
    xid: int = 0x1234,
    cred: opaque_auth | None = None,
    verf: opaque_auth | None = None,
    rpcvers: int = 2,
) -> bytes:
    p = RpcPacker()
    p.pack_call_header(
        xid,
        call_body(
            rpcvers, prog, vers, proc, cred or auth_sys(), verf or opaque_auth(AUTH_NONE, b"")
        ),
    )
    return p.get_buffer() + args


@dataclass
class ParsedReply:
    xid: int
    reply_stat: int
    stat: int  # accept_stat or reject_stat
    body: bytes  # what follows the stat


def parse(reply_parts: list) -> ParsedReply:
    data = b"".join(bytes(p) for p in reply_parts)
    u = RpcUnpacker(data)
    xid, reply_stat, stat = u.unpack_reply_header()
    return ParsedReply(xid, reply_stat, stat, data[u.get_position() :])


def accepted(r: ParsedReply) -> bool:
    return r.reply_stat == MSG_ACCEPTED
