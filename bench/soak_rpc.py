"""The few ONC-RPC calls the soak harness makes, written by hand.

The harness must not trust the code it measures, so it builds its calls
with ``struct`` (RFC 5531 messages, record marking of §11; RFC 1813 for NFS
and MOUNT) instead of the project's ``xdr`` package.  Calls carry AUTH_SYS
(uid and gid 65534), the flavour every export admits by default.

``Client`` is a blocking TCP client with one call in flight: enough for the
well-behaved client and for looking up the handles the loads use.  The
fuzzer and the connection loads only need ``call()`` and ``record()``.
"""

from __future__ import annotations

import socket
import struct
import time

NFS_PROGRAM, NFS_V3 = 100003, 3
MOUNT_PROGRAM, MOUNT_V3 = 100005, 3
PORTMAP_PROGRAM, PORTMAP_V2 = 100000, 2
AUTH_NONE, AUTH_SYS = 0, 1
LAST_FRAGMENT = 0x80000000

# NFSv3 procedures (RFC 1813 §3.3) and MOUNT v3 (§5.2) the harness calls.
NULL, GETATTR, LOOKUP, ACCESS, READLINK, READ = 0, 1, 3, 4, 5, 6
READDIR, READDIRPLUS, FSSTAT, FSINFO, PATHCONF = 16, 17, 18, 19, 20
MNT, DUMP, UMNT, EXPORT = 1, 2, 3, 5
FATTR3_SIZE = 84


class RpcError(Exception):
    """A reply that is not MSG_ACCEPTED/SUCCESS, or a status other than OK."""


def u32(*values: int) -> bytes:
    return struct.pack(f">{len(values)}I", *values)


def u64(value: int) -> bytes:
    return struct.pack(">Q", value)


def opaque(data: bytes) -> bytes:
    """Variable-length opaque or string: length, bytes, zero padding to 4."""
    return u32(len(data)) + data + bytes(-len(data) % 4)


def auth_sys(stamp: int = 0x50AC, machine: bytes = b"soak", uid: int = 65534) -> bytes:
    """opaque_auth of flavour AUTH_SYS (RFC 5531 appendix A)."""
    body = u32(stamp) + opaque(machine) + u32(uid, uid, 0)
    return u32(AUTH_SYS) + opaque(body)


CRED = auth_sys()
VERF = u32(AUTH_NONE, 0)


def call(xid: int, program: int, version: int, proc: int, args: bytes = b"") -> bytes:
    """An RPC CALL message (no record marker)."""
    return u32(xid, 0, 2, program, version, proc) + CRED + VERF + args


def record(body: bytes) -> bytes:
    """One record of one last fragment."""
    return u32(LAST_FRAGMENT | len(body)) + body


def read_args(fh: bytes, offset: int, count: int) -> bytes:
    return opaque(fh) + u64(offset) + u32(count)


def lookup_args(dir_fh: bytes, name: str) -> bytes:
    return opaque(dir_fh) + opaque(name.encode())


def accepted(reply: bytes, xid: int) -> bytes:
    """The results of a MSG_ACCEPTED/SUCCESS reply to ``xid``; RpcError otherwise."""
    if len(reply) < 24:
        raise RpcError(f"short reply ({len(reply)} bytes)")
    rxid, mtype, stat = struct.unpack_from(">III", reply)
    if rxid != xid or mtype != 1:
        raise RpcError(f"reply xid {rxid:#x} type {mtype}, expected {xid:#x}")
    if stat != 0:
        raise RpcError(f"MSG_DENIED ({struct.unpack_from('>I', reply, 12)[0]})")
    verf_len = struct.unpack_from(">I", reply, 16)[0]
    at = 20 + verf_len + (-verf_len % 4)
    (accept,) = struct.unpack_from(">I", reply, at)
    if accept != 0:
        raise RpcError(f"accept_stat {accept}")
    return reply[at + 4 :]


def skip_post_op_attr(body: bytes, at: int) -> int:
    (follows,) = struct.unpack_from(">I", body, at)
    return at + 4 + (FATTR3_SIZE if follows else 0)


def read_result(body: bytes) -> tuple[bytes, bool]:
    """READ3res: (data, eof); RpcError for a status other than NFS3_OK."""
    (status,) = struct.unpack_from(">I", body)
    if status != 0:
        raise RpcError(f"READ status {status}")
    at = skip_post_op_attr(body, 4)
    _count, eof, length = struct.unpack_from(">III", body, at)
    data = body[at + 12 : at + 12 + length]
    if len(data) != length:
        raise RpcError("READ reply shorter than its data")
    return data, bool(eof)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError("connection closed by the server")
        buf += chunk
    return bytes(buf)


def recv_record(sock: socket.socket, limit: int = 4 << 20) -> bytes:
    out = bytearray()
    while True:
        (marker,) = struct.unpack(">I", recv_exact(sock, 4))
        out += recv_exact(sock, marker & 0x7FFFFFFF)
        if len(out) > limit:
            raise RpcError("reply record over the limit")
        if marker & LAST_FRAGMENT:
            return bytes(out)


class Client:
    """Blocking TCP RPC client, one call at a time, over one connection."""

    def __init__(self, host: str, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.xid = int(time.monotonic_ns()) & 0x3FFFFFFF

    def close(self) -> None:
        self.sock.close()

    def rpc(self, program: int, version: int, proc: int, args: bytes = b"") -> bytes:
        self.xid = (self.xid + 1) & 0xFFFFFFFF
        self.sock.sendall(record(call(self.xid, program, version, proc, args)))
        while True:
            reply = recv_record(self.sock)
            if reply[:4] == u32(self.xid):
                return accepted(reply, self.xid)

    def nfs(self, proc: int, args: bytes = b"") -> bytes:
        return self.rpc(NFS_PROGRAM, NFS_V3, proc, args)

    def mount(self, path: str) -> bytes:
        """MNT: the root handle of ``path``."""
        body = self.rpc(MOUNT_PROGRAM, MOUNT_V3, MNT, opaque(path.encode()))
        (status,) = struct.unpack_from(">I", body)
        if status != 0:
            raise RpcError(f"MNT {path}: status {status}")
        (n,) = struct.unpack_from(">I", body, 4)
        return body[8 : 8 + n]

    def lookup(self, dir_fh: bytes, name: str) -> bytes:
        body = self.nfs(LOOKUP, lookup_args(dir_fh, name))
        (status,) = struct.unpack_from(">I", body)
        if status != 0:
            raise RpcError(f"LOOKUP {name}: status {status}")
        (n,) = struct.unpack_from(">I", body, 4)
        return body[8 : 8 + n]

    def read(self, fh: bytes, offset: int, count: int) -> tuple[bytes, bool]:
        return read_result(self.nfs(READ, read_args(fh, offset, count)))


def resolve(host: str, nfs_port: int, mount_port: int, paths: list[str]) -> dict[str, bytes]:
    """Handles of the export's root ("") and of each slash-separated path below it."""
    m = Client(host, mount_port)
    try:
        root = m.mount("/recover/images")
    finally:
        m.close()
    c = Client(host, nfs_port)
    out = {"": root}
    try:
        for path in paths:
            fh = root
            for name in path.strip("/").split("/"):
                fh = c.lookup(fh, name)
            out[path] = fh
    finally:
        c.close()
    return out
