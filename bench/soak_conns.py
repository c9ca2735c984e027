"""Loads 2 and 4: many connections that do little (trickle, idle, flood).

``trickle_idle``: ``trickle`` connections each send a NULL call one byte
per ``interval`` (a record takes longer than a server's record deadline of
30 s to arrive), and ``idle`` connections send nothing.  A connection the
server closes is opened again after ``reconnect_delay``, so the pressure
holds for the whole load; how long each lived before the server closed it
is what shows the server's limits at work (64 unvalidated, oldest first;
record deadline; idle timeout).

``flood``: opens connections as fast as it can, up to this process's own
descriptor limit (raised to the hard limit) or ``max``, each sending a NULL
call once connected, holds them ``hold`` seconds, then resets them all;
``rounds`` times.  It counts what the server did with them: answered,
refused, closed, or left pending in the listen backlog.

Both stop by themselves (``seconds``) and close every socket with a RST,
so no TIME_WAIT is left to exhaust the namespace's ports.
"""

from __future__ import annotations

import contextlib
import errno
import resource
import selectors
import socket
import statistics
import struct
import time
from typing import Any

from soak_rpc import NFS_PROGRAM, NFS_V3, NULL, call, record

LINGER_RST = struct.pack("ii", 1, 0)


def _nb_connect(host: str, port: int) -> socket.socket:
    """A non-blocking socket with its connect under way (OSError for EMFILE and the like)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    err = s.connect_ex((host, port))
    if err not in (0, errno.EINPROGRESS):
        s.close()
        raise OSError(err, "connect")
    return s


def reset(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
    s.close()


class _Conn:
    __slots__ = ("born", "connected", "kind", "payload", "pos", "sock")

    def __init__(self, kind: str, sock: socket.socket, payload: bytes) -> None:
        self.kind, self.sock, self.payload = kind, sock, payload
        self.born = time.monotonic()
        self.connected = False
        self.pos = 0


def raise_nofile() -> int:
    """Soft RLIMIT_NOFILE raised to the hard limit (never beyond it); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def trickle_idle(cfg: dict) -> dict:
    """cfg: host, port, trickle, idle, seconds, interval, reconnect_delay."""
    raise_nofile()
    t0 = time.monotonic()
    deadline = t0 + cfg["seconds"]
    interval, delay = cfg.get("interval", 0.5), cfg.get("reconnect_delay", 1.0)
    host, port = cfg["host"], cfg["port"]
    sel = selectors.DefaultSelector()
    kinds = ("trickle", "idle")
    st: dict[str, dict[str, Any]] = {
        k: dict.fromkeys(("opened", "connect_failed", "closed_by_server", "replies"), 0)
        for k in kinds
    }
    lifetimes: dict[str, list[float]] = {k: [] for k in kinds}
    todo: list[tuple[float, str]] = [(t0, "trickle")] * cfg["trickle"] + [(t0, "idle")] * cfg[
        "idle"
    ]
    xid = 0x7000_0000

    def gone(c: _Conn, by_server: bool) -> None:
        sel.unregister(c.sock)
        reset(c.sock)
        if by_server:
            st[c.kind]["closed_by_server"] += 1
            lifetimes[c.kind].append(time.monotonic() - c.born)
        else:
            st[c.kind]["connect_failed"] += 1
        todo.append((time.monotonic() + delay, c.kind))

    next_tick = t0
    while time.monotonic() < deadline:
        now = time.monotonic()
        due = [k for at, k in todo if at <= now]
        todo[:] = [(at, k) for at, k in todo if at > now]
        for kind in due:
            xid += 1
            try:
                s = _nb_connect(host, port)
            except OSError:
                st[kind]["connect_failed"] += 1
                todo.append((now + delay, kind))
                continue
            payload = record(call(xid, NFS_PROGRAM, NFS_V3, NULL)) if kind == "trickle" else b""
            c = _Conn(kind, s, payload)
            sel.register(s, selectors.EVENT_WRITE, c)
        for key, _mask in sel.select(timeout=min(0.05, max(0.0, next_tick - now))):
            c = key.data
            if not c.connected:
                if c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    gone(c, by_server=False)
                    continue
                c.connected = True
                st[c.kind]["opened"] += 1
                sel.modify(c.sock, selectors.EVENT_READ, c)
                continue
            try:
                data = c.sock.recv(1 << 16)
            except OSError:
                data = b""
            if data:
                st[c.kind]["replies"] += 1
            else:
                gone(c, by_server=True)
        if time.monotonic() >= next_tick:
            next_tick += interval
            for key in list(sel.get_map().values()):
                c = key.data
                if c.kind != "trickle" or not c.connected:
                    continue
                try:
                    c.sock.send(c.payload[c.pos % len(c.payload) : c.pos % len(c.payload) + 1])
                    c.pos += 1
                except BlockingIOError:
                    pass
                except OSError:
                    gone(c, by_server=True)
    for key in list(sel.get_map().values()):
        c = key.data
        if c.connected:
            st[c.kind]["open_at_end"] = st[c.kind].get("open_at_end", 0) + 1
        reset(c.sock)
    for k in kinds:
        life = lifetimes[k]
        st[k]["lifetime_median_s"] = statistics.median(life) if life else None
        st[k]["lifetime_max_s"] = max(life) if life else None
        st[k].setdefault("open_at_end", 0)
    return {"seconds": time.monotonic() - t0, **st}


def flood(cfg: dict) -> dict:
    """cfg: host, port, max, hold, rounds, seconds."""
    hard = raise_nofile()
    t0 = time.monotonic()
    deadline = t0 + cfg["seconds"]
    target = min(cfg["max"], hard - 64)
    null = record(call(0x0F100D, NFS_PROGRAM, NFS_V3, NULL))
    totals = dict.fromkeys(
        ("attempted", "established", "answered", "refused", "closed_by_server", "pending"), 0
    )
    totals["emfile"] = 0
    rounds = []
    for _ in range(cfg["rounds"]):
        if time.monotonic() >= deadline:
            break
        sel = selectors.DefaultSelector()
        r = dict.fromkeys(totals, 0)
        socks: list[socket.socket] = []
        while len(socks) < target and time.monotonic() < deadline:
            try:
                s = _nb_connect(cfg["host"], cfg["port"])
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE):
                    r["emfile"] += 1
                    break
                r["refused"] += 1
                continue
            socks.append(s)
            sel.register(s, selectors.EVENT_WRITE, "connecting")
        r["attempted"] = len(socks) + r["refused"]
        end = min(deadline, time.monotonic() + cfg["hold"])
        while time.monotonic() < end:
            for key, _mask in sel.select(timeout=0.05):
                s = key.fileobj  # type: ignore[assignment]
                if key.data == "connecting":
                    if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        r["refused"] += 1
                        sel.unregister(s)
                        continue
                    r["established"] += 1
                    with contextlib.suppress(OSError):
                        s.send(null)
                    sel.modify(s, selectors.EVENT_READ, "open")
                    continue
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if data and key.data == "open":
                    r["answered"] += 1
                    sel.modify(s, selectors.EVENT_READ, "answered")
                elif not data:
                    r["closed_by_server"] += 1
                    sel.unregister(s)
        r["pending"] = sum(1 for k in sel.get_map().values() if k.data == "connecting")
        for s in socks:
            reset(s)
        sel.close()
        rounds.append(r)
        for k in totals:
            totals[k] += r[k]
    return {"seconds": time.monotonic() - t0, "target": target, "rounds": rounds, **totals}
