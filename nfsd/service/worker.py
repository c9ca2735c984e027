"""One worker process of a supervised server (``python -m nfsd.service.worker``).

Design notes
------------
A worker is a :class:`~nfsd.service.app.Service` without the state
directory's duties (pid lock, ``status.json``, portmapper: the supervisor's,
``nfsd.service.supervisor``): it builds its own exports list, namespace,
handles and programs, and serves them on the listeners it inherited (or
binds its own with ``SO_REUSEPORT``).  Caches are per process and bounded
as in a single server; the READ buffers (1 MiB each, the larger part of a
busy worker's memory) are shared out like ``max-connections``
(``nfsd.service.limits``): N workers hold at most what one server would.

It talks to its supervisor over one Unix stream socket, a JSON object a
line each way.  A spare (``--standby FD``, :func:`standby`) waits for
``{"spec": {...}}``, the slot it takes over, then is a worker like any other.

==================================  ========================================
worker → supervisor                 when
==================================  ========================================
``{"ready": true, "warnings"}``     serving
``{"error": "..."}``                start-up failed (then it exits)
``{"stats": {...}}``                every ``STATS_INTERVAL``: the transport's
                                    counters (connections, calls, ...)
``{"reload": id, "error", "gen"}``  after a ``{"reload": id}``: the outcome
==================================  ========================================

The socket's end (the supervisor died, even by SIGKILL) stops the worker:
no worker outlives its supervisor.  SIGTERM stops it gracefully; SIGINT and
SIGHUP are the supervisor's (a Ctrl-C reaches the whole process group).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import os
import select
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from nfsd.programs import READ_BUFFERS
from nfsd.programs.mountlist import MOUNTS_DIR, SharedMountList
from nfsd.service.app import Service
from nfsd.service.config import Config
from nfsd.service.limits import limits_for, share
from nfsd.service.logsetup import LevelWatcher

STATS_INTERVAL = 1.0
LISTINGS_DIR = "listings"  # large listings the workers share (state directory; merge.shared)
PATH_FIELDS = tuple(f.name for f in dataclasses.fields(Config) if "Path" in str(f.type))


def config_to_json(cfg: Config) -> dict[str, Any]:
    """``cfg`` as JSON values (what the supervisor passes to a worker)."""
    out = dataclasses.asdict(cfg)
    for name, value in out.items():
        if isinstance(value, Path):
            out[name] = str(value)
        elif isinstance(value, tuple):
            out[name] = list(value)
    return out


def config_from_json(data: dict[str, Any]) -> Config:
    """The inverse of :func:`config_to_json`."""
    values = dict(data)
    for name, value in values.items():
        if name in PATH_FIELDS and value is not None:
            values[name] = Path(value)
        elif isinstance(value, list):
            values[name] = tuple(value)
    return Config(**values)


class Worker(Service):
    """The server of one worker process: no pid lock, no status file."""

    def __init__(self, config: Config, index: int, count: int, listeners: list[int]) -> None:
        super().__init__(config)
        self.index = index
        self.count = count
        self.listeners = listeners  # inherited descriptors; empty: SO_REUSEPORT
        self.log_tag = f"worker {index} pid {os.getpid()}"
        self.mount_list = SharedMountList(self.state.path / MOUNTS_DIR)
        self.read_buffers = share(READ_BUFFERS, index, count)
        self.shared_listings = self.state.path / LISTINGS_DIR

    def start(self) -> None:
        try:
            self._serve()
        except BaseException:
            self.stop()
            raise

    def _serve(self) -> None:
        cfg = self.config
        programs = self._prepare()
        server = self._nfs_server(programs, limits_for(cfg, self.index, self.count))
        if self.listeners:
            for fd in self.listeners:
                server.adopt(socket.socket(fileno=fd))
            # Every worker wakes for a new connection on a shared listener;
            # taking one each time lets the idle ones take the next.
            server.accept_batch = 1
            self.port = cfg.port
        else:
            self.port = server.listen(cfg.bind, cfg.port, reuse_port=True)
        server.start()
        assert self._logs is not None
        self._watcher = LevelWatcher(self.registry, self._logs)
        self._watcher.start()
        self.started_at = time.time()

    def stats(self) -> dict[str, object]:
        return self._servers[0].stats() if self._servers else {}

    def reload(self) -> tuple[str | None, int]:
        """Read the exports file again: (error or None, generation)."""
        assert self.access is not None
        error = self.access.reload()
        return error, self.access.generation


class Channel:
    """The worker's end of the control socket: JSON lines."""

    def __init__(self, sock: socket.socket, pending: bytes = b"") -> None:
        self.sock = sock
        self._buf = pending  # received already, not yet read as lines

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(message).encode() + b"\n")

    def receive(self, timeout: float) -> list[dict[str, Any]] | None:
        """Messages that came within ``timeout``; None once the peer is gone."""
        readable, _, _ = select.select([self.sock], [], [], timeout)
        if not readable:
            return []
        try:
            chunk = self.sock.recv(65536)
        except OSError:
            return None
        if not chunk:
            return None
        self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]


def serve(spec: dict[str, Any], channel: Channel | None = None) -> int:
    """Run one worker until its supervisor goes or SIGTERM; the exit code.
    ``channel``: the control socket's, when a standby already reads it."""
    stopping = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if channel is None:
        channel = Channel(socket.socket(fileno=spec["control"]))
    worker = Worker(
        config_from_json(spec["config"]), spec["index"], spec["count"], spec["listeners"]
    )
    if spec.get("tls_loaded"):
        worker.tls_loaded = Path(spec["tls_loaded"])
    try:
        worker.start()
    except Exception as e:
        with contextlib.suppress(OSError):
            channel.send({"error": str(e) or type(e).__name__})
        return 1
    # What start-up built (modules, programs, namespace) lives as long as the
    # worker: out of the collector's reach, a full collection during a large
    # listing skips it (first listing of 10,000, median 130-134 -> 113-115 ms).
    gc.freeze()
    try:
        channel.send({"ready": True, "pid": os.getpid(), "warnings": worker.warnings})
        next_stats = 0.0
        while not stopping:
            now = time.monotonic()
            if now >= next_stats:
                next_stats = now + STATS_INTERVAL
                channel.send({"stats": worker.stats()})
            messages = channel.receive(max(0.0, min(0.2, next_stats - now)))
            if messages is None:
                break  # the supervisor is gone
            for m in messages:
                if "reload" in m:
                    error, generation = worker.reload()
                    channel.send({"reload": m["reload"], "error": error, "generation": generation})
                elif m.get("stop"):
                    stopping = True
    except OSError:
        pass  # the control socket broke: the supervisor is gone
    finally:
        worker.stop()
    return 0


def standby(control: int) -> int:
    """A spare worker (``--standby FD``): everything a worker imports loaded, then
    wait for the supervisor to give it a slot's spec (and, with inherited
    listeners, their descriptors: ``SCM_RIGHTS``) and serve it (the exit code), or
    to go (0).

    Most of a fresh worker's start is its imports (0.2-0.4 s idle, more on a busy
    host or without bytecode caches): the spare has made them already, so a
    worker killed is replaced in milliseconds (``nfsd.service.supervisor``).  It
    reads nothing of the storage, the state directory or the exports until it is
    given its spec: what it then serves is what the supervisor has in force."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor's, as a worker's
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    import nfsd.service.serving  # noqa: F401, PLC0415  (what Service._programs imports)

    sock = socket.socket(fileno=control)
    buf, fds = b"", list[int]()
    while b"\n" not in buf:
        try:
            chunk, got, _, _ = socket.recv_fds(sock, 65536, 16, socket.MSG_CMSG_CLOEXEC)
        except OSError:
            return 0
        if not chunk:
            return 0  # the supervisor is gone
        buf, fds = buf + chunk, fds + got
    line, _, rest = buf.partition(b"\n")
    # The listeners as they came (their numbers here), in the supervisor's order.
    spec = dict(json.loads(line)["spec"], control=control, listeners=fds)
    return serve(spec, Channel(sock, rest))


def main() -> None:
    if sys.argv[1] == "--standby":
        sys.exit(standby(int(sys.argv[2])))
    sys.exit(serve(json.loads(sys.argv[1])))


if __name__ == "__main__":
    main()
