#!/usr/bin/env python3
"""Sequential 1 MiB READ over RPC-with-TLS against the same over plain TCP, in one run.

    bench/tls_read.py                 1 GiB file, 3 runs of each, alternating
    bench/tls_read.py --short         64 MiB, 1 run each (CI: checks it works)
    bench/tls_read.py --update-docs   and write the table into docs/performance.md

libnfs (``bench/nfsload.c``) has no TLS, so one client is used for both
transports to keep the ratio fair: :class:`Reader`, Python with ``ssl``,
READs of 1 MiB kept ``--depth`` in flight on one connection, every byte
checked against the file's SHA-256.  The TLS connection asks with an
AUTH_TLS NULL (RFC 9289) and runs TLS 1.3 over the same socket; MNT and
LOOKUP go in clear first, as the Linux client sends them.  The server is
``recovery-fs serve --workers 1`` (one process) with ``--tls-cert``; its CPU
is utime + stime from /proc/PID/stat around each run, the client's from
``getrusage``.  The file is read once before the runs: the page cache
serves every run.

No kernel TLS offload here: Python 3.11's ``ssl`` has no ``OP_ENABLE_KTLS``
and the server encrypts over memory BIOs anyway (``nfsd.transport.tls``),
so what is measured is OpenSSL's AES-GCM in the server's process (and the
client's), plus the copies in and out of the memory BIOs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nfsd.cli.tls import init as tls_init  # noqa: E402
from nfsd.transport.record import LAST_FRAGMENT, RecordReader  # noqa: E402
from nfsd.transport.tls import AUTH_TLS  # noqa: E402
from xdr import mount3, nfs3  # noqa: E402
from xdr.base import Packer, Unpacker  # noqa: E402
from xdr.rpc import AUTH_NONE, AUTH_SYS, RpcPacker, authsys_parms, call_body, opaque_auth  # noqa: E402

MiB = 1 << 20
EXPORT = b"/recover/images"
NAME = "big.bin"
DOC = REPO / "docs" / "performance.md"
BEGIN, END = "<!-- tls-bench:begin -->", "<!-- tls-bench:end -->"
CLK = os.sysconf("SC_CLK_TCK")


def cred() -> opaque_auth:
    p = RpcPacker()
    p.pack_authsys_parms(authsys_parms(0, b"bench", 0, 0, []))
    return opaque_auth(AUTH_SYS, p.get_buffer())


def record(xid: int, prog: int, vers: int, proc: int, args: bytes, *, auth: opaque_auth) -> bytes:
    p = RpcPacker()
    p.pack_call_header(xid, call_body(2, prog, vers, proc, auth, opaque_auth(AUTH_NONE, b"")))
    body = p.get_buffer() + args
    return struct.pack(">I", LAST_FRAGMENT | len(body)) + body


class Reader:
    """One connection, plain or TLS, reading a file sequentially in 1 MiB READs."""

    def __init__(self, port: int, tls: ssl.SSLContext | None) -> None:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = RecordReader(4 * MiB)
        self.sock: socket.socket | ssl.SSLSocket = sock
        self.xid = 1
        self.auth = cred()
        if tls is not None:
            sock.sendall(record(1, nfs3.NFS_PROGRAM, 3, 0, b"", auth=opaque_auth(AUTH_TLS, b"")))
            assert b"STARTTLS" in self.recv()
            self.sock = tls.wrap_socket(sock, server_hostname="localhost")
        agreed = self.sock.cipher() if isinstance(self.sock, ssl.SSLSocket) else None
        self.cipher = agreed[0] if agreed else "-"

    def recv(self) -> bytes:
        while True:
            out = self.reader.feed(self.sock.recv(4 * MiB))
            if out:
                assert len(out) == 1, "one reply at a time"
                return out[0]

    def call(self, prog: int, proc: int, args: bytes) -> bytes:
        self.xid += 1
        self.sock.sendall(record(self.xid, prog, 3, proc, args, auth=self.auth))
        reply = self.recv()
        return reply[24:]  # xid, REPLY, ACCEPTED, verifier (empty), SUCCESS

    def read_all(self, fh: bytes, size: int, depth: int) -> tuple[int, str]:
        """Read ``size`` bytes in order, ``depth`` READs in flight: (bytes, sha256)."""
        sha = hashlib.sha256()
        head = Packer()
        head.pack_opaque(fh)
        fh_args = head.get_buffer()
        pending: dict[int, int] = {}  # xid -> offset
        got: dict[int, bytes] = {}
        next_offset, done_offset, total = 0, 0, 0
        while done_offset < size:
            while len(pending) < depth and next_offset < size:
                self.xid += 1
                args = fh_args + struct.pack(">QI", next_offset, MiB)
                self.sock.sendall(record(self.xid, nfs3.NFS_PROGRAM, 3, 6, args, auth=self.auth))
                pending[self.xid] = next_offset
                next_offset += MiB
            for rec in self.reader.feed(self.sock.recv(4 * MiB)):
                xid = struct.unpack_from(">I", rec)[0]
                offset = pending.pop(xid)
                body = memoryview(rec)[24:]
                status, follows = struct.unpack_from(">II", body)
                assert status == 0, f"READ at {offset}: status {status}"
                at = 8 + (84 if follows else 0) + 8  # attributes, count, eof
                n = struct.unpack_from(">I", body, at)[0]
                got[offset] = bytes(body[at + 4 : at + 4 + n])
            while done_offset in got:
                data = got.pop(done_offset)
                sha.update(data)
                total += len(data)
                done_offset += MiB
        return total, sha.hexdigest()

    def close(self) -> None:
        self.sock.close()


def lookup_root_and_file(port: int) -> bytes:
    """MNT and LOOKUP in clear: the file's handle."""
    c = Reader(port, None)
    try:
        p = Packer()
        p.pack_string(EXPORT)
        u = Unpacker(c.call(mount3.MOUNT_PROGRAM, 1, p.get_buffer()))
        assert u.unpack_uint() == 0, "MNT refused"
        root = u.unpack_opaque()
        p = Packer()
        p.pack_opaque(root)
        p.pack_string(NAME.encode())
        u = Unpacker(c.call(nfs3.NFS_PROGRAM, 3, p.get_buffer()))
        assert u.unpack_uint() == 0, "LOOKUP failed"
        return u.unpack_opaque()
    finally:
        c.close()


def cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def client_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def make_file(path: Path, size: int) -> str:
    sha = hashlib.sha256()
    with open(path, "wb") as f:
        block = os.urandom(MiB)
        for i in range(size // MiB):
            chunk = i.to_bytes(8, "big") + block[8:]
            f.write(chunk)
            sha.update(chunk)
    return sha.hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_serving(port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            lookup_root_and_file(port)
            return
        except (OSError, AssertionError):
            time.sleep(0.1)
    raise RuntimeError("server did not answer")


def measure(args: argparse.Namespace) -> dict:
    size = (64 if args.short else args.size_mib) * MiB
    runs = 1 if args.short else args.runs
    with tempfile.TemporaryDirectory(prefix="tls-bench-") as tmp:
        t = Path(tmp)
        (t / "storage").mkdir()
        expected = make_file(t / "storage" / NAME, size)
        tls_init(t / "pki", ["localhost"], ["127.0.0.1"])
        (t / "exports").write_text("/recover/images 127.0.0.1(insecure)\n")
        port = free_port()
        cmd = [sys.executable, "-m", "nfsd.cli", "serve", "--storage", str(t / "storage")]
        cmd += ["--bind", "127.0.0.1", "--port", str(port), "--no-portmap", "--workers", "1"]
        cmd += ["--state-dir", str(t / "state"), "--log-file", str(t / "log")]
        cmd += ["--exports", str(t / "exports")]
        cmd += [
            "--tls-cert",
            str(t / "pki" / "server.pem"),
            "--tls-key",
            str(t / "pki" / "server.key"),
        ]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        server = subprocess.Popen(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_serving(port, server, time.monotonic() + 60)
            fh = lookup_root_and_file(port)
            with open(t / "storage" / NAME, "rb") as f:  # the page cache, not the disk
                while f.read(8 * MiB):
                    pass
            ctx = ssl.create_default_context(cafile=str(t / "pki" / "ca.pem"))
            ctx.set_alpn_protocols(["sunrpc"])
            results: dict[str, list[dict]] = {"plain": [], "tls": []}
            for _ in range(runs):
                for mode in ("plain", "tls"):
                    c = Reader(port, ctx if mode == "tls" else None)
                    s0, c0, t0 = cpu_of(server.pid), client_cpu(), time.monotonic()
                    n, sha = c.read_all(fh, size, args.depth)
                    t1, s1, c1 = time.monotonic(), cpu_of(server.pid), client_cpu()
                    c.close()
                    assert (n, sha) == (size, expected), f"{mode}: wrong bytes"
                    results[mode].append(
                        {
                            "MB_per_s": n / (t1 - t0) / 1e6,
                            "server_cpu_s_per_GiB": (s1 - s0) * (1 << 30) / n,
                            "client_cpu_s_per_GiB": (c1 - c0) * (1 << 30) / n,
                            "cipher": c.cipher,
                        }
                    )
        finally:
            server.terminate()
            server.wait(10)
    out: dict = {
        "date": time.strftime("%Y-%m-%d"),
        "size_MiB": size // MiB,
        "runs": runs,
        "depth": args.depth,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "openssl": ssl.OPENSSL_VERSION,
        "ktls": hasattr(ssl, "OP_ENABLE_KTLS"),
        "load_before": os.getloadavg()[0],
    }
    for mode, rs in results.items():
        out[mode] = {
            k: statistics.median(r[k] for r in rs)
            for k in ("MB_per_s", "server_cpu_s_per_GiB", "client_cpu_s_per_GiB")
        }
        out[mode]["cipher"] = rs[0]["cipher"]
        out[mode]["all_MB_per_s"] = [round(r["MB_per_s"]) for r in rs]
    out["ratio_tls_plain"] = out["tls"]["MB_per_s"] / out["plain"]["MB_per_s"]
    return out


def table(r: dict) -> str:
    lines = [
        f"Measured {r['date']} with `bench/tls_read.py --update-docs` on {r['cpus']} cores, "
        f"Linux {r['kernel']}, Python {r['python']}, {r['openssl']}; a {r['size_MiB']} MiB file "
        f"from the page cache, 1 MiB READs, {r['depth']} in flight on one connection, "
        f"median of {r['runs']} runs, transports alternating; kernel TLS offload: "
        f"{'available' if r['ktls'] else 'not available (no OP_ENABLE_KTLS in this Python)'}.",
        "",
        "| transport | MB/s (runs) | server CPU s/GiB | client CPU s/GiB | cipher |",
        "|---|---|---|---|---|",
    ]
    for mode in ("plain", "tls"):
        m = r[mode]
        runs = ", ".join(f"{v:,}" for v in m["all_MB_per_s"])
        lines.append(
            f"| {'TCP' if mode == 'plain' else 'RPC-with-TLS (TLS 1.3)'} | "
            f"{m['MB_per_s']:,.0f} ({runs}) | {m['server_cpu_s_per_GiB']:.2f} | "
            f"{m['client_cpu_s_per_GiB']:.2f} | {m['cipher']} |"
        )
    lines += ["", f"TLS / plain throughput: **{r['ratio_tls_plain']:.2f}×**."]
    return "\n".join(lines) + "\n"


def update_docs(text: str) -> None:
    doc = DOC.read_text()
    start, end = doc.index(BEGIN) + len(BEGIN), doc.index(END)
    DOC.write_text(doc[:start] + "\n" + text + doc[end:])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--short", action="store_true")
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--update-docs", action="store_true")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    args = ap.parse_args()
    r = measure(args)
    text = table(r)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(r, indent=1))
    if args.update_docs:
        update_docs(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
