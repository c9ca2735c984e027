"""The well-behaved client of the soak: what a real user sees during each load.

One TCP connection, one call at a time, alternating NULL and a 64 KiB READ
at a random 64 KiB-aligned offset of one of the files, until its deadline.
Every READ's bytes are compared with the file they should come from (the
plain file, or the merged image materialized by the reference merge), so a
single wrong byte is counted.  A call not answered within ``timeout``, a
closed connection or an RPC error counts as an error, and the client
reconnects; a late answer counts in the latencies as the time it took
(a timeout as ``timeout``), so the maximum shows it.
"""

from __future__ import annotations

import math
import mmap
import os
import random
import socket
import time

from soak_rpc import NULL, Client, RpcError

READ_SIZE = 64 * 1024


def percentile(values: list[float], p: float) -> float | None:
    """The nearest-rank percentile (p in 0..100), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
    return ordered[rank]


def summary(latencies: list[float]) -> dict:
    """Count, p50, p99 and max, in milliseconds."""
    ms = [x * 1000 for x in latencies]
    return {
        "n": len(ms),
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else None,
    }


def wrong_bytes(got: bytes, want: bytes) -> int:
    """Bytes that differ, plus bytes missing or extra (only counted on a mismatch)."""
    if got == want:
        return 0
    return sum(a != b for a, b in zip(got, want, strict=False)) + abs(len(got) - len(want))


def run(cfg: dict) -> dict:
    """cfg: host, port, handles {name: hex}, files {name: path}, seconds, timeout, pause,
    stop (a path: the client stops once it exists, or at ``seconds``)."""
    deadline = time.monotonic() + cfg["seconds"]
    stop = cfg.get("stop", "")
    timeout, pause = cfg.get("timeout", 5.0), cfg.get("pause", 0.004)
    handles = {k: bytes.fromhex(v) for k, v in cfg["handles"].items()}
    maps = {}
    for name, path in cfg["files"].items():
        with open(path, "rb") as f:
            maps[name] = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    names = sorted(maps)
    rnd = random.Random(cfg.get("seed", 1))
    null_lat: list[float] = []
    read_lat: list[float] = []
    errors: list[str] = []
    wrong = late = bytes_read = 0
    client: Client | None = None
    turn = 0
    while time.monotonic() < deadline and not (stop and os.path.exists(stop)):
        turn += 1
        t0 = time.monotonic()
        try:
            if client is None:
                client = Client(cfg["host"], cfg["port"], timeout)
                t0 = time.monotonic()
            if turn % 2:
                client.nfs(NULL)
                null_lat.append(time.monotonic() - t0)
            else:
                name = names[turn // 2 % len(names)]
                expect = maps[name]
                offset = rnd.randrange(len(expect) // READ_SIZE) * READ_SIZE
                data, _eof = client.read(handles[name], offset, READ_SIZE)
                read_lat.append(time.monotonic() - t0)
                bytes_read += len(data)
                # A short read is legal; what comes back must be the file's bytes.
                wrong += wrong_bytes(data, expect[offset : offset + len(data)])
                if not data:
                    errors.append(f"READ {name} at {offset}: no data")
        except (OSError, EOFError, RpcError) as e:
            took = time.monotonic() - t0
            (null_lat if turn % 2 else read_lat).append(took)
            kind = "timeout" if isinstance(e, socket.timeout) else type(e).__name__
            errors.append(f"{kind}: {e} after {took:.3f} s")
            if client is not None:
                client.close()
            client = None
            time.sleep(0.05)
        if time.monotonic() - t0 > 1.0:
            late += 1
        time.sleep(pause)
    if client is not None:
        client.close()
    return {
        "null": summary(null_lat),
        "read": summary(read_lat),
        "errors": len(errors),
        "error_samples": errors[:5],
        "wrong_bytes": wrong,
        "late": late,
        "bytes_read": bytes_read,
    }
