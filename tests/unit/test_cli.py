"""The command line, the state directory, and the service it runs.

Servers listen on 127.0.0.1 and free ports; the portmapper tests move port
111 to a free port too.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from nfsd.cli import commands as cli
from nfsd.programs.portmap import PortmapService, PortmapTable
from nfsd.rpc import Dispatcher
from nfsd.service import config
from nfsd.service.app import HostPortmapper, Service
from nfsd.service.config import Config, ConfigError
from nfsd.service.registry import DEBUG_LEVEL, Registry
from nfsd.service.state import AlreadyRunning, StateDir, StateError, running_pid
from nfsd.transport.rpcclient import RpcClient, auth_sys
from nfsd.transport.server import RpcServer
from xdr import portmap as pm
from xdr.base import Packer, Unpacker

NFS, MOUNT = 100003, 100005
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_system_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(config, "DEFAULT_CONFIG_FILE", tmp_path / "absent.conf")


def free_port() -> int:
    """A port free for TCP and UDP on 127.0.0.1 (the server binds both)."""
    while True:
        with socket.socket() as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    s = tmp_path / "storage"
    (s / "vm1").mkdir(parents=True)
    (s / "vm1" / "disk.txt").write_bytes(b"hello\n")
    return s


def cfg(tmp_path: Path, storage: Path, **kw: object) -> Config:
    values: dict[str, object] = {
        "storage": storage,
        "bind": "127.0.0.1",
        "port": 0,
        "portmap": False,
        "state_dir": tmp_path / "state",
        "log_file": tmp_path / "log" / "recovery_fs",
    }
    values.update(kw)
    return Config(**values)  # type: ignore[arg-type]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nfsd.cli", *args],
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def invoke(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli.main, list(args), catch_exceptions=False)
    return r.exit_code, r.stdout, r.stderr


def mnt_root(port: int) -> bytes:
    """The root handle MOUNT v3 MNT hands out on ``port``."""
    p = Packer()
    p.pack_string(b"/recover/images")
    with RpcClient("127.0.0.1", port, cred=auth_sys()) as c:  # sec=sys: AUTH_NONE is refused
        r = c.call(MOUNT, 3, 1, p.get_buffer())
    assert r.ok
    u = Unpacker(r.body)
    assert u.unpack_uint() == 0  # MNT3_OK
    return u.unpack_opaque()


# --- the command line ---------------------------------------------------------


def test_help_lists_the_commands() -> None:
    code, out, _ = invoke("--help")
    assert code == 0
    for command in ("serve", "start", "stop", "status", "registry"):
        assert command in out
    assert "Exit status" in out


def test_python_dash_m_works() -> None:
    r = run("--help")
    assert r.returncode == 0
    assert r.stdout.startswith("Usage: recovery-fs ")


@pytest.mark.parametrize("command", ["serve", "start"])
def test_options_of_the_server_commands(command: str) -> None:
    code, out, _ = invoke(command, "--help")
    assert code == 0
    for option in ("--storage", "--bind", "--port", "--no-portmap", "--state-dir", "--log-file"):
        assert option in out
    assert "--config" in out
    assert ("--print-mount" in out) == (command == "serve")


@pytest.mark.parametrize("command", ["serve", "start"])
def test_a_missing_storage_is_exit_2(tmp_path: Path, command: str) -> None:
    code, _, err = invoke(
        command, "--storage", str(tmp_path / "nope"), "--state-dir", str(tmp_path / "s")
    )
    assert code == 2
    assert "does not exist" in err
    assert not (tmp_path / "s").exists()


def test_a_bad_config_file_is_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text("[server]\nport = many\n")
    code, _, err = invoke("status", "--config", str(bad))
    assert code == 2 and "not a number" in err
    code, _, err = invoke("status", "--config", str(tmp_path / "none.conf"))
    assert code == 2 and "does not exist" in err


def test_a_bad_option_is_exit_2() -> None:
    assert invoke("serve", "--port", "99999")[0] == 2
    assert invoke("serve", "--bind", "somewhere", "--storage", "/")[0] == 2
    assert invoke("nonsense")[0] == 2


def test_status_and_stop_when_nothing_runs(tmp_path: Path) -> None:
    code, out, _ = invoke("status", "--state-dir", str(tmp_path))
    assert (code, out.strip()) == (3, "recovery-fs is not running")
    code, out, _ = invoke("status", "--json", "--state-dir", str(tmp_path))
    assert (code, json.loads(out)) == (3, {"running": False})
    code, _, err = invoke("stop", "--state-dir", str(tmp_path))
    assert code == 3 and "not running" in err


def test_status_of_a_state_dir_it_cannot_read_is_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exit 4 (LSB "unknown"), as documented, not click's usage error (2): a user
    who may not read the state directory asks about a server run by another.
    (As root nothing is unreadable: ``os.access``, which click's check asks, and
    the pid file's read are made to say what they say to that user.)"""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    real_access = os.access

    def access(path: str | Path, mode: int, **kw: object) -> bool:
        return False if Path(path) == state else real_access(path, mode, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "access", access)

    def denied(self: StateDir) -> int | None:
        raise PermissionError(13, "Permission denied", str(self.pid_path))

    monkeypatch.setattr(StateDir, "running_pid", denied)
    code, _, err = invoke("status", "--state-dir", str(state))
    assert code == 4, err
    assert "status unknown" in err and "Permission denied" in err


def test_the_state_dir_can_come_from_the_config_file(tmp_path: Path) -> None:
    conf = tmp_path / "r.conf"
    conf.write_text(f"[server]\nstate-dir = {tmp_path / 'from-file'}\n")
    assert invoke("registry", "set", DEBUG_LEVEL, "2", "--config", str(conf))[0] == 0
    assert Registry(tmp_path / "from-file" / "registry.json").get(DEBUG_LEVEL) == 2


def test_registry_get_and_set(tmp_path: Path) -> None:
    st = ["--state-dir", str(tmp_path / "st")]
    assert invoke("registry", "get", DEBUG_LEVEL, *st)[:2] == (0, "0\n")
    assert not (tmp_path / "st").exists()  # reading creates nothing
    assert invoke("registry", "set", DEBUG_LEVEL, "3", *st)[:2] == (0, f"{DEBUG_LEVEL} = 3\n")
    assert stat.S_IMODE((tmp_path / "st").stat().st_mode) == 0o700
    assert invoke("registry", "get", DEBUG_LEVEL, *st)[:2] == (0, "3\n")
    assert invoke("registry", "get", *st)[:2] == (0, f"{DEBUG_LEVEL} = 3\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["set", DEBUG_LEVEL, "-1"], "integer from 0 to 9"),
        (["set", DEBUG_LEVEL, "three"], "integer from 0 to 9"),
        (["set", DEBUG_LEVEL, "12"], "integer from 0 to 9"),
        (["set", "appliance.debug", "1"], "unknown registry key"),
        (["get", "nope"], "unknown registry key"),
    ],
)
def test_registry_errors_are_exit_2_and_change_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    command, *rest = args
    code, _, err = invoke("registry", command, "--state-dir", str(tmp_path / "st"), "--", *rest)
    assert code == 2 and message in err
    assert not (tmp_path / "st").exists()


def test_a_damaged_registry_is_exit_1(tmp_path: Path) -> None:
    (tmp_path / "registry.json").write_text("{")
    code, _, err = invoke("registry", "get", DEBUG_LEVEL, "--state-dir", str(tmp_path))
    assert code == 1 and "not valid JSON" in err


def test_mount_commands() -> None:
    text = cli.mount_commands("192.0.2.1", 20490, "/recover/images")
    assert (
        "mount -t nfs -o ro,vers=3,proto=tcp,port=20490,mountport=20490,mountproto=tcp,nolock "
        "192.0.2.1:/recover/images /mnt"
    ) in text
    assert "mount -t nfs -o ro,vers=3,tcp,port=20490,mountport=20490,nolocks 192.0.2.1:" in text
    assert "[2001:db8::1]:/recover/images" in cli.mount_commands(
        "2001:db8::1", 1, "/recover/images"
    )
    assert f" {socket.gethostname()}:/x " in cli.mount_commands("0.0.0.0", 1, "/x")


def test_format_uptime() -> None:
    assert cli.format_uptime(0) == "00:00:00"
    assert cli.format_uptime(3725) == "01:02:05"
    assert cli.format_uptime(2 * 86400 + 61) == "2d 00:01:01"


def test_serve_args_reproduce_the_config(tmp_path: Path, storage: Path) -> None:
    c = cfg(tmp_path, storage, port=1234, portmap=True)
    parsed = config.load(None, {})
    args = cli.serve_args(c, None)
    pairs = dict(zip(args[::2], args[1::2], strict=False))
    assert parsed != c
    assert pairs["--storage"] == str(storage) and pairs["--port"] == "1234"
    assert "--portmap" in args and "--config" not in args


# --- the state directory --------------------------------------------------------


def test_state_dir_is_private_and_the_secret_is_made_once(tmp_path: Path) -> None:
    st = StateDir(tmp_path / "a" / "state")
    st.ensure()
    assert stat.S_IMODE(st.path.stat().st_mode) == 0o700
    secret = st.secret()
    assert len(secret) == 32
    assert stat.S_IMODE(st.secret_path.stat().st_mode) == 0o600
    assert StateDir(st.path).secret() == secret
    assert sorted(os.listdir(st.path)) == ["secret"]  # no temporary left


def test_servers_starting_together_agree_on_one_secret(tmp_path: Path) -> None:
    st = StateDir(tmp_path)
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(st.secret())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1


def test_a_damaged_secret_is_refused(tmp_path: Path) -> None:
    st = StateDir(tmp_path)
    st.secret_path.write_bytes(b"short")
    with pytest.raises(StateError, match="not a 32-byte secret"):
        st.secret()


def test_a_state_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(StateError, match="not a directory"):
        StateDir(tmp_path / "f").ensure()


def test_pid_lock(tmp_path: Path) -> None:
    st = StateDir(tmp_path)
    assert st.running_pid() is None
    lock = st.pid_lock()
    lock.acquire()
    try:
        assert st.running_pid() == os.getpid()
        assert st.pid_path.read_text() == f"{os.getpid()}\n"
        with pytest.raises(AlreadyRunning) as e:
            st.pid_lock().acquire()
        assert e.value.pid == os.getpid()
        st.remove_stale()  # a live server's files stay
        assert st.pid_path.exists()
    finally:
        lock.release()
    assert not st.pid_path.exists()
    assert st.running_pid() is None


def test_a_stale_pid_file_is_not_a_server(tmp_path: Path) -> None:
    st = StateDir(tmp_path)
    st.pid_path.write_text("1\n")  # PID 1 exists, but holds no lock
    st.status_path.write_text("{}")
    assert running_pid(st.pid_path) is None
    code, _, _ = invoke("status", "--state-dir", str(tmp_path))
    assert code == 3
    st.remove_stale()
    assert not st.pid_path.exists() and not st.status_path.exists()
    lock = st.pid_lock()
    lock.acquire()  # a new server takes the place
    lock.release()


# --- the service, in this process -------------------------------------------------


@pytest.fixture
def service(tmp_path: Path, storage: Path) -> Iterator[Service]:
    s = Service(cfg(tmp_path, storage))
    s.start()
    yield s
    s.stop()


def test_service_answers_mount_and_nfs_on_tcp_and_udp(service: Service) -> None:
    assert service.port
    for transport in ("tcp", "udp"):
        with RpcClient("127.0.0.1", service.port, transport=transport) as c:
            # NFS over UDP is opt-in (--udp); MOUNT always answers on UDP
            assert c.call(NFS, 3, 0).ok == (transport == "tcp")
            assert c.call(MOUNT, 3, 0).ok
    assert len(mnt_root(service.port)) >= 20


def test_service_with_udp_serves_nfs_over_udp(tmp_path: Path, storage: Path) -> None:
    s = Service(dataclasses.replace(cfg(tmp_path, storage), udp=True))
    s.start()
    try:
        assert s.port
        with RpcClient("127.0.0.1", s.port, transport="udp") as c:
            assert c.call(NFS, 3, 0).ok
    finally:
        s.stop()


def test_a_udp_reply_of_more_buffers_than_a_sendmsg_takes_is_sent(
    tmp_path: Path, storage: Path
) -> None:
    """A READDIR of ~1,000 short names fits a 32 KiB reply, but as one buffer a
    name it was more than the kernel's IOV_MAX (1024) for one datagram's sendmsg:
    EMSGSIZE, no reply, the client retransmitting for ever."""
    folder = storage / "many"
    folder.mkdir()
    for i in range(1500):
        (folder / f"f{i}").touch()
    s = Service(dataclasses.replace(cfg(tmp_path, storage), udp=True))
    s.start()
    try:
        assert s.port
        root = mnt_root(s.port)
        with RpcClient("127.0.0.1", s.port, transport="udp", cred=auth_sys(), timeout=5) as c:
            p = Packer()
            p.pack_opaque(root)
            p.pack_string(b"many")
            r = c.call(NFS, 3, 3, p.get_buffer())  # LOOKUP
            u = Unpacker(r.body)
            assert u.unpack_uint() == 0
            fh = u.unpack_opaque()
            p = Packer()
            p.pack_opaque(fh)
            p.pack_uhyper(0)
            p.pack_fopaque(8, bytes(8))
            p.pack_uint(32768)
            r = c.call(NFS, 3, 16, p.get_buffer())  # READDIR
        assert r.ok and len(r.body) > 16384
        u = Unpacker(r.body)
        assert u.unpack_uint() == 0
        if u.unpack_uint():  # dir_attributes follow
            u.unpack_fopaque(84)
        u.unpack_fopaque(8)  # cookieverf
        entries = 0
        while u.unpack_uint():
            u.unpack_uhyper(), u.unpack_string(), u.unpack_uhyper()
            entries += 1
        assert entries > 1024
    finally:
        s.stop()


def test_service_writes_status_then_cleans_up(tmp_path: Path, storage: Path) -> None:
    s = Service(cfg(tmp_path, storage))
    s.start()
    try:
        st = json.loads((tmp_path / "state" / "status.json").read_text())
        assert st["pid"] == os.getpid() and st["port"] == s.port
        assert (st["bind"], st["portmap"], st["export"]) == ("127.0.0.1", "off", "/recover/images")
        assert st["storage"] == str(storage)
        code, out, _ = invoke("status", "--state-dir", str(tmp_path / "state"))
        assert code == 0
        assert f"NFS {s.port} (tcp), MOUNT {s.port} (tcp, udp)" in out and str(storage) in out
        code, out, _ = invoke("status", "--json", "--state-dir", str(tmp_path / "state"))
        assert json.loads(out)["running"] is True and json.loads(out)["debug_level"] == 0
    finally:
        s.stop()
    assert sorted(os.listdir(tmp_path / "state")) == ["secret"]
    s.stop()  # idempotent


def test_a_second_service_on_the_same_state_dir_is_refused(
    service: Service, tmp_path: Path, storage: Path
) -> None:
    with pytest.raises(AlreadyRunning):
        Service(cfg(tmp_path, storage)).start()
    assert (tmp_path / "state" / "status.json").exists()  # the first one's, untouched


def test_same_state_dir_or_secret_means_identical_handles(tmp_path: Path, storage: Path) -> None:
    other = tmp_path / "other-state"
    handles = []
    for state in (tmp_path / "state", tmp_path / "state", other):  # a restart, then a copy
        if state == other:
            other.mkdir()
            shutil.copy(tmp_path / "state" / "secret", other / "secret")
        s = Service(cfg(tmp_path, storage, state_dir=state))
        s.start()
        try:
            assert s.port
            handles.append(mnt_root(s.port))
        finally:
            s.stop()
    assert handles[0] == handles[1] == handles[2]


def test_service_refuses_a_busy_port(service: Service, tmp_path: Path, storage: Path) -> None:
    from nfsd.service.app import ServiceError

    other = Service(cfg(tmp_path, storage, port=service.port, state_dir=tmp_path / "s2"))
    with pytest.raises(ServiceError, match="cannot listen"):
        other.start()
    assert not (tmp_path / "s2" / "recovery_fs.pid").exists()


def test_service_follows_the_registry_within_seconds(service: Service, tmp_path: Path) -> None:
    import logging

    assert (
        invoke("registry", "set", DEBUG_LEVEL, "3", "--state-dir", str(tmp_path / "state"))[0] == 0
    )
    deadline = time.monotonic() + 5
    while not logging.getLogger("recovery_fs.rpc").isEnabledFor(logging.DEBUG):
        assert time.monotonic() < deadline, "the level did not follow"
        time.sleep(0.05)
    assert service.port
    with RpcClient("127.0.0.1", service.port) as c:
        assert c.call(NFS, 3, 0).ok
    time.sleep(0.2)
    log = (tmp_path / "log" / "recovery_fs").read_text()
    assert "debug level 0 -> 3" in log
    assert "NULL v3" in log  # one line per call


def test_service_never_writes_into_the_storage(tmp_path: Path, storage: Path) -> None:
    before = sorted(str(p) for p in storage.rglob("*"))
    s = Service(cfg(tmp_path, storage))
    s.start()
    assert s.port
    mnt_root(s.port)
    s.stop()
    assert sorted(str(p) for p in storage.rglob("*")) == before


# --- the portmapper, wired by the service ---------------------------------------------


def getport(pm_port: int, prog: int, transport: str = "tcp") -> int:
    p = Packer()
    p.pack_uint(prog)
    p.pack_uint(3)
    p.pack_uint(pm.IPPROTO_TCP)
    p.pack_uint(0)
    with RpcClient("127.0.0.1", pm_port, transport=transport) as c:
        r = c.call(pm.PMAP_PROG, 2, pm.PMAPPROC_GETPORT, p.get_buffer())
    assert r.ok
    return Unpacker(r.body).unpack_uint()


def test_service_serves_its_own_portmapper(tmp_path: Path, storage: Path) -> None:
    pm_port = free_port()
    s = Service(cfg(tmp_path, storage, portmap=True), portmap_port=pm_port, rpcbind_sockets=())
    s.start()
    try:
        assert s.portmap_mode == "own"
        for transport in ("tcp", "udp"):
            assert getport(pm_port, NFS, transport) == s.port
            assert getport(pm_port, MOUNT, transport) == s.port
        assert s.status()["portmap_port"] == pm_port
    finally:
        s.stop()
    assert not HostPortmapper.answers(pm_port)


def test_service_registers_with_a_portmapper_already_there(tmp_path: Path, storage: Path) -> None:
    pm_port = free_port()
    host = RpcServer(Dispatcher([PortmapService(PortmapTable(), "127.0.0.1").program()]), name="pm")
    host.listen("127.0.0.1", pm_port)
    host.start()
    try:
        s = Service(cfg(tmp_path, storage, portmap=True), portmap_port=pm_port, rpcbind_sockets=())
        s.start()
        try:
            assert s.portmap_mode == "registered" and not s.warnings
            assert getport(pm_port, NFS) == s.port
            assert getport(pm_port, MOUNT, "udp") == s.port
        finally:
            s.stop()
        assert getport(pm_port, NFS) == 0  # unregistered at stop
    finally:
        host.stop()


def test_a_refused_registration_is_a_warning(tmp_path: Path, storage: Path) -> None:
    pm_port = free_port()
    table = PortmapTable()
    host = RpcServer(Dispatcher([PortmapService(table, "127.0.0.1").program()]), name="pm")
    host.listen("127.0.0.1", pm_port)
    host.start()
    from nfsd.programs.portmap import Binding

    for netid in ("tcp", "udp"):
        table.add(Binding(NFS, 3, netid, None, 9, fixed=True))  # someone else's, kept
    try:
        s = Service(cfg(tmp_path, storage, portmap=True), portmap_port=pm_port, rpcbind_sockets=())
        s.start()
        try:
            assert any("refused" in w and "NFS v3" in w for w in s.warnings)
            assert getport(pm_port, MOUNT) == s.port
            assert getport(pm_port, NFS) == 9
        finally:
            s.stop()
    finally:
        host.stop()


def test_port_111_taken_by_something_else_is_a_warning(tmp_path: Path, storage: Path) -> None:
    with socket.socket() as squatter:  # listens, never answers
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        pm_port = squatter.getsockname()[1]
        s = Service(cfg(tmp_path, storage, portmap=True), portmap_port=pm_port, rpcbind_sockets=())
        s.start()
        try:
            assert s.portmap_mode == "unavailable"
            assert any(f"cannot serve the portmapper on port {pm_port}" in w for w in s.warnings)
            assert s.port
            with RpcClient("127.0.0.1", s.port) as c:
                assert c.call(NFS, 3, 0).ok
        finally:
            s.stop()
    log = (tmp_path / "log" / "recovery_fs").read_text()
    assert "WARNING recovery_fs.service: cannot serve the portmapper" in log


# --- start / stop / status, for real -------------------------------------------------------


def test_start_status_stop_round_trip(tmp_path: Path, storage: Path) -> None:
    port = free_port()
    state = tmp_path / "state"
    args = ["--storage", str(storage), "--bind", "127.0.0.1", "--port", str(port), "--no-portmap"]
    args += ["--state-dir", str(state), "--log-file", str(tmp_path / "log")]
    r = run("start", *args)
    try:
        assert r.returncode == 0, r.stderr
        assert f"port {port}" in r.stdout and "started (pid" in r.stdout
        pid = int(r.stdout.split("pid ")[1].split(")")[0])
        with RpcClient("127.0.0.1", port) as c:
            assert c.call(NFS, 3, 0).ok
        r = run("status", "--state-dir", str(state))
        assert r.returncode == 0
        assert f"pid:      {pid}" in r.stdout and f"NFS {port} (tcp), MOUNT {port}" in r.stdout
        assert "uptime:" in r.stdout and "export:   /recover/images" in r.stdout
        r = run("start", *args)
        assert r.returncode == 4 and "already running" in r.stderr
    finally:
        r = run("stop", "--state-dir", str(state))
    assert r.returncode == 0 and f"stopped (pid {pid})" in r.stdout
    assert run("status", "--state-dir", str(state)).returncode == 3
    assert sorted(os.listdir(state)) == ["secret"]


def test_start_reports_a_failure(tmp_path: Path, storage: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run(
            "start",
            *("--storage", str(storage), "--bind", "127.0.0.1", "--port", str(port)),
            *(
                "--no-portmap",
                "--state-dir",
                str(tmp_path / "st"),
                "--log-file",
                str(tmp_path / "l"),
            ),
        )
    assert r.returncode == 1
    assert "cannot listen on 127.0.0.1 port" in r.stderr
    assert run("status", "--state-dir", str(tmp_path / "st")).returncode == 3


def test_stop_kills_a_server_that_ignores_sigterm(tmp_path: Path) -> None:
    st = StateDir(tmp_path)
    code = textwrap.dedent(
        f"""
        import signal, sys, time
        from pathlib import Path
        from nfsd.service.state import StateDir
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        StateDir(Path({str(tmp_path)!r})).pid_lock().acquire()
        print("locked", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=REPO)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"locked\n"
        assert st.running_pid() == proc.pid
        started = time.monotonic()
        code_, out, err = invoke("stop", "--timeout", "0.5", "--state-dir", str(tmp_path))
        assert code_ == 0, err
        assert "killed" in err and f"stopped (pid {proc.pid})" in out
        assert time.monotonic() - started < 10
        assert proc.wait(5) == -signal.SIGKILL
        assert not st.pid_path.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_as_a_non_root_user_with_print_mount(tmp_path: Path, storage: Path) -> None:
    """The documented unprivileged command line, ended by SIGTERM.

    As root, the server runs as uid 65534 of a user namespace: no privilege
    at all (port 111 cannot be bound), while the Python under /root stays
    readable.
    """
    prefix: list[str] = []
    if os.geteuid() == 0:
        assert shutil.which("unshare"), "util-linux unshare"
        prefix = ["unshare", "--user", "--map-user=65534", "--map-group=65534", "--"]
        probe = subprocess.run(
            [*prefix, sys.executable, "-c", "import os; print(os.geteuid())"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert probe.stdout == "65534\n"
    port = free_port()
    state, log = tmp_path / "state", tmp_path / "log"
    proc = subprocess.Popen(
        [
            *prefix,
            *(sys.executable, "-m", "nfsd.cli", "serve", "--storage", str(storage)),
            *("--bind", "127.0.0.1", "--port", str(port), "--no-portmap"),
            *("--state-dir", str(state), "--log-file", str(log), "--print-mount"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        assert first == "Mount on Linux (as root):\n", proc.stderr.read()
        assert f"port={port},mountport={port}" in proc.stdout.readline()
        with RpcClient("127.0.0.1", port) as c:
            assert c.call(NFS, 3, 0).ok
        assert len(mnt_root(port)) >= 20
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert "serving /recover/images" in proc.stderr.read()
        assert sorted(os.listdir(state)) == ["secret"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_check_storage_errors_come_before_the_state_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        Service(cfg(tmp_path, tmp_path / "missing")).start()
    assert not (tmp_path / "state").exists()


# --- the exports file at start and in the operator's commands ------------------------


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("/recover/images 10.0.0.1(rw)", "rw"),
        ("/recover/images 10.0.0.1(ro,frobnicate)", "frobnicate"),
        ("/recover/images 10.0.0.1(ro", ""),
        ("/srv/elsewhere 10.0.0.1(ro)", "not an export of this server"),
    ],
)
def test_serve_refuses_a_bad_exports_file_naming_file_and_line(
    tmp_path: Path, storage: Path, line: str, why: str
) -> None:
    exports = tmp_path / "exports"
    exports.write_text(f"# comment\n\n{line}\n")
    code, _, err = invoke("serve", *_serve_opts(tmp_path, storage), "--exports", str(exports))
    assert code == 2
    assert f"{exports}:3" in err and why in err


def _serve_opts(tmp_path: Path, storage: Path) -> list[str]:
    return [
        "--storage", str(storage), "--bind", "127.0.0.1", "--port", "0", "--no-portmap",
        "--state-dir", str(tmp_path / "state"), "--log-file", str(tmp_path / "log"),
    ]  # fmt: skip


def test_a_named_exports_file_must_exist(tmp_path: Path, storage: Path) -> None:
    code, _, err = invoke(
        "serve", *_serve_opts(tmp_path, storage), "--exports", str(tmp_path / "missing")
    )
    assert code == 2 and "does not exist" in err


def test_exports_show_of_a_file(tmp_path: Path) -> None:
    exports = tmp_path / "exports"
    exports.write_text("/recover/images 10.0.0.0/8 *.example(insecure,no_root_squash)\n")
    code, out, _ = invoke(
        "exports", "show", "--exports", str(exports), "--state-dir", str(tmp_path / "s")
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[0] == "/recover/images" and "10.0.0.0/8(ro,secure,root_squash" in out
    assert "*.example(ro,insecure,no_root_squash" in lines[1]


def test_exports_show_refuses_the_path_serve_refuses(tmp_path: Path) -> None:
    """``show`` checks a file before it is put in place: a typo that ``serve`` and
    ``reload`` refuse must not pass it (exit 0) first."""
    exports = tmp_path / "exports"
    exports.write_text("/recover/images 10.0.0.1\n/recover/imagez 10.0.0.2\n")
    code, _, err = invoke(
        "exports", "show", "--exports", str(exports), "--state-dir", str(tmp_path / "s")
    )
    assert code == 2 and f"{exports}:2" in err and "not an export of this server" in err, err


def test_exports_reload_without_a_server(tmp_path: Path) -> None:
    code, _, err = invoke("exports", "reload", "--state-dir", str(tmp_path / "s"))
    assert code == 3 and "not running" in err


def test_exports_reload_of_a_server_it_may_not_signal_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another user's server: one line and exit 1, as ``stop`` answers, not a traceback."""

    def refused(pid: int, sig: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(cli, "_running_pid", lambda state: 4242)
    monkeypatch.setattr(cli.os, "kill", refused)
    code, _, err = invoke("exports", "reload", "--state-dir", str(tmp_path / "s"))
    assert code == 1 and "cannot signal the server (pid 4242)" in err, err


def test_service_reload_applies_or_keeps(tmp_path: Path, storage: Path) -> None:
    exports = tmp_path / "exports"
    exports.write_text("/recover/images 127.0.0.1(insecure)\n")
    s = Service(cfg(tmp_path, storage, exports=exports))
    s.start()
    try:
        assert s.port and len(mnt_root(s.port)) >= 20
        exports.write_text("/recover/images 127.0.0.9(insecure)\n")
        assert s.reload_exports() is None
        st = json.loads((tmp_path / "state" / "status.json").read_text())
        assert st["exports"]["generation"] == 2 and "127.0.0.9(" in st["exports"]["effective"]
        with pytest.raises(AssertionError):
            mnt_root(s.port)  # 127.0.0.1 is no longer listed: MNT3ERR_ACCES
        exports.write_text("/recover/images 127.0.0.1(insecure,bogus)\n")
        why = s.reload_exports()
        assert why is not None and f"{exports}:1" in why
        st = json.loads((tmp_path / "state" / "status.json").read_text())
        assert st["exports"]["generation"] == 2 and st["exports"]["error"] == why
    finally:
        s.stop()
