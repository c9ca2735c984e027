"""The supervisor: N worker processes serving one port, under one pid file.

Design notes
------------
With ``workers`` above 1, ``recovery-fs serve`` runs a :class:`Supervisor`
(a :class:`~nfsd.service.app.Service` that serves nothing itself) and N
worker processes (``nfsd.service.worker``), each a whole server with its
own GIL, loop, caches and namespace.  The supervisor owns what there is
one of: the pid file and its lock, ``status.json``, the portmapper
registration (or our own portmapper), the listening sockets, SIGHUP and
SIGTERM.  It never reads the storage and imports nothing that serves a call
(namespace, NFS procedures): a worker reports a storage it cannot read.
NFSv3 is stateless and handles derive from the storage and the
secret only, so any worker answers any call.

Sockets: each worker binds its own TCP and UDP sockets with
``SO_REUSEPORT`` (``listen_mode="reuseport"``, the default); the supervisor
holds a bound, not listening, TCP socket that keeps the port reserved while
workers come and go.  The alternative, the supervisor binding the sockets
once and every worker inheriting them (``"inherit"``;
``RECOVERY_FS_LISTEN=inherit`` selects it), was measured with
``bench/workers_spread.py`` (4 workers on this 2-core machine, load
average 1.1 and 1.7 during the two runs: noisy; connections opened one
after another, each making a NULL call and staying open; then nfsload's
random 4 KiB READs, 16 in flight a connection, 4 s):

=========================  ===========================  ===========================
per worker                 inherited listeners          SO_REUSEPORT
=========================  ===========================  ===========================
8 connections              [1, 4, 1, 2]; [1, 3, 0, 4]   [3, 1, 2, 2]; [3, 2, 0, 3]
64 connections             [13, 6, 1, 44]; [7, 0, 3,    [9, 13, 23, 19];
                           54]                          [19, 12, 17, 16]
calls, 4 connections       3 workers busy, 1 idle       3 workers busy, 1 idle
                           (both runs)                  (both runs)
calls, 8 connections       3 busy; 4 busy               3 busy; 4 busy
4-connection READ rate     27,859; 40,021 calls/s       23,685; 37,632 calls/s
8-connection READ rate     19,882; 36,655 calls/s       32,692; 36,309 calls/s
=========================  ===========================  ===========================

With inherited listeners every worker's epoll wakes for a new connection
and the first to ``accept`` takes it: when the workers are idle that is
mostly the same one (44 and 54 of 64), so the spread depends on luck and
load.  SO_REUSEPORT hashes each connection's addresses and ports to a
socket: blind to load, but even on average (at most 23 of 64); the rates
are the same within the noise.  What SO_REUSEPORT gives up: connections
waiting in the accept queue of a worker that dies are reset (the clients
reconnect, as they do for the worker's own connections).  UDP: each
worker's socket gets the datagrams hashed to it; with inherited sockets,
one socket read by every worker.

Workers: started with ``python -m nfsd.service.worker`` (a fresh
interpreter, never a ``fork`` of a process holding threads), each with a
Unix socket to the supervisor (JSON lines: ready, stats every second,
reload outcomes).  A worker that exits or is killed is replaced at once:
its control socket's end wakes the supervisor, which hands the slot to
the *spare*, a worker process started ahead (``--standby``) that has made
every import and waits for a slot's spec (the list in force then, not at
its start) and, with inherited listeners, the listening sockets
(``SCM_RIGHTS``: holding them while it imported, it kept the port bound
after a supervisor killed with SIGKILL).  A fresh interpreter took
0.5-0.6 s from the kill to serving on an idle 2-core host, most of it
imports (0.2 s, twice that without bytecode caches:
``PYTHONDONTWRITEBYTECODE``), and 1.2-1.6 s while a
client read through the other worker, past the second a killed worker
must be replaced in; the spare serves within tens of milliseconds.  A
new spare is started ``SPARE_DELAY`` later, so that its imports do not
compete with the clients reconnecting; without a spare (two workers dead
at once, or the spare itself died) a fresh worker is started as before.
The spare costs one idle process (about 30 MiB RSS, in ``status``).  A
worker that dies within ``FLAP_SECONDS`` of its start is restarted after a
growing delay (1 s to 30 s) and logged with the reason it sent (a storage
it cannot read, TLS files it cannot load), so a broken installation does
not spin and says why; a spare that dies before it is used is started again after such a
delay too.  Clients of a killed worker see their connection reset; the
Linux client and libnfs reconnect and retransmit, and any worker answers
with the same bytes.

Measured: a worker killed with SIGKILL while the Linux client reads 128
MiB was replaced in 0.02 s by the spare (0.40 s, and up to 1.24 s on a
busy host, by a fresh interpreter), one READ retransmitted, the bytes
exact (``tests/e2e/test_kernel_client.py``); libnfs's ``nfs-cat``
likewise (``tests/e2e/test_workers.py``: 1.39-1.56 s in three of four
runs without the spare, on an idle host without bytecode caches).  The
spare idles at 28.6 MiB RSS.  Throughput, nfsload on 4 connections
over loopback, 1 vs 2 workers (2 cores shared with the load generator and
with other work: load average 0.9 to 2.9, noisy; three runs each):
random 4 KiB READs, 16 in flight a connection, 28,128 / 29,288 / 28,329
calls/s with 1 worker, 47,999 / 51,911 / 51,215 with 2 (a fourth run with
2 workers, at load 2.1, made 27,533); sequential 1 MiB READs 2,335 to 2,506
MiB/s with 1 (one run 1,719), 2,589 / 2,756 / 2,875 with 2 (one 1,649).
The per-call path is unchanged (one attribute test per read for the PROXY
protocol).  Memory: a worker idles at about 31 MiB RSS, the supervisor
about 42 MiB (it builds the programs to register them with the
portmapper); caches are per worker and bounded as in a single server.

A supervisor killed with SIGKILL takes its workers with it (each sees its
control socket end and stops); a new one waits for them to let the port
go (``_port_of_our_own``: at most ``PORT_WAIT``), since a port where
another server listens must be refused, not shared (SO_REUSEPORT would
let it: half of each server's connections answered by the other).

Everything issue 7 built holds per worker:

* the exports list: SIGHUP (``recovery-fs exports reload``) makes the
  supervisor read the file (a bad file: refused, the workers are not
  asked), then every worker; the outcome written to ``status.json`` is a
  success only when every worker serving applied it, else the first error
  (or "worker N did not answer").  A worker starting then (it may have read
  the list before) is asked again once it serves, its error reported as
  late; one started later reads the list in force;
* the limits: ``max-connections`` and ``max-unvalidated`` are totals,
  shared out (``nfsd.service.limits``); the others are per connection;
* the ``mountpoint`` check is made in each worker; a refusal is logged
  once per client and reason in each worker (so at most N times);
* MOUNT's ``DUMP`` list is one for all workers (``nfsd.programs.mountlist``:
  a file per mount in the state directory's ``mounts/``, emptied at start).

Logs: every process appends whole lines to the one log file
(``nfsd.service.logline``), each naming itself (``supervisor pid P``,
``worker 2 pid P``); each runs its own registry watcher, so a change of
``appliance.debug.level`` reaches every process within about a second.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nfsd
from nfsd.programs.mountlist import MOUNTS_DIR, SharedMountList
from nfsd.rpc import Program
from nfsd.service.app import PMAP_PORT, RPCBIND_SOCKETS, Service, ServiceError
from nfsd.service.config import Config, ConfigError
from nfsd.service.state import atomic_write
from nfsd.service.tlsconfig import Loaded, tls_settings
from nfsd.service.worker import LISTINGS_DIR, config_to_json
from nfsd.transport.server import bind_listeners
from nfsd.transport.tls import RELOAD_INTERVAL, TlsConfigError
from xdr import mount3
from xdr import nfs3const as nfs3

log = logging.getLogger("recovery_fs.supervisor")

READY_TIMEOUT = 60.0
EXPORTS_SNAPSHOT = "exports.in-force"  # the list the workers read (state directory)
LISTEN_MODE = "reuseport"  # the default way workers share a port (see the notes)
FLAP_SECONDS = 2.0
FLAP_DELAY_MAX = 30.0
RELOAD_TIMEOUT = 10.0
REAP_WAIT = 0.05  # for a worker whose control socket ended to become waitable
SPARE_DELAY = 1.0  # from a spare's promotion to the start of the next (see the notes)
STOP_TIMEOUT = 10.0
PORT_WAIT = 3.0  # for a killed supervisor's workers to let the port go (~10-20 ms here)
STATUS_EVERY = 1.0  # seconds between rewrites of status.json
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class WorkerProc:
    """The supervisor's view of one worker slot."""

    index: int
    proc: subprocess.Popen[bytes] | None = None
    control: socket.socket | None = None
    buf: bytes = b""
    ready: bool = False
    started: float = 0.0
    restarts: int = 0
    delay: float = 0.0  # before the next start, after a worker that died young
    not_before: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    reload_due: bool = False  # a reload came while it was not serving: asked once it is

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def rss(self) -> int:
        """Resident bytes, 0 if gone."""
        return rss_of(self.pid) if self.pid is not None else 0


@dataclass
class Spare:
    """A worker process started ahead, waiting for a slot (see the notes)."""

    proc: subprocess.Popen[bytes]
    control: socket.socket
    started: float


def rss_of(pid: int) -> int:
    """Resident bytes of process ``pid`` (0 if it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return 0


class Supervisor(Service):
    """Runs ``config.worker_count()`` workers; see the notes."""

    def __init__(
        self,
        config: Config,
        *,
        foreground: bool = False,
        portmap_port: int = PMAP_PORT,
        rpcbind_sockets: tuple[Path, ...] = RPCBIND_SOCKETS,
        listen_mode: str | None = None,
    ) -> None:
        super().__init__(
            config,
            foreground=foreground,
            portmap_port=portmap_port,
            rpcbind_sockets=rpcbind_sockets,
        )
        # RECOVERY_FS_LISTEN=reuseport: the measured alternative (see the notes)
        self.listen_mode = listen_mode or os.environ.get("RECOVERY_FS_LISTEN", LISTEN_MODE)
        if self.listen_mode not in ("inherit", "reuseport"):
            raise ServiceError(f"RECOVERY_FS_LISTEN={self.listen_mode!r}: inherit or reuseport")
        self.count = config.worker_count()
        self.slots = [WorkerProc(i) for i in range(self.count)]
        self._listeners: list[socket.socket] = []
        self._reload_serial = 0
        self._reload_error: str | None = None
        self._replies: dict[int, dict[str, Any]] = {}
        self._next_status = 0.0
        self._tls_loaded: Loaded | None = None  # the TLS files' copy for new workers
        self._next_tls = 0.0
        self._spare: Spare | None = None
        self._spare_at = 0.0  # when the next spare may start
        self._spare_delay = 0.0  # grows while spares die before they are used
        self.log_tag = f"supervisor pid {os.getpid()}"

    # --- start -----------------------------------------------------------
    def _programs(self, secret: bytes) -> list[Program]:
        """What the workers serve, as the portmapper needs it; no namespace.

        The supervisor serves nothing: it neither reads the storage nor imports
        the NFS procedures (a worker does both, and reports a storage it cannot
        read as its start-up error)."""
        return advertised_programs(udp=self.config.udp)

    def _start_locked(self) -> None:
        cfg = self.config
        programs = self._prepare()
        self._tls_source()  # TLS files that cannot be used stop the start here, once
        self._keep_tls_loaded()
        reuse = self.listen_mode == "reuseport"
        try:
            # With SO_REUSEPORT the workers bind their own; ours is bound to
            # hold the port, never listened on (it would take a share).
            port = _port_of_our_own(cfg.bind, cfg.port, udp=cfg.udp) if reuse else cfg.port
            self._listeners = bind_listeners(cfg.bind, port, udp=not reuse, reuse_port=reuse)
        except OSError as e:
            raise ServiceError(f"cannot listen on {cfg.bind} port {cfg.port}: {e.strerror}") from e
        self.port = self._listeners[0].getsockname()[1]
        if reuse:
            # A reserved, not listening socket: connections go to the workers'.
            self._listeners[0].close()
            self._listeners = [_reserve(cfg.bind, self.port)]
        SharedMountList.reset(self.state.path / MOUNTS_DIR)
        shutil.rmtree(self.state.path / LISTINGS_DIR, ignore_errors=True)  # a previous run's
        self._snapshot_exports()
        for slot in self.slots:
            self._spawn(slot)
        self._wait_ready(time.monotonic() + READY_TIMEOUT)
        self._start_spare(time.monotonic())
        if cfg.portmap:
            self._start_portmap(programs, self.port)
        for s in self._servers:
            s.start()
        self._announce()
        log.info("%d workers: pids %s", self.count, " ".join(str(s.pid) for s in self.slots))

    def _keep_tls_loaded(self) -> None:
        """The copy of the TLS files every worker it starts falls back on
        (``nfsd.service.tlsconfig.Loaded``): taken now, once loaded."""
        settings = tls_settings(self.config)
        if settings is None:
            return
        self._tls_loaded = Loaded(settings, self.state.path)
        try:
            self._tls_loaded.take()
        except TlsConfigError as e:
            raise ConfigError(f"TLS: {e}") from e
        except OSError as e:  # the state directory's: served as before, without the copy
            self.warnings.append(
                f"cannot keep a copy of the TLS files in {self._tls_loaded.root}: {e}; a worker"
                " restarted while they do not load will not start"
            )

    def _inherited(self) -> list[int]:
        """The listening descriptors a worker inherits (none with SO_REUSEPORT)."""
        return [] if self.listen_mode == "reuseport" else [s.fileno() for s in self._listeners]

    def _spec(self, slot: WorkerProc) -> dict[str, Any]:
        """What a worker of ``slot`` is told: the configuration, its place, its sockets."""
        cfg_json = config_to_json(self.config)
        cfg_json["port"] = self.port if self.port is not None else self.config.port
        # Workers read the list the supervisor validated, never the file an
        # operator may be editing: a replaced worker serves what the others do.
        cfg_json["exports"] = str(self._exports_snapshot)
        loaded = self._tls_loaded.current if self._tls_loaded is not None else None
        return {
            "config": cfg_json,
            "index": slot.index,
            "count": self.count,
            "listeners": self._inherited(),
            "tls_loaded": str(loaded) if loaded is not None else None,
        }

    def _popen(
        self, args: list[str], control: socket.socket, listeners: list[int]
    ) -> subprocess.Popen[bytes]:
        """``python -m nfsd.service.worker ARGS``, given ``listeners`` and ``control``."""
        root = str(Path(nfsd.__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        return subprocess.Popen(
            [sys.executable, "-m", "nfsd.service.worker", *args],
            stdin=subprocess.DEVNULL,
            pass_fds=(*listeners, control.fileno()),
            env=env,
        )

    def _spawn(self, slot: WorkerProc) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        spec = self._spec(slot) | {"control": theirs.fileno()}
        try:
            proc = self._popen([json.dumps(spec)], theirs, spec["listeners"])
        except OSError as e:
            ours.close()
            slot.error = f"cannot start: {e}"
            slot.not_before = time.monotonic() + 1.0
            log.error("worker %d: cannot start: %s", slot.index, e)
            return
        finally:
            theirs.close()
        self._took(slot, proc, ours)

    def _took(self, slot: WorkerProc, proc: subprocess.Popen[bytes], ours: socket.socket) -> None:
        """``slot`` is now served by ``proc``, its control socket ``ours``."""
        ours.setblocking(False)
        slot.proc, slot.control, slot.buf, slot.ready = proc, ours, b"", False
        slot.error = None  # a failed start's, before this process: not its reason
        slot.started = time.monotonic()
        slot.stats = {}

    # --- the spare --------------------------------------------------------
    def _start_spare(self, now: float) -> None:
        """Start a spare worker (see the notes); a failure is logged and retried.

        It inherits no listening socket: it is given them with its spec.  Holding
        them while it imports, it would keep the port bound for as long after a
        supervisor killed with SIGKILL (a new one could not bind it)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            proc = self._popen(["--standby", str(theirs.fileno())], theirs, [])
        except OSError as e:
            ours.close()
            self._spare_at = now + FLAP_DELAY_MAX
            log.error("spare worker: cannot start: %s", e)
            return
        finally:
            theirs.close()
        self._spare = Spare(proc, ours, now)

    def _watch_spare(self, now: float) -> None:
        """Start the next spare when due; notice one that died unused."""
        spare = self._spare
        if spare is None:
            if now >= self._spare_at and not self._stopped:
                self._start_spare(now)
            return
        code = spare.proc.poll()
        if code is None:
            return
        spare.control.close()
        self._spare = None
        lived = now - spare.started
        self._spare_delay = _backoff(self._spare_delay, lived)
        self._spare_at = now + self._spare_delay
        log.warning("spare worker pid %d %s after %.1f s", spare.proc.pid, _ended(code), lived)

    def _promote(self, slot: WorkerProc, now: float) -> bool:
        """Hand ``slot`` to the spare, if there is one alive: whether it took it."""
        spare, self._spare = self._spare, None
        if spare is None:
            return False
        if spare.proc.poll() is None:
            line = _line({"spec": self._spec(slot)})
            try:  # the listeners (inherited ones) with the line: its first bytes
                sent = socket.send_fds(spare.control, [line], self._inherited())
                spare.control.sendall(line[sent:])
            except OSError:
                pass
            else:
                self._took(slot, spare.proc, spare.control)
                self._spare_at = now + SPARE_DELAY
                log.info("worker %d: the spare pid %d took its place", slot.index, spare.proc.pid)
                return True
        self._spare = spare  # dead, or its socket is: _watch_spare says so and starts another
        with contextlib.suppress(ProcessLookupError):
            spare.proc.kill()
        return False

    def _stop_spare(self) -> None:
        spare, self._spare = self._spare, None
        if spare is None:
            return
        with contextlib.suppress(ProcessLookupError):
            spare.proc.terminate()
        try:
            spare.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            spare.proc.kill()
            spare.proc.wait(5)
        spare.control.close()

    def _wait_ready(self, deadline: float) -> None:
        while not all(s.ready for s in self.slots):
            if time.monotonic() > deadline:
                raise ServiceError(f"the workers were not ready within {READY_TIMEOUT:g} s")
            self._pump(0.05)
            for s in self.slots:
                if s.error is not None and not s.ready:
                    raise ServiceError(f"worker {s.index}: {s.error}")
                if s.proc is not None and s.proc.poll() is not None and not s.ready:
                    self._pump(0.0)  # its last words
                    why = s.error or f"exited with status {s.proc.returncode}"
                    raise ServiceError(f"worker {s.index} {why}")

    # --- messages ---------------------------------------------------------
    def _pump(self, timeout: float) -> None:
        """Read what the workers sent within ``timeout`` and act on it."""
        socks = {s.control: s for s in self.slots if s.control is not None}
        if not socks:
            time.sleep(timeout)
            return
        readable, _, _ = select.select(list(socks), [], [], timeout)
        for sock in readable:
            slot = socks[sock]
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                self._lost(slot)
                continue
            slot.buf += chunk
            *lines, slot.buf = slot.buf.split(b"\n")
            for line in lines:
                if line.strip():
                    self._on_message(slot, json.loads(line))

    def _on_message(self, slot: WorkerProc, m: dict[str, Any]) -> None:
        if "stats" in m:
            slot.stats = m["stats"]
        elif m.get("ready"):
            slot.ready = True
            slot.error = None
            self._next_status = 0.0  # a replaced worker shows at once
            if slot.reload_due:
                # It may have read the list before the reload wrote it: read again.
                slot.reload_due = False
                self._ask_reload(slot, self._reload_serial)
            for w in m.get("warnings", []):
                if w not in self.warnings:
                    self.warnings.append(w)
        elif "reload" in m:
            self._replies[slot.index] = m
            if m.get("error") and m.get("reload") == self._reload_serial:
                self._reload_error = f"worker {slot.index}: {m['error']}"  # a late one's too
        elif "error" in m:
            slot.error = str(m["error"])

    def _lost(self, slot: WorkerProc) -> None:
        """The control socket ended: the worker is gone (or going)."""
        if slot.control is not None:
            slot.control.close()
            slot.control = None

    # --- running ----------------------------------------------------------
    def _idle(self, timeout: float) -> bool:
        """Between ticks: woken at once by a worker's message or end (a worker
        killed is replaced without waiting for the tick's 0.1 s)."""
        self._pump(timeout)
        return self._stop_requested.is_set()

    def _tick(self) -> None:
        self._pump(0.0)
        now = time.monotonic()
        for slot in self.slots:
            if slot.proc is not None and slot.control is None and slot.proc.poll() is None:
                # Its control socket ended: the process is exiting (the socket
                # closes a moment before the kernel makes it waitable).
                with contextlib.suppress(subprocess.TimeoutExpired):
                    slot.proc.wait(REAP_WAIT)
            if slot.proc is None or slot.proc.poll() is not None:
                self._replace(slot, now)
        self._watch_spare(now)
        if self._tls_loaded is not None and now >= self._next_tls:
            self._next_tls = now + RELOAD_INTERVAL
            self._tls_loaded.refresh()
        if now >= self._next_status:
            # The workers' counters arrive every second: status.json follows.
            self._next_status = now + STATUS_EVERY
            with contextlib.suppress(OSError):
                self.state.write_status(self.status())

    def _replace(self, slot: WorkerProc, now: float) -> None:
        """Start a worker in place of one that is gone (see the notes)."""
        if slot.proc is not None:
            lived = now - slot.started
            slot.delay = _backoff(slot.delay, lived)
            slot.not_before = now + slot.delay
            self._pump(0.0)  # its last words, if it said why
            log.warning(
                "worker %d pid %d %s after %.1f s%s: %s",
                slot.index,
                slot.proc.pid,
                _ended(slot.proc.returncode),
                lived,
                f" ({slot.error})" if slot.error and not slot.ready else "",
                f"restarting in {slot.delay:.0f} s" if slot.delay else "restarting",
            )
            slot.error = None
            self._lost(slot)
            slot.proc = None
            slot.ready = False
            slot.restarts += 1
        if now < slot.not_before:
            return
        if not self._promote(slot, now):
            self._spawn(slot)

    def reload_exports(self) -> str | None:
        """The supervisor's check of the file, then every worker's reload."""
        if self.access is None:
            return "not started"
        self.reload_attempts += 1
        error = self.access.reload()
        if error is None:
            self._snapshot_exports()
            error = self._reload_workers()
        self._reload_error = error
        if error is not None:
            log.warning("exports reload: %s", error)
        self.state.write_status(self.status())
        return error

    @property
    def _exports_snapshot(self) -> Path:
        return self.state.path / EXPORTS_SNAPSHOT

    def _snapshot_exports(self) -> None:
        """Write the list in force (as ``exportfs -v`` prints it, which parses
        back to the same list) for the workers to read."""
        assert self.access is not None
        atomic_write(self._exports_snapshot, self.access.table.show().encode(), mode=0o600)

    def _reload_workers(self) -> str | None:
        self._reload_serial += 1
        serial = self._reload_serial
        self._replies = {}
        asked = []
        for slot in self.slots:
            if slot.control is None or not slot.ready:
                slot.reload_due = True  # starting, or to start: asked once it serves
                continue
            if self._ask_reload(slot, serial):
                asked.append(slot)
        deadline = time.monotonic() + RELOAD_TIMEOUT
        while time.monotonic() < deadline and not all(
            self._replies.get(s.index, {}).get("reload") == serial for s in asked
        ):
            self._pump(0.05)
        for slot in self.slots:
            reply = self._replies.get(slot.index)
            if slot not in asked:
                continue  # reload_due: it reads the list in force as it starts serving
            if reply is None or reply.get("reload") != serial:
                return f"worker {slot.index} (pid {slot.pid}) did not answer"
            if reply.get("error"):
                return f"worker {slot.index}: {reply['error']}"
        return None

    def _ask_reload(self, slot: WorkerProc, serial: int) -> bool:
        """Tell ``slot``'s worker to read the list again: whether it was told."""
        if slot.control is None:
            return False
        try:
            slot.control.sendall(_line({"reload": serial}))
        except OSError:
            return False
        return True

    def status(self) -> dict[str, Any]:
        st = super().status()
        workers = []
        totals: dict[str, int] = {"connections": 0, "calls": 0, "accepted": 0, "unvalidated": 0}
        for slot in self.slots:
            row: dict[str, Any] = {
                "index": slot.index,
                "pid": slot.pid,
                "ready": slot.ready,
                "restarts": slot.restarts,
                "rss": slot.rss(),
            }
            for key in totals:
                value = slot.stats.get(key)
                row[key] = value
                totals[key] += int(value or 0)
            workers.append(row)
        st["workers"] = workers
        sp = self._spare
        st["spare"] = None if sp is None else {"pid": sp.proc.pid, "rss": rss_of(sp.proc.pid)}
        st["listen_mode"] = self.listen_mode
        st["transport"] = totals
        st["rss_total"] = (
            rss_of(os.getpid()) + sum(w["rss"] for w in workers) + (st["spare"] or {}).get("rss", 0)
        )
        if st.get("exports") is not None and self._reload_error is not None:
            st["exports"]["error"] = self._reload_error
        return st

    # --- stop -------------------------------------------------------------
    def stop(self) -> None:
        if self._stopped:
            return
        self._stop_workers()
        if self._pid_lock is not None:  # ours, not another server's
            SharedMountList.discard(self.state.path / MOUNTS_DIR)
            shutil.rmtree(self.state.path / LISTINGS_DIR, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                self._exports_snapshot.unlink()
            if self._tls_loaded is not None:
                self._tls_loaded.discard()
        for s in self._listeners:
            s.close()
        self._listeners = []
        super().stop()

    def _stop_workers(self) -> None:
        self._stop_spare()
        procs = [s.proc for s in self.slots if s.proc is not None]
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker pid %d ignored SIGTERM: killed", p.pid)
                p.kill()
                p.wait(5)
        for slot in self.slots:
            self._lost(slot)
            slot.proc = None


def _line(message: dict[str, Any]) -> bytes:
    """One message to a worker: a JSON line (``nfsd.service.worker``'s notes)."""
    return json.dumps(message).encode() + b"\n"


def _backoff(delay: float, lived: float) -> float:
    """The delay before starting again a process that ended after ``lived``
    seconds, ``delay`` the one before: growing while it dies young (see the notes)."""
    return min(FLAP_DELAY_MAX, max(1.0, delay * 2)) if lived < FLAP_SECONDS else 0.0


def _ended(code: int) -> str:
    """How a process ended, from its return code."""
    return f"killed by signal {-code}" if code < 0 else f"exited with status {code}"


def advertised_programs(*, udp: bool) -> list[Program]:
    """MOUNT and NFS as ``nfsd.programs.build_programs`` makes them, reduced to
    what a portmapper registers (number, versions, UDP), with no procedures."""
    return [
        Program(number=mount3.MOUNT_PROGRAM, name="MOUNT", versions={3: {}}),
        Program(number=nfs3.NFS_PROGRAM, name="NFS", versions={3: {}}, udp=udp),
    ]


def _port_of_our_own(host: str, port: int, *, udp: bool) -> int:
    """``port`` (or a free one for 0) once no other server listens there.

    SO_REUSEPORT lets any process of the same user bind a port its workers
    listen on: a second server started on the port of a running one would
    share it and take part of its connections, each answered with the other's
    secret, exports and sessions (STALE, refused MNTs).  So the port is first
    bound as a plain server binds it (SO_REUSEADDR only: a listener there, or a
    UDP socket with ``--udp``, makes that EADDRINUSE), never listened on, then
    let go.  The workers of a supervisor killed by SIGKILL close their listeners
    within :data:`PORT_WAIT` (they stop once its control socket ends): a restart
    waits for them, and a port still taken after that is another server's."""
    deadline = time.monotonic() + PORT_WAIT
    while True:
        try:
            probe = bind_listeners(host, port, udp=udp, listen=False)
        except OSError as e:
            if e.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
            continue
        bound = probe[0].getsockname()[1]
        for s in probe:
            s.close()
        return bound


def _reserve(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``port`` with SO_REUSEPORT, not listening: it
    keeps the port ours while workers come and go, and takes no connection."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((host, port))
    return s
