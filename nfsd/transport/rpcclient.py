"""A minimal synchronous ONC-RPC client (RFC 5531): one call at a time.

Used to register with the host's portmapper, to check that a started server
answers, and by tests to send calls, well formed or crafted byte by byte.

=============  ============================================================
transport      framing
=============  ============================================================
``tcp``        record marking (RFC 5531 §11), one fragment per call
``unix``       the same over a stream socket path (rpcbind's local socket)
``udp``        one datagram per call, sent again every ``retransmit``
               seconds with the same xid until a reply or the timeout
=============  ============================================================

Replies whose xid is not the call's are skipped (late answers to an
earlier, timed-out call).  The client reports what the server said at the
RPC level and leaves the result's decoding to the caller: a
:class:`CallResult` holds the reply and accept (or reject) status and the
bytes that follow them.
"""

from __future__ import annotations

import errno
import random
import socket
import struct
import time
from typing import NamedTuple

from nfsd.transport.record import LAST_FRAGMENT, RecordReader
from xdr.base import XdrError
from xdr.rpc import (
    AUTH_SYS,
    MSG_ACCEPTED,
    NULL_AUTH,
    RPC_VERSION,
    SUCCESS,
    RpcPacker,
    RpcUnpacker,
    authsys_parms,
    call_body,
    opaque_auth,
)

UDP_MAX = 65535
MAX_REPLY = 64 * 1024 * 1024


class RpcError(Exception):
    """The call could not be made, or the reply could not be read."""


class RpcTimeout(RpcError):
    """No reply came in time."""


class CallResult(NamedTuple):
    """A reply: MSG_ACCEPTED or MSG_DENIED, its accept_stat or reject_stat, what follows."""

    reply_stat: int
    stat: int
    body: bytes

    @property
    def ok(self) -> bool:
        return self.reply_stat == MSG_ACCEPTED and self.stat == SUCCESS


def auth_sys(
    uid: int = 0, gid: int = 0, gids: tuple[int, ...] = (), machinename: bytes = b"recovery-fs"
) -> opaque_auth:
    """An AUTH_SYS credential (RFC 5531 appendix A)."""
    p = RpcPacker()
    p.pack_authsys_parms(
        authsys_parms(int(time.time()) & 0xFFFFFFFF, machinename, uid, gid, list(gids))
    )
    return opaque_auth(AUTH_SYS, p.get_buffer())


def encode_call(
    xid: int, prog: int, vers: int, proc: int, args: bytes = b"", *, cred: opaque_auth = NULL_AUTH
) -> bytes:
    """The bytes of a call message (without record marking)."""
    p = RpcPacker()
    p.pack_call_header(xid, call_body(RPC_VERSION, prog, vers, proc, cred, NULL_AUTH))
    return p.get_buffer() + args


def decode_reply(record: bytes) -> tuple[int, CallResult]:
    """(xid, result) of a reply message; RpcError if it is not one."""
    u = RpcUnpacker(record)
    try:
        xid, reply_stat, stat = u.unpack_reply_header()
    except XdrError as e:
        raise RpcError(f"undecodable reply: {e}") from e
    return xid, CallResult(reply_stat, stat, record[u.get_position() :])


RESERVED_LOW, RESERVED_HIGH = 600, 1023  # bindresvport's range


class RpcClient:
    """Calls to one server over one transport.  Use as a context manager.

    ``host`` is an address or name (a socket path for ``unix``).
    """

    def __init__(
        self,
        host: str,
        port: int = 0,
        *,
        transport: str = "tcp",
        timeout: float = 5.0,
        cred: opaque_auth = NULL_AUTH,
        retransmit: float = 1.0,
        reserved: bool = False,
    ) -> None:
        if transport not in ("tcp", "udp", "unix"):
            raise ValueError(f"unknown transport {transport!r}")
        self.host = host
        self.port = port
        self.transport = transport
        self.timeout = timeout
        self.cred = cred
        self.retransmit = retransmit
        self.reserved = reserved  # TCP from a port under 1024 when allowed (see _reserved)
        self._sock: socket.socket | None = None
        self._reader = RecordReader(MAX_REPLY)
        self._xid = random.getrandbits(32)

    def __enter__(self) -> RpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def next_xid(self) -> int:
        self._xid = (self._xid + 1) & 0xFFFFFFFF
        return self._xid

    def call(self, prog: int, vers: int, proc: int, args: bytes = b"") -> CallResult:
        """Make one call; the server's RPC-level answer, whatever it is."""
        xid = self.next_xid()
        _, result = decode_reply(
            self.exchange(encode_call(xid, prog, vers, proc, args, cred=self.cred), xid)
        )
        return result

    def exchange(self, message: bytes, xid: int | None = None) -> bytes:
        """Send ``message`` (any bytes); return the first reply with ``xid``.

        ``xid`` defaults to the message's first four bytes.  Raises
        RpcTimeout when no such reply comes within the timeout.
        """
        if xid is None:
            xid = struct.unpack_from(">I", message)[0] if len(message) >= 4 else None
        deadline = time.monotonic() + self.timeout
        try:
            if self.transport == "udp":
                return self._exchange_udp(message, xid, deadline)
            return self._exchange_stream(message, xid, deadline)
        except TimeoutError:
            self.close()
            raise RpcTimeout(f"no reply from {self._where()} within {self.timeout:g} s") from None
        except OSError as e:
            self.close()
            raise RpcError(f"{self._where()}: {e.strerror or e}") from e

    def _where(self) -> str:
        return (
            self.host if self.transport == "unix" else f"{self.host}:{self.port}/{self.transport}"
        )

    def _connect(self, deadline: float) -> socket.socket:
        if self._sock is None:
            remaining = max(0.001, deadline - time.monotonic())
            if self.transport == "unix":
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(remaining)
                try:
                    s.connect(self.host)
                except OSError:
                    s.close()
                    raise
            elif self.transport == "tcp":
                held = self._reserved(remaining) if self.reserved else None
                if held is None:
                    held = socket.create_connection((self.host, self.port), timeout=remaining)
                s = held
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            else:
                family, kind, proto, _, addr = socket.getaddrinfo(
                    self.host, self.port, type=socket.SOCK_DGRAM
                )[0]
                s = socket.socket(family, kind, proto)
                s.connect(addr)
            self._sock = s
            self._reader = RecordReader(MAX_REPLY)
        return self._sock

    def _reserved(self, timeout: float) -> socket.socket | None:
        """A TCP connection from a reserved port (under 1024: a privileged
        process's, which is what a portmapper asks of SET and UNSET, as
        ``bindresvport`` gives libtirpc's ``pmap_set``); None when this process
        may not bind one (not root) or none is free: the caller connects from
        any port."""
        for port in range(RESERVED_HIGH, RESERVED_LOW - 1, -1):
            try:
                return socket.create_connection(
                    (self.host, self.port), timeout=timeout, source_address=("", port)
                )
            except PermissionError:
                return None
            except OSError as e:
                if e.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
                    raise
        return None

    def _exchange_stream(self, message: bytes, xid: int | None, deadline: float) -> bytes:
        sock = self._connect(deadline)
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        sock.sendall(struct.pack(">I", LAST_FRAGMENT | len(message)) + message)
        while True:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            data = sock.recv(65536)
            if not data:
                self.close()
                raise RpcError(f"{self._where()} closed the connection without replying")
            for record in self._reader.feed(data):
                if xid is None or record[:4] == struct.pack(">I", xid):
                    return bytes(record)  # a large record comes as a bytearray

    def _exchange_udp(self, message: bytes, xid: int | None, deadline: float) -> bytes:
        sock = self._connect(deadline)
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise TimeoutError
            sock.send(message)
            resend = min(deadline, now + self.retransmit)
            while (left := resend - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    record = sock.recv(UDP_MAX)
                except TimeoutError:
                    break
                if xid is None or record[:4] == struct.pack(">I", xid):
                    return record
