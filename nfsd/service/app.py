"""The service: one configured server, from checks to a graceful stop.

Design notes
------------
:meth:`Service.start` does, in order, and undoes on any failure:

====  ==================================================================
step  what
====  ==================================================================
1     check the storage (exists, a readable directory, holds neither the
      state directory nor the log file): ``ConfigError``
2     state directory (0700), then the pid file's lock: ``AlreadyRunning``
3     logging at the registry's debug level
4     the exports list (``nfsd.programs.access``: a bad file is ``ConfigError``);
      the secret; the namespace (``merge.build_namespace``); the programs
      (``nfsd.programs.build_programs``)
5     one ``RpcServer`` for MOUNT and NFS on ``port``, TCP and UDP
6     the portmapper (below)
7     the registry watcher; ``status.json``
====  ==================================================================

The portmapper, unless ``--no-portmap``:

* a portmapper answers on 127.0.0.1:111 (rpcbind, or another server's):
  register every version of MOUNT and NFS, TCP and UDP, with
  ``PMAPPROC_SET`` (``RPCBPROC_SET`` for tcp6/udp6), after an ``UNSET`` of
  what a crashed run may have left, and ``UNSET`` them at stop.  rpcbind's
  local socket (``/run/rpcbind.sock``) is used when present: rpcbind may
  refuse registrations that come over the network, even from loopback.
* none answers: serve ``nfsd.programs.portmap`` on port 111 (a second ``RpcServer``).
* either failing (a refusal, port 111 not ours to bind) is a warning, not an
  error: clients that give ``port=`` and ``mountport=`` still mount.

:meth:`Service.run` adds SIGTERM/SIGINT → graceful stop, and SIGHUP →
:meth:`Service.reload_exports`, for the CLI.  Every reload, applied or not,
is written to ``status.json`` (``exports``: generation, attempts, error,
the effective list), which is how ``recovery-fs exports reload`` learns
the outcome.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from exports import ExportsError
from nfsd.programs import READ_BUFFERS
from nfsd.programs.access import AccessControl
from nfsd.programs.mountlist import MountList
from nfsd.programs.portmap import NETIDS, build_portmap, netids_for, uaddr
from nfsd.rpc import Dispatcher, Program
from nfsd.service.config import Config, ConfigError
from nfsd.service.limits import limits_for
from nfsd.service.logsetup import LevelWatcher, LogSetup
from nfsd.service.registry import DEBUG_LEVEL, Registry
from nfsd.service.secrets import load_secret
from nfsd.service.state import PidLock, StateDir, StateError
from nfsd.service.tlsconfig import describe as describe_tls
from nfsd.service.tlsconfig import tls_source
from nfsd.transport.rpcclient import RpcClient, RpcError
from nfsd.transport.server import Limits, RpcServer, cpu_count
from nfsd.transport.tls import ContextSource
from xdr import portmap as pm
from xdr.base import XdrError
from xdr.portmap import PortmapPacker, PortmapUnpacker

log = logging.getLogger("recovery_fs.service")

PMAP_PORT = pm.PMAP_PORT
RPCBIND_SOCKETS = (Path("/run/rpcbind.sock"), Path("/var/run/rpcbind.sock"))
PROBE_TIMEOUT = 2.0
STATUS_INTERVAL = 5.0  # seconds between rewrites of status.json (its counters)


class ServiceError(Exception):
    """The server could not start (the message says why, for the operator)."""


class HostPortmapper:
    """Registration of the server's programs with the host's portmapper."""

    def __init__(self, tcp_port: int, sockets: tuple[Path, ...]) -> None:
        self.tcp_port = tcp_port
        self.socket = next((s for s in sockets if s.exists()), None)
        self.registered: list[tuple[int, int, str]] = []

    def _client(self) -> RpcClient:
        if self.socket is not None:
            return RpcClient(str(self.socket), transport="unix", timeout=PROBE_TIMEOUT)
        # From a reserved port: a portmapper takes SET and UNSET from a privileged
        # process only (nfsd.programs.portmap.may_register, rpcbind).
        return RpcClient("127.0.0.1", self.tcp_port, timeout=PROBE_TIMEOUT, reserved=True)

    @staticmethod
    def answers(tcp_port: int) -> bool:
        """Whether a portmapper answers NULL on 127.0.0.1:``tcp_port``."""
        try:
            with RpcClient("127.0.0.1", tcp_port, timeout=PROBE_TIMEOUT) as c:
                return c.call(pm.PMAP_PROG, pm.PMAP_VERS, pm.PMAPPROC_NULL).ok
        except RpcError:
            return False

    def _call(self, c: RpcClient, vers: int, proc: int, args: bytes) -> bool:
        """A SET or UNSET; its boolean result (False for any other answer)."""
        result = c.call(pm.PMAP_PROG, vers, proc, args)
        try:
            return result.ok and PortmapUnpacker(result.body).unpack_bool()
        except XdrError:
            return False

    def _args(self, prog: int, vers: int, netid: str, bind: str, port: int) -> tuple[int, bytes]:
        """(portmapper version, arguments) of a SET or UNSET for one netid.

        IPv4 netids go through port mapper v2, IPv6 ones through rpcbind v3;
        SET is procedure 1 and UNSET 2 in both.
        """
        p = PortmapPacker()
        ip_proto, family = NETIDS[netid]
        if family == 4:
            p.pack_mapping(pm.mapping(prog, vers, ip_proto, port))
            return pm.PMAP_VERS, p.get_buffer()
        addr = uaddr(bind, port).encode()
        p.pack_rpcb(pm.rpcb(prog, vers, netid.encode(), addr, b"recovery-fs"))
        return pm.RPCBVERS, p.get_buffer()

    def register(self, programs: list[Program], bind: str, port: int) -> list[str]:
        """SET every (program, version, netid); the warnings to report.

        Every UNSET comes first: a v2 UNSET removes TCP and UDP at once.
        """
        warnings: list[str] = []
        where = self.socket or f"127.0.0.1:{self.tcp_port}"
        rows = [
            (prog, vers, netid, *self._args(prog.number, vers, netid, bind, port))
            for prog in programs
            for vers in prog.versions
            for netid in netids_for(bind)
            if prog.udp or not netid.startswith("udp")
        ]
        try:
            with self._client() as c:
                for _, _, _, v, args in rows:
                    self._call(c, v, pm.PMAPPROC_UNSET, args)  # what a crashed run left
                for prog, vers, netid, v, args in rows:
                    if self._call(c, v, pm.PMAPPROC_SET, args):
                        self.registered.append((prog.number, vers, netid))
                    else:
                        warnings.append(
                            f"the portmapper at {where} refused to register "
                            f"{prog.name} v{vers} {netid}"
                        )
        except RpcError as e:
            warnings.append(f"cannot register with the portmapper at {where}: {e}")
        return warnings

    def unregister(self, bind: str, port: int) -> None:
        try:
            with self._client() as c:
                for prog, vers, netid in self.registered:
                    v, args = self._args(prog, vers, netid, bind, port)
                    self._call(c, v, pm.PMAPPROC_UNSET, args)
        except RpcError as e:
            log.warning("cannot unregister from the portmapper: %s", e)
        self.registered = []


class Service:
    """One server: MOUNT + NFS on one port, the portmapper, logs and state.

    ``portmap_port`` and ``rpcbind_sockets`` are where the host's portmapper
    is looked for (and where ours listens); tests move them.
    """

    def __init__(
        self,
        config: Config,
        *,
        foreground: bool = False,
        portmap_port: int = PMAP_PORT,
        rpcbind_sockets: tuple[Path, ...] = RPCBIND_SOCKETS,
    ) -> None:
        self.config = config
        self.foreground = foreground
        self.portmap_port = portmap_port
        self.rpcbind_sockets = rpcbind_sockets
        self.state = StateDir(config.state_dir)
        self.registry = Registry(self.state.registry_path)
        self.warnings: list[str] = []
        self.port: int | None = None
        self.portmap_mode = "off"
        self.started_at: float | None = None
        self._pid_lock: PidLock | None = None
        self._logs: LogSetup | None = None
        self._watcher: LevelWatcher | None = None
        self._servers: list[RpcServer] = []
        self._host_portmapper: HostPortmapper | None = None
        self._own_portmap_port: int | None = None
        self._stop_requested = threading.Event()
        self._reload_requested = threading.Event()
        self._stopped = False
        self.access: AccessControl | None = None
        self.reload_attempts = 0
        self.tls: ContextSource | None = None  # RPC-with-TLS of every listener
        self.tls_loaded: Path | None = None  # a worker's: the supervisor's copy of the files
        self.log_tag: str | None = None  # names the process on each log line
        self.mount_list: MountList | None = None  # DUMP's list; None: this process's own
        self.read_buffers = READ_BUFFERS  # this process's share of the READ buffers
        self.shared_listings: Path | None = None  # a worker's: listings shared (merge.shared)

    # --- start -----------------------------------------------------------
    def start(self) -> None:
        """Bring the server up (see the notes); on failure, undo and raise."""
        cfg = self.config
        cfg.check_storage()
        self.state.ensure()
        lock = self.state.pid_lock()
        lock.acquire()
        self._pid_lock = lock
        try:
            self._start_locked()
        except BaseException:
            self.stop()
            raise

    def _start_locked(self) -> None:
        cfg = self.config
        programs = self._prepare()
        nfs = self._nfs_server(programs, limits_for(cfg))
        try:
            self.port = nfs.listen(cfg.bind, cfg.port)
        except OSError as e:
            raise ServiceError(f"cannot listen on {cfg.bind} port {cfg.port}: {e.strerror}") from e
        if cfg.portmap:
            self._start_portmap(programs, self.port)
        for s in self._servers:
            s.start()
        self._announce()

    def _nfs_server(self, programs: list[Program], limits: Limits) -> RpcServer:
        """The RpcServer of MOUNT and NFS (not yet listening), kept for stop."""
        server = RpcServer(
            Dispatcher(programs),
            name="nfs",
            workers=cpu_count(),
            limits=limits,
            proxy_from=self.config.proxy_from,
            tls=self._tls_source(),
        )
        if self.access is not None:  # a host taken off the lists loses its slots' hold
            self.access.changed.append(server.exports_changed)
        self._servers.append(server)
        return server

    def _prepare(self) -> list[Program]:
        """Steps 3 and 4 (logs, exports, secret, namespace): the programs."""
        cfg = self.config
        self._raise_fd_limit()
        try:
            level = self.registry.get(DEBUG_LEVEL)
        except StateError as e:
            self.warnings.append(f"{e}; debug level 0")
            level = 0
        self._logs = LogSetup(
            cfg.log_file, debug_level=level, stderr=self.foreground, tag=self.log_tag
        )
        if self._logs.file_error:
            self.warnings.append(self._logs.file_error)
        try:
            self.access = AccessControl(cfg.exports_file(), cfg.export_path, cfg.storage)
        except ExportsError as e:
            raise ConfigError(f"exports: {e}") from e
        except OSError as e:
            raise ConfigError(f"cannot read the exports file: {e}") from e
        for w in self.access.table.warnings:
            self.warnings.append(w)
        return self._programs(load_secret(cfg.secret_file, self.state))

    def _programs(self, secret: bytes) -> list[Program]:
        """The rest of step 4: the namespace and the programs that serve it.

        ``nfsd.service.serving`` is imported here, not at the top: a supervisor
        (``nfsd.service.supervisor``) never serves, and what serving imports is
        about 10 MB of a process.
        """
        from nfsd.service import serving  # noqa: PLC0415  (see the docstring)

        assert self.access is not None
        try:
            return serving.serving_programs(
                self.config,
                secret,
                self.access,
                self.mount_list,
                read_buffers=self.read_buffers,
                shared_listings=self.shared_listings,
            )
        except serving.StorageUnreadable as e:
            raise ServiceError(str(e)) from e

    def _announce(self) -> None:
        """Step 7, and the start-up lines of the log."""
        cfg = self.config
        assert self._logs is not None and self.access is not None
        self._watcher = LevelWatcher(self.registry, self._logs)
        self._watcher.start()
        self.started_at = time.time()
        self.state.write_status(self.status())
        for w in self.warnings:
            log.warning("%s", w)
        log.info(
            "serving %s from %s on %s port %d (portmap: %s, NFS over UDP: %s)",
            cfg.export_path,
            cfg.storage,
            cfg.bind,
            self.port,
            self.portmap_mode,
            "on" if cfg.udp else "off",
        )
        log.log(
            logging.WARNING if self.access.source is None else logging.INFO,
            "%s",
            self.access.describe(),
        )
        for line in self.access.table.show().splitlines():
            log.info("export: %s", line)

    def _tls_source(self) -> ContextSource | None:
        """The TLS context of every listener, loaded once (``nfsd.service.tlsconfig``):
        files that cannot be used stop the start with a ConfigError."""
        if self.tls is None and self.config.tls_cert is not None:
            self.tls = tls_source(self.config, self.tls_loaded)
            log.info("RPC-with-TLS offered (%s)", describe_tls(self.config))
        return self.tls

    def _raise_fd_limit(self) -> None:
        """Soft descriptor limit up to the hard one: ``max_connections`` should
        be what bites, not a 1,024 soft limit inherited from a shell."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        if soft != resource.RLIM_INFINITY and soft < want:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            except (ValueError, OSError) as e:
                self.warnings.append(f"cannot raise the descriptor limit from {soft}: {e}")
                return
            soft = want
        needed = self.config.max_connections + 64  # listeners, storage files, logs
        if soft != resource.RLIM_INFINITY and soft < needed:
            self.warnings.append(
                f"descriptor limit {soft} is below max-connections {self.config.max_connections}"
                " plus what the server itself holds: raise it (ulimit -n, LimitNOFILE=)"
            )

    def reload_exports(self) -> str | None:
        """Read the exports file again (SIGHUP); None if applied, else why not."""
        if self.access is None:
            return "not started"
        self.reload_attempts += 1
        error = self.access.reload()
        self.state.write_status(self.status())
        return error

    def _start_portmap(self, programs: list[Program], port: int) -> None:
        bind = self.config.bind
        if HostPortmapper.answers(self.portmap_port):
            hp = HostPortmapper(self.portmap_port, self.rpcbind_sockets)
            self._host_portmapper = hp
            self.warnings += hp.register(programs, bind, port)
            self.portmap_mode = "registered" if hp.registered else "unavailable"
            return
        server = RpcServer(
            Dispatcher([build_portmap(programs, bind, port, self.portmap_port)]),
            name="portmap",
            workers=2,
            tls=self._tls_source(),
        )
        try:
            self._own_portmap_port = server.listen(bind, self.portmap_port)
        except OSError as e:
            self.warnings.append(
                f"cannot serve the portmapper on port {self.portmap_port}: {e.strerror}; "
                f"clients must give port={port},mountport={port}"
            )
            self.portmap_mode = "unavailable"
            return
        self._servers.append(server)
        self.portmap_mode = "own"

    # --- running ----------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """What ``recovery-fs status`` shows, as written to ``status.json``."""
        cfg = self.config
        return {
            "pid": os.getpid(),
            "started_at": self.started_at,
            "bind": cfg.bind,
            "port": self.port,
            "transports": ["tcp", "udp"],
            "portmap": self.portmap_mode,
            "portmap_port": self._own_portmap_port
            if self.portmap_mode == "own"
            else (self.portmap_port if self.portmap_mode == "registered" else None),
            "export": cfg.export_path,
            "storage": str(cfg.storage),
            "state_dir": str(cfg.state_dir),
            "log_file": str(cfg.log_file),
            "warnings": self.warnings,
            "udp": cfg.udp,
            "tls": describe_tls(cfg),
            "exports": self._exports_status(),
            "transport": self._servers[0].stats() if self._servers else None,
        }

    def _exports_status(self) -> dict[str, Any] | None:
        a = self.access
        if a is None:
            return None
        return {
            "source": str(a.source) if a.source is not None else None,
            "generation": a.generation,
            "attempts": self.reload_attempts,
            "loaded_at": a.loaded_at,
            "error": a.last_error,
            "effective": a.table.show(),
        }

    def request_stop(self) -> None:
        """Ask :meth:`run` to stop (safe from a signal handler or another thread)."""
        self._stop_requested.set()

    def run(self, ready: Callable[[Service], None] | None = None) -> None:
        """Start, call ``ready``, serve until SIGTERM/SIGINT or request_stop, stop.

        Must be called from the main thread (it installs signal handlers).
        """

        def on_signal(signum: int, frame: object) -> None:
            log.info("signal %d: stopping", signum)
            self.request_stop()

        def on_hangup(signum: int, frame: object) -> None:
            self._reload_requested.set()

        saved = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        saved[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hangup)
        try:
            self.start()
            if ready is not None:
                ready(self)
            next_status = time.monotonic() + STATUS_INTERVAL
            while not self._idle(0.1):
                self._tick()
                if self._reload_requested.is_set():
                    self._reload_requested.clear()
                    self.reload_exports()
                if time.monotonic() >= next_status:
                    next_status = time.monotonic() + STATUS_INTERVAL
                    with contextlib.suppress(OSError):
                        self.state.write_status(self.status())
        finally:
            self.stop()
            for s, handler in saved.items():
                signal.signal(s, handler)

    def _idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` between ticks: whether a stop was requested."""
        return self._stop_requested.wait(timeout)

    def _tick(self) -> None:
        """What a subclass does every 0.1 s of :meth:`run` (a supervisor
        watches its workers)."""

    # --- stop -------------------------------------------------------------
    def stop(self) -> None:
        """Unregister, close every socket, wait for the threads; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._host_portmapper is not None and self.port is not None:
            self._host_portmapper.unregister(self.config.bind, self.port)
        for s in self._servers:
            s.stop()
        if self._watcher is not None:
            self._watcher.stop()
        if self._pid_lock is not None:
            with contextlib.suppress(FileNotFoundError):
                self.state.status_path.unlink()
            self._pid_lock.release()
        if self.started_at is not None:
            log.info("stopped after %.0f s", time.time() - self.started_at)
        if self._logs is not None:
            self._logs.close()
