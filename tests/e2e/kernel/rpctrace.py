"""A passive ONC-RPC tracer on the namespace's loopback, for precise failure reports.

Inside the private namespace every packet between QEMU's user networking and
the servers crosses `lo`. `Tracer` reads them with an AF_PACKET socket (no
effect on the traffic), follows each TCP stream to a traced port, splits it
into RPC records (record marking) and decodes the head of each record only:
the call's xid, program, procedure and main arguments (file handle digest,
offset and count of READ, name of LOOKUP, path of MNT...) and the reply's
accept status and NFS status (and READ's count and eof). Each call is written
to `rpc.log` when its reply arrives; `summary()` tells the counts per
procedure, every error reply and every call left unanswered, so a failing
test can name the xid and procedure behind what the guest saw.

It decodes from RFC 5531 / RFC 1813 / RFC 1833 with `struct` alone (no code
under test). A stream whose bytes it misses (a capture drop) is reported
and no longer decoded.
"""

from __future__ import annotations

import hashlib
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
PREFIX = 320  # bytes of each record kept for decoding

PROGRAMS = {100000: "PORTMAP", 100003: "NFS", 100005: "MOUNT", 100227: "NFSACL"}
PROCS = {
    "NFS": [
        "NULL",
        "GETATTR",
        "SETATTR",
        "LOOKUP",
        "ACCESS",
        "READLINK",
        "READ",
        "WRITE",
        "CREATE",
        "MKDIR",
        "SYMLINK",
        "MKNOD",
        "REMOVE",
        "RMDIR",
        "RENAME",
        "LINK",
        "READDIR",
        "READDIRPLUS",
        "FSSTAT",
        "FSINFO",
        "PATHCONF",
        "COMMIT",
    ],
    "MOUNT": ["NULL", "MNT", "DUMP", "UMNT", "UMNTALL", "EXPORT"],
    "PORTMAP": [
        "NULL",
        "SET",
        "UNSET",
        "GETPORT",
        "DUMP",
        "CALLIT",
        "GETTIME",
        "UADDR2TADDR",
        "TADDR2UADDR",
    ],
    "NFSACL": ["NULL", "GETACL", "SETACL"],
}
ACCEPT = ["SUCCESS", "PROG_UNAVAIL", "PROG_MISMATCH", "PROC_UNAVAIL", "GARBAGE_ARGS", "SYSTEM_ERR"]
NFSSTAT = {
    0: "OK",
    1: "PERM",
    2: "NOENT",
    5: "IO",
    6: "NXIO",
    13: "ACCES",
    17: "EXIST",
    18: "XDEV",
    19: "NODEV",
    20: "NOTDIR",
    21: "ISDIR",
    22: "INVAL",
    27: "FBIG",
    28: "NOSPC",
    30: "ROFS",
    31: "MLINK",
    63: "NAMETOOLONG",
    66: "NOTEMPTY",
    69: "DQUOT",
    70: "STALE",
    71: "REMOTE",
    10001: "BADHANDLE",
    10002: "NOT_SYNC",
    10003: "BAD_COOKIE",
    10004: "NOTSUPP",
    10005: "TOOSMALL",
    10006: "SERVERFAULT",
    10007: "BADTYPE",
    10008: "JUKEBOX",
}
WRITING = {"SETATTR", "WRITE", "CREATE", "MKDIR", "SYMLINK", "MKNOD", "REMOVE", "RMDIR"}
WRITING |= {"RENAME", "LINK", "COMMIT"}


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.d, self.p = data, 0

    def u32(self) -> int:
        v = struct.unpack_from(">I", self.d, self.p)[0]
        self.p += 4
        return v

    def u64(self) -> int:
        v = struct.unpack_from(">Q", self.d, self.p)[0]
        self.p += 8
        return v

    def opaque(self) -> bytes:
        n = self.u32()
        v = self.d[self.p : self.p + n]
        if len(v) < n:
            raise struct.error("truncated")
        self.p += n + (-n % 4)
        return v


def _fh(b: bytes) -> str:
    return "fh:" + hashlib.sha1(b).hexdigest()[:8]


@dataclass
class Call:
    t: float
    conn: str
    xid: int
    prog: str
    vers: int
    proc: str
    args: str
    reply: str | None = None
    ok: bool = True
    t_reply: float | None = None
    sent: int = 1  # more than 1: retransmitted (perhaps on a new connection)

    def line(self) -> str:
        lat = f" {1000 * (self.t_reply - self.t):.1f}ms" if self.t_reply is not None else ""
        again = f" (sent {self.sent} times)" if self.sent > 1 else ""
        return (
            f"{self.t:9.3f} {self.conn} xid={self.xid:#010x} {self.prog}v{self.vers} {self.proc}"
            f"({self.args}){again} -> {self.reply or 'NO REPLY'}{lat}"
        )


def _decode_call(rec: bytes) -> tuple[int, str, int, str, str] | None:
    r = _Reader(rec)
    try:
        xid, mtype = r.u32(), r.u32()
        if mtype != 0:
            return None
        r.u32()  # rpcvers
        prog_n, vers, proc_n = r.u32(), r.u32(), r.u32()
        r.u32()
        r.opaque()  # cred
        r.u32()
        r.opaque()  # verf
        prog = PROGRAMS.get(prog_n, str(prog_n))
        names = PROCS.get(prog, [])
        proc = names[proc_n] if proc_n < len(names) else f"proc{proc_n}"
        args = ""
        try:
            if prog == "NFS" and proc != "NULL":
                fh = r.opaque()
                args = _fh(fh)
                if proc == "READ":
                    args += f" off={r.u64()} count={r.u32()}"
                elif proc in ("LOOKUP", "CREATE", "MKDIR", "REMOVE", "RMDIR", "SYMLINK"):
                    args += f" {r.opaque().decode(errors='replace')!r}"
                elif proc == "READDIRPLUS":
                    args += f" cookie={r.u64()}"
                elif proc == "ACCESS":
                    args += f" mask={r.u32():#x}"
            elif prog == "MOUNT" and proc in ("MNT", "UMNT"):
                args = r.opaque().decode(errors="replace")
            elif prog == "PORTMAP" and proc == "GETPORT":
                args = f"prog={r.u32()} vers={r.u32()} prot={r.u32()}"
        except struct.error:
            args += " (args beyond the decoded head)"
        return xid, prog, vers, proc, args
    except struct.error:
        return None


def _decode_reply(rec: bytes, call: Call | None) -> tuple[int, str, bool] | None:
    r = _Reader(rec)
    try:
        xid, mtype = r.u32(), r.u32()
        if mtype != 1:
            return None
        if r.u32() != 0:
            return xid, "MSG_DENIED", False
        r.u32()
        r.opaque()  # verf
        acc = r.u32()
        if acc != 0:
            return xid, ACCEPT[acc] if acc < len(ACCEPT) else f"accept_stat {acc}", False
        if call is None or call.proc == "NULL":
            return xid, "SUCCESS", True
        if call.prog == "NFS":
            st = r.u32()
            text = "NFS3_OK" if st == 0 else f"NFS3ERR_{NFSSTAT.get(st, st)}"
            if call.proc == "READ" and st == 0:
                if r.u32():
                    r.p += 84  # fattr3
                count, eof = r.u32(), r.u32()
                text += f" count={count} eof={eof}"
            return xid, text, st == 0
        if call.prog == "MOUNT" and call.proc == "MNT":
            st = r.u32()
            return xid, "MNT3_OK" if st == 0 else f"MNT3ERR {st}", st == 0
        if call.prog == "PORTMAP" and call.proc == "GETPORT":
            return xid, f"port={r.u32()}", True
        return xid, "SUCCESS", True
    except struct.error:
        return None


@dataclass
class _Stream:
    conn: str
    to_server: bool
    next_seq: int | None = None
    header: bytes = b""
    left: int = 0  # bytes left in the current fragment
    last: bool = False
    prefix: bytearray = field(default_factory=bytearray)
    resync: bool = False  # bytes were missed: look for the next record head
    held: dict[int, bytes] = field(default_factory=dict)  # segments ahead of a gap


class Tracer:
    """Capture RPC on `lo` for the given server ports until `stop()`."""

    def __init__(
        self, ports: set[int], log_path: Path, t0: float | None = None, pcap: Path | None = None
    ) -> None:
        self.ports = ports
        # Optionally every traced packet's first 200 bytes, for tcpdump -r / wireshark.
        self.pcap = open(pcap, "wb") if pcap else None  # noqa: SIM115
        if self.pcap:
            self.pcap.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 200, 1))
        self.log_path = log_path
        self.streams: dict[tuple, _Stream] = {}
        self.calls: dict[int, Call] = {}  # by xid: a retransmission may use a new connection
        self.done: list[Call] = []
        self.counts: dict[str, int] = {}
        self.lost: list[str] = []
        self.missed = 0  # stream bytes not captured
        self.all_retransmitted: list[Call] = []
        self.t0 = time.monotonic() if t0 is None else t0
        self._stop = threading.Event()
        self._log = open(log_path, "w")  # noqa: SIM115
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.2)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(10)
        try:
            _, drops = struct.unpack("II", self.sock.getsockopt(263, 6, 8))  # PACKET_STATISTICS
            if drops or self.missed:
                self.lost.append(
                    f"{drops} packets dropped by the capture, {self.missed} stream bytes missed; "
                    "the calls around them may be missing from the trace"
                )
        except OSError:
            pass
        self.sock.close()
        if self.pcap:
            self.pcap.close()
        for c in self.calls.values():
            self._log.write(c.line() + "\n")
        self._log.close()

    def _run(self) -> None:
        buf = bytearray(1 << 17)
        view = memoryview(buf)
        while not self._stop.is_set():
            try:
                n, addr = self.sock.recvfrom_into(buf)
            except TimeoutError:
                continue
            except OSError:
                return
            # Each packet on lo is seen twice: take the copy made when it was sent, in
            # the order the sender sent it (received copies can be reordered by CPUs).
            if addr[2] != PACKET_OUTGOING:
                continue
            try:
                self._packet(view[:n])
            except Exception as e:  # a tracer bug must not end the run
                self.lost.append(f"tracer error: {e!r}")

    def _packet(self, pkt: memoryview) -> None:
        if len(pkt) < 34 or pkt[12:14] != b"\x08\x00" or pkt[23] != 6:
            return
        ihl = (pkt[14] & 0x0F) * 4
        total = struct.unpack_from(">H", pkt, 16)[0]
        tcp = 14 + ihl
        sport, dport, seq = struct.unpack_from(">HHI", pkt, tcp)
        to_server = dport in self.ports
        if not to_server and sport not in self.ports:
            return
        flags = pkt[tcp + 13]
        if self.pcap:
            now = time.time()
            snap = bytes(pkt[:200])
            head = struct.pack("<IIII", int(now), int(now % 1 * 1e6), len(snap), len(pkt))
            self.pcap.write(head + snap)
        payload = pkt[tcp + (pkt[tcp + 12] >> 4) * 4 : 14 + total]
        src = socket.inet_ntoa(bytes(pkt[26:30]))
        dst = socket.inet_ntoa(bytes(pkt[30:34]))
        key = (src, sport, dst, dport)
        client_port = sport if to_server else dport
        server_port = dport if to_server else sport
        conn = f"{client_port}->{server_port}"
        st = self.streams.get(key)
        if flags & 0x02:  # SYN: a new connection starts at a record boundary
            self.streams[key] = _Stream(conn, to_server, (seq + 1) & 0xFFFFFFFF)
            return
        if st is None or not payload:
            return
        assert st.next_seq is not None
        delta = (seq - st.next_seq) & 0xFFFFFFFF
        if delta and delta < 0x80000000:
            # Ahead of what was seen: hold it until the gap fills, or give the gap up.
            st.held[seq] = bytes(payload)
            if len(st.held) <= 64:
                return
            first = min(st.held, key=lambda q: (q - st.next_seq) & 0xFFFFFFFF)
            self.missed += (first - st.next_seq) & 0xFFFFFFFF
            st.resync, st.header, st.left, st.prefix = True, b"", 0, bytearray()
            st.next_seq = first
            self._drain(st)
            return
        if delta:  # a retransmission: skip what was seen
            skip = (0x100000000 - delta) & 0xFFFFFFFF
            if skip >= len(payload):
                return
            payload = payload[skip:]
            seq = st.next_seq
        st.next_seq = (seq + len(payload)) & 0xFFFFFFFF
        if st.resync:
            start = self._find_record(st, bytes(payload))
            if start is None:
                return
            st.resync = False
            payload = payload[start:]
        self._bytes(st, payload)
        if st.held:
            self._drain(st)

    def _drain(self, st: _Stream) -> None:
        """Feed held segments that now follow on."""
        while st.next_seq in st.held:
            data = st.held.pop(st.next_seq)
            st.next_seq = (st.next_seq + len(data)) & 0xFFFFFFFF
            if st.resync:
                start = self._find_record(st, data)
                if start is None:
                    continue
                st.resync = False
                data = data[start:]
            self._bytes(st, memoryview(data))

    def _find_record(self, st: _Stream, data: bytes) -> int | None:
        """After missed bytes: the offset of a record mark followed by a plausible call
        (msg_type 0, rpcvers 2) or a reply to an outstanding xid (msg_type 1, accepted)."""
        pattern = b"\0\0\0\0\0\0\0\x02" if st.to_server else b"\0\0\0\x01\0\0\0\0"
        i = data.find(pattern, 8)
        while i != -1:
            mark, xid = struct.unpack_from(">II", data, i - 8)
            plausible = mark & 0x80000000 and (mark & 0x7FFFFFFF) < 1 << 24
            if plausible and (st.to_server or xid in self.calls):
                return i - 8
            i = data.find(pattern, i + 1)
        return None

    def _bytes(self, st: _Stream, data: memoryview) -> None:
        pos = 0
        while pos < len(data):
            if st.left == 0 and len(st.header) < 4:
                take = min(4 - len(st.header), len(data) - pos)
                st.header += bytes(data[pos : pos + take])
                pos += take
                if len(st.header) == 4:
                    mark = struct.unpack(">I", st.header)[0]
                    st.left, st.last = mark & 0x7FFFFFFF, bool(mark & 0x80000000)
                    if st.left == 0 and st.last:
                        self._record(st)
                continue
            take = min(st.left, len(data) - pos)
            if len(st.prefix) < PREFIX:
                st.prefix += data[pos : pos + min(take, PREFIX - len(st.prefix))]
            pos += take
            st.left -= take
            if st.left == 0:
                st.header = b""
                if st.last:
                    self._record(st)

    def _record(self, st: _Stream) -> None:
        rec = bytes(st.prefix)
        st.prefix = bytearray()
        st.header = b""
        now = round(time.monotonic() - self.t0, 3)
        if st.to_server:
            d = _decode_call(rec)
            if d:
                xid, prog, vers, proc, args = d
                old = self.calls.get(xid)
                if old and (old.prog, old.proc, old.args) == (prog, proc, args):
                    old.sent += 1
                    old.conn += f",{st.conn}"
                    if old.sent == 2:
                        self.all_retransmitted.append(old)
                    return
                self.calls[xid] = Call(now, st.conn, xid, prog, vers, proc, args)
                name = f"{prog} {proc}"
                self.counts[name] = self.counts.get(name, 0) + 1
            return
        xid = struct.unpack_from(">I", rec)[0] if len(rec) >= 4 else None
        call = self.calls.pop(xid, None) if xid is not None else None
        d = _decode_reply(rec, call)
        if call is None or d is None:
            return
        call.reply, call.ok, call.t_reply = d[1], d[2], now
        if not call.ok:
            self.done.append(call)
        self._log.write(call.line() + "\n")

    def outstanding(self, proc: str) -> list[str]:
        """Calls of `proc` sent and not answered yet (as far as the capture has seen)."""
        return [f"{c.xid:#010x}" for c in list(self.calls.values()) if c.proc == proc]

    def summary(self) -> dict:
        """Counts per procedure, error replies, unanswered calls, capture losses."""
        expected, unexpected = [], []
        for c in self.done:
            benign = (
                (c.prog == "NFSACL" and c.reply == "PROG_UNAVAIL")
                or (c.proc == "LOOKUP" and c.reply == "NFS3ERR_NOENT")
                or (c.proc in WRITING and c.reply == "NFS3ERR_ROFS")
                or (c.proc == "ACCESS" and c.reply == "NFS3_OK")
            )
            (expected if benign else unexpected).append(c.line())
        return {
            "counts": dict(sorted(self.counts.items())),
            "errors": unexpected,
            "expected_errors": len(expected),
            "unanswered": [
                c.line() + (" (or its reply was not captured)" if self.missed else "")
                for c in self.calls.values()
            ],
            "retransmitted": [c.line() for c in self.all_retransmitted],
            "lost": self.lost,
        }
