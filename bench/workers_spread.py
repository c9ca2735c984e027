#!/usr/bin/env python3
"""How connections and calls spread over worker processes: inherited listeners
against SO_REUSEPORT (the figures of nfsd/service/supervisor.py's notes).

    bench/workers_spread.py [--workers 4] [--seconds 5] [--nfsload PATH]

For each mode (RECOVERY_FS_LISTEN=inherit|reuseport) it starts
``recovery-fs serve --workers N`` on loopback, opens 8 and then 64 TCP
connections one after another (each makes one NULL call and stays open) and
reads the connections per worker from ``status --json``; then, if nfsload
is given (bench/nfsload.c), runs a 4-connection random 4 KiB READ load and
reports the calls each worker served and the load's rate.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.e2e.support.server import Server, null_call, recv_record  # noqa: E402


def status(srv: Server) -> dict:
    p = subprocess.run(
        [*srv.command, "status", "--json", "--state-dir", str(srv.state)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(p.stdout)


def settle(srv: Server, key: str, total: int) -> list[int]:
    """Per-worker ``key`` once their sum reaches ``total`` (stats come each second)."""
    deadline = time.monotonic() + 10
    while True:
        rows = [w.get(key) or 0 for w in status(srv)["workers"]]
        if sum(rows) >= total or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def connections(srv: Server, n: int) -> list[int]:
    socks = []
    for i in range(n):
        s = socket.create_connection((srv.host, srv.port))
        s.sendall(null_call(i + 1))
        recv_record(s)
        socks.append(s)
    try:
        return settle(srv, "connections", n)
    finally:
        for s in socks:
            s.close()


def load(srv: Server, nfsload: str, seconds: float, conns: int) -> tuple[list[int], float]:
    before = settle(srv, "calls", 0)
    out = subprocess.run(
        [
            nfsload,
            "--url",
            srv.url(),
            "--op",
            "read",
            "--path",
            "/big.img",
            "--size",
            "4096",
            "--random",
            "--inflight",
            "16",
            "--conns",
            str(conns),
            "--seconds",
            str(seconds),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    r = json.loads(out.stdout)
    time.sleep(1.5)
    after = settle(srv, "calls", sum(before) + r["ops"])
    return [a - b for a, b in zip(after, before, strict=True)], r["ops"] / r["seconds"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--nfsload")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        storage = Path(tmp) / "storage"
        storage.mkdir()
        (storage / "big.img").write_bytes(os.urandom(64 << 20))
        (Path(tmp) / "exports").write_text("/recover/images 127.0.0.0/8(insecure)\n")
        for mode in ("inherit", "reuseport"):
            os.environ["RECOVERY_FS_LISTEN"] = mode
            srv = Server(
                storage,
                Path(tmp) / mode,
                args=("--workers", str(args.workers), "--exports", str(Path(tmp) / "exports")),
            )
            try:
                time.sleep(1)
                for n in (8, 64):
                    print(f"{mode:9} {n:3} connections per worker: {connections(srv, n)}")
                    time.sleep(1.5)
                if args.nfsload:
                    for conns in (4, 8):
                        calls, rate = load(srv, args.nfsload, args.seconds, conns)
                        print(
                            f"{mode:9} {conns} conns random 4 KiB READ: {rate:8.0f} calls/s;"
                            f" per worker {calls}"
                        )
            finally:
                srv.stop()


if __name__ == "__main__":
    main()
