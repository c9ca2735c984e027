"""Load 1: mutation-fuzzed RPC calls over many TCP connections and UDP.

Inputs are real calls (NFSv3, MOUNT v3, portmap, wrong programs and
versions, with real handles of the export) changed by one to three
mutations drawn at random:

==============  ==============================================================
bit flips       1 to 8 bits anywhere
truncation      cut at a random length (0 included)
extreme length  a 4-aligned word set to 0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF…
splice          the head of one call and the tail of another
chunk           a random chunk deleted, duplicated, or random bytes inserted
==============  ==============================================================

Over TCP most inputs go out as one correct record each, so the server's
decoders see them; a few (``POISON``) get a mutated record marking
(0x7FFFFFFF, a length that lies, no last fragment, thousands of
zero-length and one-byte fragments), after which that connection is
abandoned with a RST: its byte stream no longer has record boundaries.
Over UDP each input is one datagram on a connected socket.  Replies are
read and counted (by their record marking), so that a server that stops
reading a connection whose replies pile up is not what is measured here.
At most ``WINDOW`` inputs of a connection go unanswered: a server that
closes a connection discards what it had not read yet, and the window keeps
that small (a full window silent for ``SILENCE`` is abandoned).

An input counts as sent once all its bytes were accepted by the kernel;
``tcp_replies`` and ``udp_replies`` count the answers, ``closed_by_server``
the connections the server closed.
The run stops by itself after ``inputs`` inputs or ``seconds``.
"""

from __future__ import annotations

import errno
import random
import selectors
import socket
import struct
import time

from soak_conns import reset
from soak_rpc import (
    ACCESS,
    DUMP,
    EXPORT,
    FSINFO,
    FSSTAT,
    GETATTR,
    LOOKUP,
    MNT,
    MOUNT_PROGRAM,
    MOUNT_V3,
    NFS_PROGRAM,
    NFS_V3,
    NULL,
    PATHCONF,
    PORTMAP_PROGRAM,
    PORTMAP_V2,
    READ,
    READDIR,
    READDIRPLUS,
    READLINK,
    UMNT,
    call,
    lookup_args,
    opaque,
    read_args,
    u32,
    u64,
)

POISON = 0.02  # share of TCP inputs whose record marking is mutated
BATCH = 2  # inputs written to a connection at a time
WINDOW = 2  # inputs written and not yet answered, per connection
SILENCE = 0.3  # seconds a full window waits for a reply before its connection is abandoned
EXTREMES = (0, 1, 2, 0x3FF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF, 0x10000, 0x100001)


def seeds(handles: dict[str, bytes]) -> list[tuple[str, bytes]]:
    """(target, call) pairs: target is "nfs" or "mount" (the port to send to)."""
    root, plain, merged = handles[""], handles["plain/big.img"], handles["vm/disk-flat.vmdk"]
    nfs = [
        (NULL, b""),
        (GETATTR, opaque(root)),
        (GETATTR, opaque(merged)),
        (LOOKUP, lookup_args(root, "plain")),
        (LOOKUP, lookup_args(root, "..")),
        (ACCESS, opaque(plain) + u32(0x3F)),
        (READLINK, opaque(plain)),
        (READ, read_args(plain, 0, 4096)),
        (READ, read_args(merged, 1 << 20, 131072)),
        (READ, read_args(plain, (1 << 63) - 1, 65536)),
        (READDIR, opaque(root) + u64(0) + bytes(8) + u32(4096)),
        (READDIRPLUS, opaque(root) + u64(0) + bytes(8) + u32(1024, 8192)),
        (FSSTAT, opaque(root)),
        (FSINFO, opaque(root)),
        (PATHCONF, opaque(root)),
        (7, opaque(plain) + u64(0) + u32(4, 2) + opaque(b"junk")),  # WRITE
        (8, lookup_args(root, "new") + u32(0)),  # CREATE, UNCHECKED, no attributes
    ]
    out = [("nfs", call(0, NFS_PROGRAM, NFS_V3, p, a)) for p, a in nfs]
    out += [
        ("mount", call(0, MOUNT_PROGRAM, MOUNT_V3, NULL)),
        ("mount", call(0, MOUNT_PROGRAM, MOUNT_V3, MNT, opaque(b"/recover/images"))),
        ("mount", call(0, MOUNT_PROGRAM, MOUNT_V3, DUMP)),
        ("mount", call(0, MOUNT_PROGRAM, MOUNT_V3, EXPORT)),
        ("mount", call(0, MOUNT_PROGRAM, MOUNT_V3, UMNT, opaque(b"/recover/images"))),
        ("nfs", call(0, PORTMAP_PROGRAM, PORTMAP_V2, 3, u32(NFS_PROGRAM, NFS_V3, 6, 0))),
        ("nfs", call(0, NFS_PROGRAM, 4, NULL)),
        ("nfs", call(0, 395_000, 1, NULL)),
    ]
    return out


def mutate(rnd: random.Random, body: bytes, pool: list[tuple[str, bytes]]) -> bytes:
    """One to three mutations of ``body``; the xid is always fresh."""
    b = bytearray(body)
    for _ in range(rnd.choice((1, 1, 2, 3))):
        kind = rnd.randrange(6)
        if kind == 0 and b:
            for _ in range(rnd.randint(1, 8)):
                b[rnd.randrange(len(b))] ^= 1 << rnd.randrange(8)
        elif kind == 1:
            del b[rnd.randrange(len(b) + 1) :]
        elif kind == 2 and len(b) >= 4:
            at = rnd.randrange(len(b) // 4) * 4
            b[at : at + 4] = struct.pack(">I", rnd.choice(EXTREMES))
        elif kind == 3:
            other = rnd.choice(pool)[1]
            b = b[: rnd.randrange(len(b) + 1)] + other[rnd.randrange(len(other) + 1) :]
        elif kind == 4 and b:
            at = rnd.randrange(len(b))
            b[at : at + rnd.randint(1, 16)] = b""
        else:
            at = rnd.randrange(len(b) + 1)
            insert = b[at : at + rnd.randint(1, 64)] if rnd.random() < 0.5 else None
            b[at:at] = insert or rnd.randbytes(rnd.randint(1, 64))
    if len(b) >= 4:
        b[0:4] = rnd.randbytes(4)
    return bytes(b)


def frame(rnd: random.Random, body: bytes) -> tuple[bytes, bool]:
    """The record marking of one input: (bytes, poisoned); poisoned ends the stream."""
    if rnd.random() >= POISON:
        return struct.pack(">I", 0x80000000 | len(body)) + body, False
    kind = rnd.randrange(6)
    if kind == 0:
        return struct.pack(">I", 0x7FFFFFFF) + body, True
    if kind == 1:
        return struct.pack(">I", 0xFFFFFFFF) + body, True
    if kind == 2:  # a length that lies
        n = max(0, len(body) + rnd.choice((-9, -4, -1, 1, 4, 4096)))
        return struct.pack(">I", 0x80000000 | n) + body, True
    if kind == 3:  # never the last fragment
        return struct.pack(">I", len(body)) + body, True
    # thousands of zero-length and one-byte fragments, then (or not) the last one
    frags = [struct.pack(">I", 0)] * rnd.randint(1, 3000)
    frags += [struct.pack(">I", 1) + body[i : i + 1] for i in range(min(len(body), 64))]
    last = kind == 4
    rest = body[64:]
    frags.append(struct.pack(">I", (0x80000000 if last else 0) | len(rest)) + rest)
    return b"".join(frags), not last


class _Tcp:
    """A fuzzing connection: what is left to write, and replies counted by record marking."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.out = bytearray()
        self.queued = 0  # inputs in ``out``
        self.unanswered = 0  # inputs written, minus replies
        self.poisoned = False
        self.progress = time.monotonic()
        self.marker = b""  # a record marker split across reads
        self.left = 0  # bytes left in the current fragment
        self.last = False
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=2)
        self.sock.setblocking(False)

    def replies(self, data: bytes) -> int:
        """Whole reply records completed by ``data``."""
        done, i = 0, 0
        while i < len(data):
            if self.left == 0:
                take = 4 - len(self.marker)
                self.marker += data[i : i + take]
                i += take
                if len(self.marker) < 4:
                    break
                (m,) = struct.unpack(">I", self.marker)
                self.marker, self.left, self.last = b"", m & 0x7FFFFFFF, bool(m >> 31)
            else:
                take = min(self.left, len(data) - i)
                i += take
                self.left -= take
            if self.left == 0 and self.last and not self.marker:
                done += 1
                self.last = False
        return done

    def abandon(self) -> None:
        """Close with a RST: no TIME_WAIT left behind, whatever was unsent is dropped."""
        reset(self.sock)


def run(cfg: dict) -> dict:
    """cfg: nfs_port, mount_port, handles {path: hex}, inputs, seconds, conns, udp_share, seed."""
    t0 = time.monotonic()
    deadline = t0 + cfg["seconds"]
    rnd = random.Random(cfg.get("seed", 7))
    pool = seeds({k: bytes.fromhex(v) for k, v in cfg["handles"].items()})
    ports = {"nfs": cfg["nfs_port"], "mount": cfg["mount_port"]}
    total, share = cfg["inputs"], cfg.get("udp_share", 0.0)
    st: dict[str, float] = dict.fromkeys(
        (
            "tcp_sent",
            "udp_sent",
            "poisoned",
            "closed_by_server",
            "connect_failed",
            "stalled",
            "tcp_replies",
            "udp_replies",
            "udp_refused",
            "udp_dropped",
        ),
        0,
    )
    sel = selectors.DefaultSelector()
    udp: dict[str, socket.socket] = {}
    if share > 0:
        for target, port in ports.items():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.connect(("127.0.0.1", port))
            s.setblocking(False)
            udp[target] = s
            sel.register(s, selectors.EVENT_READ, None)

    def open_conn(port: int) -> None:
        while time.monotonic() < deadline:
            try:
                c = _Tcp(port)
            except OSError:
                st["connect_failed"] += 1
                time.sleep(0.02)
                continue
            sel.register(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
            return

    def drop(c: _Tcp) -> None:
        sel.unregister(c.sock)
        c.abandon()
        open_conn(c.port)

    for i in range(cfg["conns"]):
        open_conn(ports["nfs"] if i % 4 else ports["mount"])
    sent = lambda: st["tcp_sent"] + st["udp_sent"]  # noqa: E731
    while sent() < total and time.monotonic() < deadline:
        for key, mask in sel.select(timeout=0.05):
            if key.data is None:  # a UDP socket: drain its replies
                _drain_udp(key.fileobj, st)  # type: ignore[arg-type]
                continue
            c: _Tcp = key.data
            if mask & selectors.EVENT_READ:
                try:
                    data = c.sock.recv(1 << 16)
                except OSError:
                    data = b""
                if not data:
                    st["closed_by_server"] += 1
                    drop(c)
                    continue
                n = c.replies(data)
                st["tcp_replies"] += n
                c.unanswered = max(0, c.unanswered - n)
                if n:
                    c.progress = time.monotonic()
            if mask & selectors.EVENT_WRITE:
                if not c.out and c.unanswered >= WINDOW:
                    if time.monotonic() - c.progress > SILENCE:
                        st["stalled"] += 1
                        drop(c)
                    continue
                if not c.out:
                    if c.poisoned:
                        drop(c)
                        continue
                    target = "nfs" if c.port == ports["nfs"] else "mount"
                    for _ in range(BATCH):
                        body = mutate(rnd, _pick(rnd, pool, target, ports), pool)
                        data, poisoned = frame(rnd, body)
                        c.out += data
                        c.queued += 1
                        if poisoned:
                            st["poisoned"] += 1
                            c.poisoned = True
                            break
                try:
                    n = c.sock.send(c.out)
                except BlockingIOError:
                    n = 0
                except OSError:
                    st["closed_by_server"] += 1
                    drop(c)
                    continue
                if n:
                    del c.out[:n]
                    c.progress = time.monotonic()
                if not c.out:
                    st["tcp_sent"] += c.queued
                    c.unanswered += c.queued
                    c.queued = 0
                elif time.monotonic() - c.progress > 5:
                    st["stalled"] += 1
                    drop(c)
        if udp and st["udp_sent"] < share * (sent() + 16):
            for _ in range(16):
                target = rnd.choice(list(udp))
                body = mutate(rnd, _pick(rnd, pool, target, ports), pool)
                try:
                    udp[target].send(body)
                    st["udp_sent"] += 1
                except BlockingIOError:
                    st["udp_dropped"] += 1
                except ConnectionRefusedError:
                    st["udp_refused"] += 1
                except OSError:
                    st["udp_dropped"] += 1  # e.g. EMSGSIZE for a grown input
    for key in list(sel.get_map().values()):
        if isinstance(key.data, _Tcp):
            key.data.abandon()
        else:
            key.fileobj.close()  # type: ignore[union-attr]
    st["seconds"] = time.monotonic() - t0
    st["inputs"] = sent()
    return st


def _pick(
    rnd: random.Random, pool: list[tuple[str, bytes]], target: str, ports: dict[str, int]
) -> bytes:
    """A seed for ``target``'s port (any seed when NFS and MOUNT share the port)."""
    while True:
        t, body = rnd.choice(pool)
        if t == target or ports["nfs"] == ports["mount"]:
            return body


def _drain_udp(sock: socket.socket, st: dict) -> None:
    for _ in range(256):
        try:
            sock.recv(1 << 16)
            st["udp_replies"] += 1
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno == errno.ECONNREFUSED:
                st["udp_refused"] += 1
            return
