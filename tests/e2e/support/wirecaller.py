"""The session procedures of ``tests.proto.sessionclient`` sent to a real server over TCP.

What a hypervisor's NFS client does that the in-process caller cannot show:
a TCP connection from a port below 1024 (ESXi's, as root), calls pipelined
on it, and a *hard mount*: a call whose connection broke (the server was
killed) is sent again, with the same xid, on a new connection, until it is
answered.  Calls answered before the break are never sent again, so what
the server acknowledged before it died must still be there after it comes
back; a retransmitted change must get its first answer (the reply cache).

Only the transport is new here: the procedures' encoders and decoders are
``SessionCaller``'s (the project's ``xdr``), the point being the server's
behaviour across a real crash, not a second encoding.
"""

from __future__ import annotations

import random
import socket
import struct
import time
from collections.abc import Callable

from tests.proto.calls import call, parse
from tests.proto.sessionclient import SessionCaller

from .rpcwire import bind_reserved
from .server import recv_record


class WireCaller(SessionCaller):
    """``SessionCaller`` over one TCP connection to ``host:port``, hard-mounted."""

    def __init__(self, host: str, port: int, *, patience: float = 90.0) -> None:
        # No in-process dispatcher: SessionCaller's procedures end in send().
        self.host, self.port = host, port
        self.patience = patience  # how long a call may wait for a server to come back
        self.xid = random.randrange(1 << 20, 1 << 30)
        self.fixed_xid: int | None = None
        self.sock: socket.socket | None = None
        self.connections = 0
        self.resent = 0  # calls sent again on a new connection

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _connect(self, deadline: float) -> socket.socket:
        while True:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                bind_reserved(s, self.host)
                s.settimeout(max(0.1, deadline - time.monotonic()))
                s.connect((self.host, self.port))
                self.connections += 1
                return s
            except OSError:
                s.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def record(self, prog: int, vers: int, proc: int, args: bytes) -> tuple[int, bytes]:
        """A new call's (xid, record), not sent."""
        self.xid += 1
        return self.xid, call(prog, vers, proc, args, xid=self.xid)

    def send(self, prog: int, vers: int, proc: int, args: bytes) -> bytes | None:
        xid, rec = self.record(prog, vers, proc, args)
        return self.exchange([(xid, rec)])[xid]

    def exchange(
        self,
        calls: list[tuple[int, bytes]],
        *,
        after: int | None = None,
        then: Callable[[], None] | None = None,
    ) -> dict[int, bytes]:
        """Send every call at once (pipelined), collect their reply bodies by xid.

        ``then`` runs once ``after`` replies have arrived (the test's crash:
        the others are in flight); the connection it breaks is opened again
        and the unanswered calls sent again, same xids, until each is answered
        or the patience runs out."""
        deadline = time.monotonic() + self.patience
        pending = dict(calls)
        replies: dict[int, bytes] = {}
        sent = False
        while pending:
            try:
                if self.sock is None:
                    self.sock = self._connect(deadline)
                    if sent:
                        self.resent += len(pending)
                    sent = False
                if not sent:
                    self.sock.settimeout(max(0.1, deadline - time.monotonic()))
                    self.sock.sendall(
                        b"".join(
                            struct.pack(">I", 0x80000000 | len(r)) + r for r in pending.values()
                        )
                    )
                    sent = True
                r = parse([recv_record(self.sock)])
                if r.xid not in pending:
                    continue  # a late reply to a call answered before
                assert r.stat == 0, r
                replies[r.xid] = r.body
                del pending[r.xid]
                if then is not None and after is not None and len(replies) >= after:
                    then, hook = None, then
                    hook()
            except (OSError, EOFError):
                self.close()
                if time.monotonic() > deadline:
                    raise
        return replies
