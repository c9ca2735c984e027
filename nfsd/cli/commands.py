"""The ``recovery-fs`` command: serve, start, stop, status, registry, exports, storage tools.

Exit status (also in ``docs/recovery-fs.1.md``), the same meaning for every
command that can return it:

====  =====================================================================
code  meaning
====  =====================================================================
0     done (``status``: the server is running)
1     failed: the server could not start, would not stop, a file of the
      state directory could not be read or written
2     usage or configuration error: an unknown option, a bad config file,
      a storage directory that does not exist, a bad registry value
3     not running: ``status`` found no server (LSB), ``stop`` had nothing to
      stop
4     already running: ``start`` or ``serve`` found a server using this
      state directory (nothing was done); ``status``: unknown (the state
      directory cannot be read, LSB)
====  =====================================================================
"""

from __future__ import annotations

import importlib
import ipaddress
import json
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from exports import ExportsError, loopback_only
from exports import load as load_exports
from nfsd.cli.workers import worker_lines
from nfsd.service import daemon
from nfsd.service.app import Service, ServiceError
from nfsd.service.config import (
    DEFAULT_CONFIG_FILE,
    LIMITS,
    TLS_FILES,
    Config,
    ConfigError,
    load,
)
from nfsd.service.registry import DEBUG_LEVEL, Registry, RegistryError, setting
from nfsd.service.state import AlreadyRunning, StateDir, StateError
from nfsd.service.supervisor import Supervisor

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
EXIT_ALREADY_RUNNING = 4
EXIT_STATUS_UNKNOWN = 4

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"recovery-fs: {message}", err=True)
    raise click.exceptions.Exit(code)


def state_options(f: F) -> F:
    """--config and --state-dir: what every command needs to find the server."""
    f = click.option(
        "--state-dir",
        type=click.Path(file_okay=False, readable=False, path_type=Path),
        help="State directory: secret, pid, status, registry.  [default: /var/lib/recovery_fs]",
    )(f)
    return click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False, path_type=Path),
        help=f"INI file with a [server] section; options given here win.  "
        f"[default: {DEFAULT_CONFIG_FILE} if present]",
    )(f)


def server_options(f: F) -> F:
    """The settings of a server (``serve`` and ``start``)."""
    for option in reversed(
        [
            click.option(
                "--storage",
                type=click.Path(file_okay=False, path_type=Path),
                help="Storage directory to present (read only).  [default: /storage]",
            ),
            click.option(
                "--bind",
                metavar="ADDR",
                help="Address to listen on: IPv4, or IPv6 (:: is both).  [default: 0.0.0.0]",
            ),
            click.option(
                "--port",
                type=click.IntRange(0, 65535),
                help="Port of NFS and MOUNT, TCP and UDP (0: any free port).  [default: 2049]",
            ),
            click.option(
                "--portmap/--no-portmap",
                default=None,
                help="Register with the host's portmapper, or serve one on port 111.  "
                "[default: --portmap]",
            ),
            click.option(
                "--exports",
                type=click.Path(dir_okay=False, path_type=Path),
                help="Exports file, Linux exports(5) syntax (and FILE.d/*.exports).  "
                "[default: /etc/recovery_fs/exports; absent: loopback only]",
            ),
            click.option(
                "--udp/--no-udp",
                default=None,
                help="Serve NFS over UDP too (MOUNT always answers on UDP).  [default: --no-udp]",
            ),
            click.option(
                "--max-connections",
                type=click.IntRange(1),
                help="TCP connections open at once; past it the oldest not yet "
                "validated (again, since the exports changed) is closed, else the "
                "new one refused.  [default: 1024]",
            ),
            click.option(
                "--max-unvalidated",
                type=click.IntRange(1),
                help="Connections that have made no valid call yet (the oldest "
                "is closed past it).  [default: 64]",
            ),
            click.option(
                "--idle-timeout",
                type=click.FloatRange(min=0, min_open=True),
                help="Seconds without a call before a connection is closed.  [default: 300]",
            ),
            click.option(
                "--record-timeout",
                type=click.FloatRange(min=0, min_open=True),
                help="Seconds to complete a record once begun.  [default: 30]",
            ),
            click.option(
                "--max-inflight",
                type=click.IntRange(1),
                help="Calls in flight per connection.  [default: 16]",
            ),
            click.option(
                "--max-unsent",
                type=click.IntRange(1),
                help="Reply bytes unsent per connection before it is no longer "
                "read.  [default: 4194304]",
            ),
            click.option(
                "--workers",
                type=click.IntRange(0, 256),
                help="Server processes under one supervisor (1: a single process; "
                "0: the number of cores).  [default: the number of cores]",
            ),
            click.option(
                "--proxy-from",
                metavar="CIDR,...",
                help="Load balancers whose connections begin with a PROXY protocol "
                "header (v1 or v2) naming the client.  [default: none]",
            ),
            click.option(
                "--secret-file",
                type=click.Path(dir_okay=False, path_type=Path),
                help="The handles' key (`recovery-fs secret show` of another host).  "
                "[default: the state directory's]",
            ),
            click.option(
                "--tls-cert",
                type=click.Path(dir_okay=False, path_type=Path),
                help="Server certificate (PEM, chain after it): offers RPC-with-TLS "
                "(xprtsec=tls).  See `recovery-fs tls init`.",
            ),
            click.option(
                "--tls-key",
                type=click.Path(dir_okay=False, path_type=Path),
                help="The private key of --tls-cert (PEM).",
            ),
            click.option(
                "--tls-client-ca",
                type=click.Path(dir_okay=False, path_type=Path),
                help="CA that client certificates must verify against (xprtsec=mtls).",
            ),
            click.option(
                "--log-file",
                type=click.Path(dir_okay=True, path_type=Path),
                help="Log file (a directory: recovery_fs.log in it).  "
                "[default: /var/log/recovery_fs]",
            ),
        ]
    ):
        f = option(f)
    return state_options(f)


def load_config(config_file: Path | None, overrides: dict[str, Any]) -> Config:
    try:
        return load(config_file, overrides)
    except ConfigError as e:
        fail(str(e), EXIT_USAGE)


def serve_args(cfg: Config, config_file: Path | None) -> list[str]:
    """``serve`` options that reproduce ``cfg`` exactly."""
    args = ["--storage", str(cfg.storage), "--bind", cfg.bind, "--port", str(cfg.port)]
    args += ["--portmap" if cfg.portmap else "--no-portmap"]
    args += ["--state-dir", str(cfg.state_dir), "--log-file", str(cfg.log_file)]
    args += ["--udp" if cfg.udp else "--no-udp"]
    for name in sorted(LIMITS):
        args += [f"--{name.replace('_', '-')}", str(getattr(cfg, name))]
    if cfg.exports is not None:
        args += ["--exports", str(cfg.exports)]
    for name in TLS_FILES:
        if getattr(cfg, name) is not None:
            args += [f"--{name.replace('_', '-')}", str(getattr(cfg, name))]
    args += ["--workers", str(cfg.workers)]
    if cfg.proxy_from:
        args += ["--proxy-from", ",".join(cfg.proxy_from)]
    if cfg.secret_file is not None:
        args += ["--secret-file", str(cfg.secret_file)]
    if config_file is not None:
        args += ["--config", str(config_file.absolute())]
    return args


def mount_host(bind: str) -> str:
    """How a client names this server in ``HOST:/path``."""
    if ipaddress.ip_address(bind).is_unspecified:
        return socket.gethostname()
    return f"[{bind}]" if ":" in bind else bind


def mount_commands(bind: str, port: int, export: str) -> str:
    """The commands that mount this server on Linux and macOS."""
    host = mount_host(bind)
    return (
        "Mount on Linux (as root):\n"
        f"  mount -t nfs -o ro,vers=3,proto=tcp,port={port},mountport={port},mountproto=tcp,nolock "
        f"{host}:{export} /mnt\n"
        "Mount on macOS (as root; add resvport unless the exports say insecure):\n"
        f"  mount -t nfs -o ro,vers=3,tcp,port={port},mountport={port},nolocks "
        f"{host}:{export} /Volumes/recovery"
    )


class LazyGroup(click.Group):
    """A group whose ``lazy`` commands are imported when first named.

    ``recovery-fs serve`` is the supervisor's process for as long as the
    server runs: the storage tools (the merge code), ``tls init``
    (``cryptography``), ``secret`` and ``instant`` would be about 11 MB of
    it if imported up front.  Each is ``name: "module:attribute"``.
    """

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module, _, attr = self.lazy[cmd_name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attr), cmd_name)
        return super().get_command(ctx, cmd_name)


LAZY_COMMANDS = {
    "ls": "nfsd.cli.storage:ls_command",
    "check": "nfsd.cli.storage:check_command",
    "pancbt": "nfsd.cli.storage:pancbt_group",
    "demo": "nfsd.cli.storage:demo_command",
    "tls": "nfsd.cli.tls:tls_group",
    "secret": "nfsd.cli.secret:secret_group",
    "instant": "nfsd.cli.instant:instant_group",
}


@click.group(
    cls=LazyGroup,
    lazy=LAZY_COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="recovery-fs", prog_name="recovery-fs")
def main() -> None:
    """A read-only NFSv3 server presenting VMware backups with their changed blocks merged.

    Exit status: 0 done, 1 failed, 2 usage or configuration error, 3 not
    running, 4 already running (status: unknown).  See recovery-fs(1).
    """


@main.command()
@server_options
@click.option("--print-mount", is_flag=True, help="Print the mount commands once listening.")
@click.option("--ready-fd", type=int, hidden=True)
def serve(
    *, config_file: Path | None, print_mount: bool, ready_fd: int | None, **settings: Any
) -> None:
    """Serve in the foreground until SIGTERM or Ctrl-C.

    Logs go to the log file and to stderr.
    """

    def report(r: dict[str, Any]) -> None:
        """Tell ``start`` (our parent, when there is one) how start-up went."""
        if ready_fd is not None:
            os.write(ready_fd, json.dumps(r).encode() + b"\n")
            os.close(ready_fd)

    def ready(s: Service) -> None:
        if ready_fd is not None:
            report({"ok": True, "status": s.status()})
            _detach_stdio()
            return
        click.echo(
            f"recovery-fs: serving {s.config.export_path} from {s.config.storage} on "
            f"{s.config.bind} port {s.port} (portmap: {s.portmap_mode}); Ctrl-C stops",
            err=True,
        )
        if print_mount and s.port is not None:
            click.echo(mount_commands(s.config.bind, s.port, s.config.export_path))

    try:
        cfg = load(config_file, settings)
        kind = Supervisor if cfg.worker_count() > 1 else Service
        kind(cfg, foreground=ready_fd is None).run(ready)
    except ConfigError as e:
        code, message = EXIT_USAGE, str(e)
    except AlreadyRunning as e:
        code, message = EXIT_ALREADY_RUNNING, str(e)
    except (ServiceError, StateError) as e:
        code, message = EXIT_FAILED, str(e)
    else:
        return
    report({"ok": False, "error": message, "code": code})
    fail(message, code)


def _detach_stdio() -> None:
    """Point stdin, stdout and stderr at /dev/null (a daemon once ready)."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def timeout_option(default: float, help: str) -> Callable[[F], F]:
    return click.option(
        "--timeout", type=click.FloatRange(min=0), default=default, show_default=True, help=help
    )


@main.command()
@server_options
@timeout_option(60.0, "Seconds to wait for the server to be ready.")
def start(*, config_file: Path | None, timeout: float, **settings: Any) -> None:
    """Start the server in the background.

    Returns once the server answers an RPC NULL on its port, or has failed.
    """
    cfg = load_config(config_file, settings)
    try:
        cfg.check_storage()
    except ConfigError as e:
        fail(str(e), EXIT_USAGE)
    pid = _running_pid(StateDir(cfg.state_dir))
    if pid is not None:
        fail(f"already running (pid {pid}); nothing done", EXIT_ALREADY_RUNNING)
    started = daemon.spawn(serve_args(cfg, config_file), timeout)
    if started.error is not None:
        fail(started.error, started.code or EXIT_FAILED)
    st = started.status
    bound = int(st.get("port") or cfg.port)
    why = daemon.answers(daemon.local_address(cfg.bind), bound)
    if why is not None:
        fail(f"the server started (pid {started.pid}) but does not answer: {why}", EXIT_FAILED)
    click.echo(
        f"recovery-fs started (pid {started.pid}): {cfg.export_path} on {cfg.bind} port {bound}, "
        f"portmap: {st.get('portmap')}; log: {cfg.log_file}"
    )
    for w in st.get("warnings", []):
        click.echo(f"recovery-fs: warning: {w}", err=True)


def _running_pid(state: StateDir) -> int | None:
    try:
        return state.running_pid()
    except OSError as e:
        fail(f"cannot read {state.pid_path}: {e.strerror}", EXIT_FAILED)


@main.command()
@state_options
@timeout_option(30.0, "Seconds to wait after SIGTERM before SIGKILL.")
def stop(config_file: Path | None, state_dir: Path | None, timeout: float) -> None:
    """Stop the background server.

    Sends SIGTERM, waits for the exit, sends SIGKILL after --timeout.
    """
    cfg = load_config(config_file, {"state_dir": state_dir})
    state = StateDir(cfg.state_dir)
    _running_pid(state)
    try:
        result = daemon.stop(state, timeout)
    except OSError as e:
        fail(f"cannot stop the server: {e}", EXIT_FAILED)
    if result.pid is None:
        fail("not running; nothing to stop", EXIT_NOT_RUNNING)
    if result.still_running:
        fail(f"pid {result.pid} is still running after SIGKILL", EXIT_FAILED)
    if result.killed:
        click.echo(
            f"recovery-fs: pid {result.pid} ignored SIGTERM for {timeout:g} s: killed", err=True
        )
    click.echo(f"recovery-fs stopped (pid {result.pid})")


def _exports_line(info: dict[str, Any] | None) -> str:
    """The status line of the exports list in force."""
    if not info:
        return "?"
    where = info.get("source") or "no exports file: loopback only"
    line = f"{where} (generation {info.get('generation')})"
    if info.get("error"):
        line += f"; last reload failed: {info['error']}"
    return line


def _transport_line(t: dict[str, Any] | None) -> str:
    """Connections and calls, from the server's last status (every few seconds)."""
    if not t:
        return "?"
    line = f"{t.get('connections')} open ({t.get('unvalidated')} not validated)"
    line += f", {t.get('calls')} calls"
    closed = ", ".join(f"{k} {v}" for k, v in sorted((t.get("closed") or {}).items()))
    refused = sum((t.get("refused") or {}).values())
    if closed:
        line += f"; closed: {closed}"
    if refused:
        line += f"; refused {refused}"
    return line


def format_uptime(seconds: float) -> str:
    s = int(max(0, seconds))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    return (f"{days}d " if days else "") + f"{hours:02d}:{minutes:02d}:{s:02d}"


@main.command()
@state_options
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(config_file: Path | None, state_dir: Path | None, as_json: bool) -> None:
    """Tell whether the server runs, and where.

    Exit status 0: running; 3: not running; 4: unknown.
    """
    cfg = load_config(config_file, {"state_dir": state_dir})
    state = StateDir(cfg.state_dir)
    try:
        pid = state.running_pid()
    except OSError as e:
        fail(f"status unknown: cannot read {state.pid_path}: {e.strerror}", EXIT_STATUS_UNKNOWN)
    if pid is None:
        if as_json:
            click.echo(json.dumps({"running": False}))
        else:
            click.echo("recovery-fs is not running")
        raise click.exceptions.Exit(EXIT_NOT_RUNNING)
    st = state.read_status() or {}
    started = st.get("started_at")
    info: dict[str, Any] = {"running": True, **st, "pid": pid}
    if isinstance(started, int | float):
        info["uptime_seconds"] = round(time.time() - started)
    try:
        info["debug_level"] = Registry(state.registry_path).get(DEBUG_LEVEL)
    except StateError as e:
        info["debug_level"] = str(e)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    port = st.get("port")
    pm_port = st.get("portmap_port")
    rows = [
        ("pid", pid),
        ("address", st.get("bind", "?")),
        (
            "ports",
            f"NFS {port} (tcp{', udp' if st.get('udp') else ''}), MOUNT {port} (tcp, udp)"
            if port
            else "? (starting)",
        ),
        ("portmap", f"{st.get('portmap')}" + (f", port {pm_port}" if pm_port else "")),
        ("export", st.get("export", "?")),
        ("tls", st.get("tls", "off")),
        ("clients", _exports_line(st.get("exports"))),
        ("conns", _transport_line(st.get("transport"))),
        ("storage", st.get("storage", "?")),
        ("log", st.get("log_file", "?")),
        ("uptime", format_uptime(info["uptime_seconds"]) if "uptime_seconds" in info else "?"),
        ("debug", info["debug_level"]),
    ]
    click.echo("recovery-fs is running")
    for name, value in rows:
        click.echo(f"  {name + ':':9} {value}")
    for line in worker_lines(st):
        click.echo(line)
    for w in st.get("warnings", []):
        click.echo(f"  warning:  {w}")


@main.group()
def registry() -> None:
    """Read or change the registry.

    A running server follows a change within seconds.

    \b
    Keys:
      appliance.debug.level  0 warnings, 1 info, 2 debug, 3+ debug with a line per RPC
    """


def _registry(config_file: Path | None, state_dir: Path | None) -> tuple[StateDir, Registry]:
    cfg = load_config(config_file, {"state_dir": state_dir})
    state = StateDir(cfg.state_dir)
    return state, Registry(state.registry_path)


@registry.command("get")
@state_options
@click.argument("key", required=False)
def registry_get(config_file: Path | None, state_dir: Path | None, key: str | None) -> None:
    """Print KEY's value, or every key with its value."""
    _, reg = _registry(config_file, state_dir)
    try:
        if key is None:
            for k, v in reg.values().items():
                click.echo(f"{k} = {v}")
        else:
            click.echo(reg.get(key))
    except RegistryError as e:
        fail(str(e), EXIT_USAGE)
    except StateError as e:
        fail(str(e), EXIT_FAILED)


@registry.command("set")
@state_options
@click.argument("key")
@click.argument("value")
def registry_set(config_file: Path | None, state_dir: Path | None, key: str, value: str) -> None:
    """Set KEY to VALUE (validated; written atomically)."""
    state, reg = _registry(config_file, state_dir)
    try:
        setting(key).parse(value)  # a bad key or value fails before anything is created
        state.ensure()
        stored = reg.set(key, value)
    except RegistryError as e:
        fail(str(e), EXIT_USAGE)
    except StateError as e:
        fail(str(e), EXIT_FAILED)
    click.echo(f"{key} = {stored}")


@main.group()
def exports() -> None:
    """Show or reload the list of clients allowed (the exports file).

    \b
    The file uses Linux exports(5) syntax (see recovery-fs-exports(5)):
      /recover/images  10.0.0.0/8(ro) backup1.example(no_root_squash)
    """


@exports.command("show")
@state_options
@click.option(
    "--exports",
    "exports_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Parse this file rather than ask the running server.",
)
def exports_show(
    config_file: Path | None, state_dir: Path | None, exports_file: Path | None
) -> None:
    """Print the effective list, as `exportfs -v` does.

    The running server's list when one runs on this state directory (and no
    --exports is given), else the configured file as it would be read now.
    """
    cfg = load_config(config_file, {"state_dir": state_dir, "exports": exports_file})
    state = StateDir(cfg.state_dir)
    st = state.read_status() if exports_file is None and _running_pid(state) else None
    info = (st or {}).get("exports")
    if info:
        click.echo(info["effective"], nl=False)
        if info.get("error"):
            click.echo(f"recovery-fs: the last reload failed: {info['error']}", err=True)
        return
    try:
        source = cfg.exports_file()
        table = load_exports(source) if source is not None else loopback_only(cfg.export_path)
        table.check_only(cfg.export_path, source)  # as serve and reload refuse it
    except (ConfigError, ExportsError) as e:
        fail(str(e), EXIT_USAGE)
    except OSError as e:
        fail(f"cannot read the exports file: {e}", EXIT_FAILED)
    for w in table.warnings:
        click.echo(f"recovery-fs: warning: {w}", err=True)
    click.echo(table.show(), nl=False)


@exports.command("reload")
@state_options
@timeout_option(10.0, "Seconds to wait for the server to apply the list.")
def exports_reload(config_file: Path | None, state_dir: Path | None, timeout: float) -> None:
    """Make the running server read its exports file again (as SIGHUP does).

    A client taken off the list is refused from its next call on; the
    connections of clients still allowed are kept.  On an error the server
    keeps its previous list, and this command says why and exits 1.
    """
    cfg = load_config(config_file, {"state_dir": state_dir})
    state = StateDir(cfg.state_dir)
    pid = _running_pid(state)
    if pid is None:
        fail("not running; nothing to reload", EXIT_NOT_RUNNING)
    before = ((state.read_status() or {}).get("exports") or {}).get("attempts", 0)
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as e:  # another user's server: as stop says it
        fail(f"cannot signal the server (pid {pid}): {e.strerror}", EXIT_FAILED)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = (state.read_status() or {}).get("exports") or {}
        if info.get("attempts", 0) > before:
            if info.get("error"):
                fail(
                    f"exports not reloaded (the previous list stays): {info['error']}", EXIT_FAILED
                )
            click.echo(f"exports reloaded (generation {info['generation']})")
            click.echo(info["effective"], nl=False)
            return
        time.sleep(0.05)
    fail(f"pid {pid} did not report the reload within {timeout:g} s", EXIT_FAILED)


if __name__ == "__main__":
    main(prog_name="recovery-fs")
