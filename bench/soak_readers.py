"""Load 3: clients reading whole files at once, a quarter vanishing mid-read.

Each of ``clients`` threads opens a connection and sends the READ calls of
a whole file at once (``read_size`` each), then reads the replies and
checks every byte against the file.  Every fourth client vanishes instead:
half of those close right after sending, without reading a reply; the
other half read half the replies and then reset the connection (SO_LINGER
0, a RST).  Rounds repeat until ``rounds`` or ``seconds``.
"""

from __future__ import annotations

import mmap
import socket
import struct
import threading
import time

from soak_conns import LINGER_RST
from soak_probe import wrong_bytes
from soak_rpc import (
    NFS_PROGRAM,
    NFS_V3,
    READ,
    RpcError,
    accepted,
    call,
    read_args,
    read_result,
    record,
    recv_record,
)


def _client(i: int, cfg: dict, target: tuple[bytes, mmap.mmap], st: dict, lock: threading.Lock):
    """Client ``i``: rounds of one whole file (``target``: its handle and expected bytes)."""
    fh, expect = target
    size, step = len(expect), cfg["read_size"]
    deadline = cfg["deadline"]
    vanish = "" if i % 4 else ("close_unread" if i % 8 == 0 else "rst_mid_read")
    for rnd in range(cfg["rounds"]):
        if time.monotonic() >= deadline:
            return
        xid0 = (i << 20) + (rnd << 12)
        offsets = list(range(0, size, step))
        calls = b"".join(
            record(call(xid0 + n, NFS_PROGRAM, NFS_V3, READ, read_args(fh, off, step)))
            for n, off in enumerate(offsets)
        )
        got = wrong = errors = 0
        try:
            sock = socket.create_connection((cfg["host"], cfg["port"]), timeout=cfg["timeout"])
        except OSError:
            with lock:
                st["connect_failed"] += 1
            continue
        try:
            sock.sendall(calls)
            if vanish == "close_unread":
                sock.close()
                with lock:
                    st["vanished"] += 1
                continue
            wanted = len(offsets) // 2 if vanish else len(offsets)
            for _ in range(wanted):
                reply = recv_record(sock)
                (xid,) = struct.unpack_from(">I", reply)
                n = xid - xid0
                if not 0 <= n < len(offsets):
                    raise RpcError(f"unexpected xid {xid:#x}")
                data, _eof = read_result(accepted(reply, xid))
                off = offsets[n]
                wrong += wrong_bytes(data, expect[off : off + len(data)])
                got += len(data)
            if vanish:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
        except (OSError, EOFError, RpcError):
            errors += 1
        finally:
            sock.close()
        with lock:
            st["bytes_verified"] += got
            st["wrong_bytes"] += wrong
            st["errors"] += errors
            st["vanished" if vanish else "whole_files"] += 0 if errors else 1


def run(cfg: dict) -> dict:
    """cfg: host, port, handles {name: hex}, files {name: path}, clients, rounds, seconds,
    read_size, timeout."""
    t0 = time.monotonic()
    cfg = {**cfg, "deadline": t0 + cfg["seconds"]}
    names = sorted(cfg["files"])
    maps = {}
    for name in names:
        with open(cfg["files"][name], "rb") as f:
            maps[name] = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    st: dict[str, float] = dict.fromkeys(
        ("whole_files", "vanished", "bytes_verified", "wrong_bytes", "errors", "connect_failed"),
        0,
    )
    lock = threading.Lock()
    threads = []
    for i in range(cfg["clients"]):
        name = names[i % len(names)]
        fh = bytes.fromhex(cfg["handles"][name])
        t = threading.Thread(target=_client, args=(i, cfg, (fh, maps[name]), st, lock))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    st["seconds"] = time.monotonic() - t0
    st["MBps"] = st["bytes_verified"] / st["seconds"] / 1e6
    return st
