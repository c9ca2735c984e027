"""A small, independent ONC-RPC client for the access-control tests.

Written with ``struct`` from RFC 5531 (RPC), RFC 1813 (NFSv3 and MOUNT v3)
and RFC 1833 (portmap): nothing here imports the project's ``xdr`` or
``nfsd``, so the tests check the server against a second encoder.

The point of this client is *where* a call comes from: ``Client`` binds its
socket to a chosen source address on loopback (any of 127/8 works on Linux)
and, as root, to a source port below 1024 when asked, over TCP or UDP.

=================  ======================================================
piece              what
=================  ======================================================
``call_record``    the bytes of one CALL (AUTH_SYS or AUTH_NONE)
``Reply``          a parsed reply: accepted / denied, accept_stat, body
``mnt``, ...       argument encoders of the procedures the tests send
``Client``         one socket from a chosen address and port; ``call``
=================  ======================================================
"""

from __future__ import annotations

import contextlib
import errno
import random
import socket
import struct
from dataclasses import dataclass

from .server import recv_record

PORTMAP_PROGRAM, MOUNT_PROGRAM, NFS_PROGRAM = 100000, 100005, 100003
AUTH_NONE, AUTH_SYS = 0, 1
MSG_ACCEPTED, MSG_DENIED = 0, 1
SUCCESS, PROG_UNAVAIL, PROG_MISMATCH, PROC_UNAVAIL = 0, 1, 2, 3

# MOUNT v3 procedures and statuses (RFC 1813, Appendix I)
MNT, DUMP, UMNT, EXPORT = 1, 2, 3, 5
MNT3_OK, MNT3ERR_ACCES = 0, 13
# NFSv3 procedures and statuses (RFC 1813 §3)
GETATTR, LOOKUP, ACCESS, READ, READDIR, READDIRPLUS, FSSTAT = 1, 3, 4, 6, 16, 17, 18
NFS3_OK, NFS3ERR_PERM, NFS3ERR_ACCES, NFS3ERR_STALE = 0, 1, 13, 70


# ---------------------------------------------------------------- encoding


def u32(v: int) -> bytes:
    return struct.pack(">I", v)


def u64(v: int) -> bytes:
    return struct.pack(">Q", v)


def opaque(data: bytes) -> bytes:
    """Variable-length opaque or string: length, bytes, zero padding to 4."""
    return u32(len(data)) + data + bytes(-len(data) % 4)


def auth_sys(uid: int = 0, gid: int = 0, machine: bytes = b"e2e-client") -> bytes:
    """An opaque_auth of flavour AUTH_SYS (RFC 5531 Appendix A)."""
    body = u32(0x5EED) + opaque(machine) + u32(uid) + u32(gid) + u32(1) + u32(gid)
    return u32(AUTH_SYS) + opaque(body)


AUTH_NONE_CRED = u32(AUTH_NONE) + u32(0)


def call_record(
    xid: int, prog: int, vers: int, proc: int, args: bytes = b"", *, cred: bytes | None = None
) -> bytes:
    """The body of one CALL (no record marker): header, credential, AUTH_NONE verifier, args."""
    header = struct.pack(">IIIIII", xid, 0, 2, prog, vers, proc)
    return header + (auth_sys() if cred is None else cred) + AUTH_NONE_CRED + args


# argument encoders: MOUNT v3
def mnt(path: bytes = b"/recover/images") -> bytes:
    return opaque(path)


# argument encoders: NFSv3 (a handle is nfs_fh3: opaque<64>)
def fh_args(fh: bytes) -> bytes:
    """GETATTR, FSSTAT (and any procedure whose arguments are one handle)."""
    return opaque(fh)


def lookup(dir_fh: bytes, name: bytes) -> bytes:
    return opaque(dir_fh) + opaque(name)


def access(fh: bytes, mask: int = 0x3F) -> bytes:
    return opaque(fh) + u32(mask)


def read(fh: bytes, offset: int = 0, count: int = 65536) -> bytes:
    return opaque(fh) + u64(offset) + u32(count)


def readdir(fh: bytes, count: int = 8192) -> bytes:
    return opaque(fh) + u64(0) + bytes(8) + u32(count)


def readdirplus(fh: bytes, dircount: int = 8192, maxcount: int = 32768) -> bytes:
    return opaque(fh) + u64(0) + bytes(8) + u32(dircount) + u32(maxcount)


# ---------------------------------------------------------------- decoding


class Decoder:
    """Reads XDR items from a reply body, failing loudly on a short reply."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def u32(self) -> int:
        (v,) = struct.unpack_from(">I", self.data, self.pos)
        self.pos += 4
        return v

    def u64(self) -> int:
        (v,) = struct.unpack_from(">Q", self.data, self.pos)
        self.pos += 8
        return v

    def opaque(self, limit: int = 1 << 20) -> bytes:
        n = self.u32()
        if n > limit or self.pos + n > len(self.data):
            raise ValueError(f"opaque of {n} bytes at {self.pos} in a {len(self.data)}-byte body")
        v = self.data[self.pos : self.pos + n]
        self.pos += n + (-n % 4)
        return v

    def rest(self) -> bytes:
        return self.data[self.pos :]


@dataclass
class Reply:
    """One RPC reply: ``accepted`` with ``accept_stat`` and ``body``, or denied."""

    xid: int
    accepted: bool
    accept_stat: int | None  # None when denied
    body: bytes  # what follows accept_stat (the procedure's result), or the rejection
    raw: bytes

    @classmethod
    def parse(cls, raw: bytes) -> Reply:
        d = Decoder(raw)
        xid, mtype, stat = d.u32(), d.u32(), d.u32()
        if mtype != 1:
            raise ValueError(f"not a REPLY: msg_type {mtype}")
        if stat != MSG_ACCEPTED:
            return cls(xid, False, None, d.rest(), raw)
        d.u32()  # verifier flavour
        d.opaque(400)
        return cls(xid, True, d.u32(), d.rest(), raw)

    @property
    def ok(self) -> bool:
        return self.accepted and self.accept_stat == SUCCESS

    def status(self) -> int:
        """The first word of the result: mountstat3 or nfsstat3."""
        if not self.ok:
            raise AssertionError(f"RPC not successful: accepted={self.accepted} {self.accept_stat}")
        return struct.unpack_from(">I", self.body)[0]


def mountres3(body: bytes) -> tuple[int, bytes | None, list[int]]:
    """(status, root handle, flavours) of a MNT result."""
    d = Decoder(body)
    status = d.u32()
    if status != MNT3_OK:
        return status, None, []
    fh = d.opaque(64)
    return status, fh, [d.u32() for _ in range(d.u32())]


def exports(body: bytes) -> list[tuple[str, list[str]]]:
    """An EXPORT result: [(directory, [group, ...]), ...]."""
    d, out = Decoder(body), []
    while d.u32():
        directory = d.opaque(1024).decode()
        groups = []
        while d.u32():
            groups.append(d.opaque(1024).decode())
        out.append((directory, groups))
    return out


def mountlist(body: bytes) -> list[tuple[str, str]]:
    """A DUMP result: [(hostname, directory), ...]."""
    d, out = Decoder(body), []
    while d.u32():
        out.append((d.opaque(1024).decode(), d.opaque(1024).decode()))
    return out


def lookup_ok(body: bytes) -> bytes:
    """The object handle of a successful LOOKUP result."""
    d = Decoder(body)
    status = d.u32()
    if status != NFS3_OK:
        raise AssertionError(f"LOOKUP failed: nfsstat3 {status}")
    return d.opaque(64)


def read_data(body: bytes) -> bytes:
    """The data of a successful READ result."""
    d = Decoder(body)
    status = d.u32()
    if status != NFS3_OK:
        raise AssertionError(f"READ failed: nfsstat3 {status}")
    if d.u32():  # post_op_attr follows: fattr3 is 84 bytes
        d.pos += 84
    d.u32()  # count
    d.u32()  # eof
    return d.opaque()


# ---------------------------------------------------------------- the client


def bind_reserved(sock: socket.socket, host: str, tries: int = 200) -> int:
    """Bind ``sock`` to a free port below 1024 on ``host`` (root only); return it."""
    ports = random.sample(range(600, 1024), min(tries, 424))
    for port in ports:
        try:
            sock.bind((host, port))
            return port
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise
    raise OSError(errno.EADDRINUSE, f"no free port below 1024 on {host}")


class Client:
    """One TCP connection (or UDP socket) to ``server`` from ``source``.

    ``reserved=True`` binds a source port below 1024 (needs root), else the
    kernel picks an ephemeral one (>= 1024 under every Linux default).
    """

    def __init__(
        self,
        server: tuple[str, int],
        source: str = "127.0.0.1",
        *,
        reserved: bool = False,
        udp: bool = False,
        timeout: float = 5.0,
    ) -> None:
        self.server, self.udp = server, udp
        kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
        self.sock = socket.socket(socket.AF_INET, kind)
        try:
            self.sock.settimeout(timeout)
            if reserved:
                bind_reserved(self.sock, source)
            else:
                self.sock.bind((source, 0))
            self.sock.connect(server)
        except BaseException:
            self.sock.close()
            raise
        self.port = self.sock.getsockname()[1]
        self.xid = random.getrandbits(31)

    def send(self, prog: int, vers: int, proc: int, args: bytes, cred: bytes | None) -> int:
        self.xid += 1
        body = call_record(self.xid, prog, vers, proc, args, cred=cred)
        self.sock.sendall(body if self.udp else u32(0x80000000 | len(body)) + body)
        return self.xid

    def receive(self) -> bytes:
        return self.sock.recv(65536) if self.udp else recv_record(self.sock)

    def call(
        self, prog: int, vers: int, proc: int, args: bytes = b"", cred: bytes | None = None
    ) -> Reply:
        """Send one call and wait for its reply (TimeoutError when none comes)."""
        xid = self.send(prog, vers, proc, args, cred)
        reply = Reply.parse(self.receive())
        if reply.xid != xid:
            raise AssertionError(f"reply for xid {reply.xid:#x}, sent {xid:#x}")
        return reply

    def mount(self, path: bytes = b"/recover/images") -> tuple[int, bytes | None, list[int]]:
        return mountres3(self.call(MOUNT_PROGRAM, 3, MNT, mnt(path)).body)

    def nfs(self, proc: int, args: bytes, cred: bytes | None = None) -> Reply:
        return self.call(NFS_PROGRAM, 3, proc, args, cred)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
