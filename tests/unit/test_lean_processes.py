"""The server's processes stay lean (``nfsd.service.supervisor``'s notes).

``recovery-fs serve`` with workers is the supervisor for as long as the
server runs: it must not import what only serves calls (namespace, NFS
procedures) or what only other commands use (``cryptography`` for
``tls init``); and what it registers with the portmapper, without building
the programs, must be what the workers serve.  The READ buffers, a busy
worker's larger part, are shared out and resident only where filled.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from merge import build_namespace
from nfsd.cli.commands import LAZY_COMMANDS, main
from nfsd.programs import READ_BUFFERS
from nfsd.programs.buffers import BufferPool
from nfsd.programs.build import build_programs
from nfsd.rpc import Program
from nfsd.service.config import Config
from nfsd.service.supervisor import Supervisor, advertised_programs
from nfsd.service.worker import Worker
from nfsd.transport.rpcclient import RpcClient
from tests.proto.nfsclient import SECRET, open_access
from tests.unit.test_cli import MOUNT, NFS, cfg, free_port
from xdr import portmap as pm
from xdr.base import Packer, Unpacker

SERVING_ONLY = (
    "merge",
    "instant",
    "construct",
    "cryptography",
    "nfsd.programs.build",
    "nfsd.programs.nfs3",
    "xdr.nfs3",  # every NFS type; the supervisor needs a few numbers (xdr.nfs3const)
    "nfsd.service.serving",
    "ssl",  # OpenSSL's libraries: imported where TLS is configured
    "hashlib",
)


def test_the_supervisor_imports_nothing_that_serves() -> None:
    code = "import sys, nfsd.cli, nfsd.service.supervisor; print(*sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    loaded = [m for m in out if any(m == p or m.startswith(p + ".") for p in SERVING_ONLY)]
    assert loaded == []


def test_a_worker_without_tls_loads_no_ssl() -> None:
    code = "import sys, nfsd.service.worker, nfsd.service.serving; print(*sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "ssl" not in out and "_ssl" not in out


def _shape(programs: list[Program]) -> list[tuple[int, str, list[int], bool]]:
    return [(p.number, p.name, sorted(p.versions), p.udp) for p in programs]


@pytest.mark.parametrize("udp", [False, True])
def test_advertised_programs_are_the_served_ones(tmp_path: Path, udp: bool) -> None:
    (tmp_path / "file").write_bytes(b"x")
    served = build_programs(build_namespace(str(tmp_path)), SECRET, open_access(), udp=udp)
    assert _shape(advertised_programs(udp=udp)) == _shape(served)


def test_lazy_commands_load_when_named() -> None:
    for name in LAZY_COMMANDS:
        result = CliRunner().invoke(main, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert main.commands[name].name == name


def _rss_kib() -> int:
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])


def test_read_buffers_become_resident_only_where_filled() -> None:
    """64 buffers of 1 MiB handed out for 4 KiB READs: a few pages each, not 64 MiB."""
    pool = BufferPool(1 << 20, 64)
    before = _rss_kib()
    bufs = [pool.acquire() for _ in range(64)]
    for buf in bufs:
        view = memoryview(buf)
        assert len(view) == 1 << 20 and not view.readonly
        assert view[:4096] == bytes(4096) and view[-1] == 0
        view[:4096] = b"\xab" * 4096
        assert buf[:4096] == b"\xab" * 4096
        view.release()
    assert _rss_kib() - before < 16 * 1024
    for buf in bufs:
        pool.release(buf)
    assert pool.acquire() is bufs[-1]  # the last one back, the warmest, goes out first


def test_the_workers_share_the_read_buffers_of_one_server(tmp_path: Path) -> None:
    cfg = Config(storage=tmp_path, state_dir=tmp_path / "state", log_file=tmp_path / "log")
    for count in (1, 2, 3, 5):
        shares = [Worker(cfg, i, count, []).read_buffers for i in range(count)]
        assert sum(shares) == READ_BUFFERS


def _port_of(pm_port: int, prog: int, prot: int) -> int:
    """PMAPPROC_GETPORT of version 3 of ``prog`` over ``prot``."""
    p = Packer()
    for value in (prog, 3, prot, 0):
        p.pack_uint(value)
    with RpcClient("127.0.0.1", pm_port) as c:
        r = c.call(pm.PMAP_PROG, pm.PMAP_VERS, pm.PMAPPROC_GETPORT, p.get_buffer())
    assert r.ok
    return Unpacker(r.body).unpack_uint()


@pytest.mark.parametrize("udp", [False, True])
def test_a_supervisor_maps_what_its_workers_serve(tmp_path: Path, udp: bool) -> None:
    """Its own portmapper, from the advertised programs, points at the workers."""
    storage = tmp_path / "storage"
    storage.mkdir()
    (storage / "file").write_bytes(b"x")
    pm_port = free_port()
    config = cfg(tmp_path, storage, portmap=True, workers=2, udp=udp)
    s = Supervisor(config, portmap_port=pm_port, rpcbind_sockets=())
    s.start()
    try:
        assert s.portmap_mode == "own"
        tcp, udp_ = pm.IPPROTO_TCP, pm.IPPROTO_UDP
        assert _port_of(pm_port, MOUNT, tcp) == _port_of(pm_port, MOUNT, udp_) == s.port
        assert _port_of(pm_port, NFS, tcp) == s.port
        assert _port_of(pm_port, NFS, udp_) == (s.port if udp else 0)
        with RpcClient("127.0.0.1", s.port) as c:  # a worker answers
            assert c.call(NFS, 3, 0).ok
    finally:
        s.stop()


SESSION_ONLY = ("sqlite3", "instant.namespace", "instant.store", "instant.db")
"""What a server process imports once an instant-recovery session exists (3 to 4 MB)."""

_WORKER = """
import sys
from pathlib import Path
from instant.sessions import SessionRegistry
from merge import build_namespace
from nfsd.programs.build import build_programs
from nfsd.programs.sessions import SessionManager
from tests.proto.nfsclient import SECRET, open_access
storage, state = sys.argv[1:]
ns = build_namespace(storage)
sessions = SessionManager(SessionRegistry(Path(state)), ns, SECRET)
build_programs(ns, SECRET, open_access(), sessions=sessions)
served = [s.info.export_path for s in sessions.sessions()]
print(served, *sys.modules)
"""


def _worker_modules(storage: Path, state: Path) -> tuple[str, list[str]]:
    out = subprocess.run(
        [sys.executable, "-c", _WORKER, str(storage), str(state)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    ).stdout
    served, _, modules = out.partition("] ")
    return served + "]", modules.split()


def test_a_server_imports_the_session_store_once_a_session_exists(tmp_path: Path) -> None:
    from instant.sessions import SessionRegistry, create_session

    storage, state = tmp_path / "storage", tmp_path / "state"
    (storage / "vm").mkdir(parents=True)
    (storage / "vm" / "a.vmx").write_bytes(b"x=1\n")
    served, modules = _worker_modules(storage, state)
    assert served == "[]"
    assert [m for m in modules if m in SESSION_ONLY or m == "_sqlite3"] == []

    info = create_session(
        SessionRegistry(state), build_namespace(str(storage)), "s1", {"web01": ("vm",)}
    )
    served, modules = _worker_modules(storage, state)
    assert served == repr([info.export_path])
    assert set(SESSION_ONLY) <= set(modules)
