"""End-to-end: who may mount and call, against ``recovery-fs serve --exports FILE``.

The server runs on 127.0.0.1; clients bind distinct source addresses on
loopback (Linux accepts any of 127/8 as a source without a namespace):

===========  ================================================================
client       in the exports file of the module's server
===========  ================================================================
127.0.0.1    listed, ``secure`` (libnfs's tools, root: a port below 1024)
127.0.0.2    listed, ``insecure``
127.0.0.3    not listed: the host that copied a handle
127.0.0.4    listed, ``secure`` (the default): needs a source port < 1024
127.0.0.5    listed, ``insecure,sec=sys:none``
===========  ================================================================

Calls are built by ``support.rpcwire`` (``struct``, from the RFCs), never by
the project's ``xdr``.  What is expected is knfsd's behaviour (the lead's
contract): MNT refused ``MNT3ERR_ACCES``; an NFS call from an unlisted host
``NFS3ERR_STALE``, from a high port on a ``secure`` export ``NFS3ERR_PERM``,
with a flavour not allowed ``NFS3ERR_ACCES``; each with the procedure's
failure body and not one byte of attributes or data.

The tests that need port 111 (``showmount``, the portmapper over UDP) run
the server in a private network namespace (``support.netns_probe``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.support import rpcwire as w
from tests.e2e.support.prereq import require as _require
from tests.e2e.support.rpcwire import Client
from tests.e2e.support.server import Server, recovery_fs_command
from tests.e2e.support.storage import Presented, build_sample

pytestmark = pytest.mark.e2e

DIR = "2026-11-20T0100"
NAME = "with space & more.txt"
FILE = f"{DIR}/{NAME}"
EXPORTS = """\
# the module's server: see the table of the module docstring
/recover/images 127.0.0.2(insecure) 127.0.0.4(ro) \\
    127.0.0.5(insecure,sec=sys:none) 127.0.0.1
"""


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Presented]:
    _require(recovery_fs_command() is not None, "the recovery-fs command (pip install -e .)")
    _require(os.geteuid() == 0, "root: source ports below 1024, network namespaces")
    root = tmp_path_factory.mktemp("storage")
    root.chmod(0o755)  # root_squash: our uid 0 calls run as nobody, who must search it
    return root, build_sample(root)


def start(storage_root: Path, workdir: Path, exports: str, *args: str) -> tuple[Server, Path]:
    """A server over ``storage_root`` with ``exports`` as its exports file."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "exports"
    path.write_text(exports)
    try:
        return Server(storage_root, workdir, args=("--exports", str(path), *args)), path
    except (RuntimeError, TimeoutError) as e:
        out = workdir / "recovery-fs.out"
        pytest.fail(f"recovery-fs serve did not start: {e}\n{out.read_text(errors='replace')}")


@pytest.fixture(scope="module")
def server(storage, tmp_path_factory):
    srv, _ = start(storage[0], tmp_path_factory.mktemp("access"), EXPORTS)
    yield srv
    alive = srv.alive()
    log = srv.log.read_text(errors="replace")  # before the stop: what the tests caused
    srv.stop()
    assert alive, f"the server died during the tests\n{srv.diagnostics()}"
    assert "Traceback" not in log, log[-4000:]
    # refusals are logged once per client and worker process (the server runs
    # two: support.server), not once per call
    assert len([ln for ln in log.splitlines() if "127.0.0.3" in ln]) <= 2, log[-4000:]


def client(srv: Server, source: str, **kw) -> Client:
    return Client((srv.host, srv.port), source, **kw)


def handles(srv: Server, source: str = "127.0.0.2", **kw) -> tuple[bytes, bytes, bytes]:
    """Root, folder and file handles, as an allowed host gets them."""
    with client(srv, source, **kw) as c:
        status, root, _ = c.mount()
        assert status == w.MNT3_OK and root, f"MNT from {source}: {status}\n{srv.diagnostics()}"
        folder = w.lookup_ok(c.nfs(w.LOOKUP, w.lookup(root, DIR.encode())).body)
        file = w.lookup_ok(c.nfs(w.LOOKUP, w.lookup(folder, NAME.encode())).body)
    return root, folder, file


def getattr_status(c: Client, fh: bytes, cred: bytes | None = None) -> int:
    return c.nfs(w.GETATTR, w.fh_args(fh), cred).status()


# ---------------------------------------------------------------- MNT


def test_mnt_from_a_listed_host_gives_the_root_and_only_auth_sys(server):
    with client(server, "127.0.0.2") as c:
        status, fh, flavours = c.mount()
        assert c.port >= 1024
        assert status == w.MNT3_OK
        assert fh and 0 < len(fh) <= 64
        assert flavours == [w.AUTH_SYS], "the default sec= is sys alone"
        assert getattr_status(c, fh) == w.NFS3_OK


def test_mnt_from_an_unlisted_host_is_refused(server):
    for reserved in (False, True):
        with client(server, "127.0.0.3", reserved=reserved) as c:
            assert c.mount() == (w.MNT3ERR_ACCES, None, []), f"reserved port: {reserved}"
    # refused at the export's folders too, not only at its root
    with client(server, "127.0.0.3") as c:
        assert c.mount(f"/recover/images/{DIR}".encode())[0] == w.MNT3ERR_ACCES
    said = [ln for ln in server.log.read_text().splitlines() if "127.0.0.3" in ln]
    assert said, "the refusal is logged, with the host"
    assert " WARNING " in said[0] or " ERROR " in said[0], said


def test_secure_export_needs_a_port_below_1024(server):
    with client(server, "127.0.0.4") as c:
        assert c.port >= 1024
        assert c.mount()[0] == w.MNT3ERR_ACCES, "a high source port on a secure export"
    with client(server, "127.0.0.4", reserved=True) as c:
        assert c.port < 1024
        status, fh, flavours = c.mount()
        assert (status, flavours) == (w.MNT3_OK, [w.AUTH_SYS])
        assert fh is not None
        assert getattr_status(c, fh) == w.NFS3_OK
    # The handle, from the same host but a high port: NFS3ERR_PERM, as knfsd.
    with client(server, "127.0.0.4") as c:
        assert getattr_status(c, fh) == w.NFS3ERR_PERM


def test_sec_lists_the_flavours_mnt_offers_and_calls_may_use(server):
    with client(server, "127.0.0.5") as c:
        status, fh, flavours = c.mount()
        assert status == w.MNT3_OK and fh
        assert sorted(flavours) == [w.AUTH_NONE, w.AUTH_SYS]
        assert getattr_status(c, fh, w.AUTH_NONE_CRED) == w.NFS3_OK
    root, _, _ = handles(server)
    with client(server, "127.0.0.2") as c:  # sec=sys (the default): AUTH_NONE refused
        assert getattr_status(c, root, w.AUTH_NONE_CRED) == w.NFS3ERR_ACCES
        assert getattr_status(c, root) == w.NFS3_OK


# ---------------------------------------------------------------- a copied handle

# procedure -> (arguments from the root, folder and file handles, failure body)
STALE = w.u32(w.NFS3ERR_STALE)
NO_ATTRS = w.u32(0)  # post_op_attr: attributes_follow FALSE
COPIED = {
    "GETATTR": (w.GETATTR, lambda r, d, f: w.fh_args(f), STALE),
    "LOOKUP": (w.LOOKUP, lambda r, d, f: w.lookup(d, NAME.encode()), STALE + NO_ATTRS),
    "ACCESS": (w.ACCESS, lambda r, d, f: w.access(f), STALE + NO_ATTRS),
    "READ": (w.READ, lambda r, d, f: w.read(f), STALE + NO_ATTRS),
    "READDIR": (w.READDIR, lambda r, d, f: w.readdir(d), STALE + NO_ATTRS),
    "READDIRPLUS": (w.READDIRPLUS, lambda r, d, f: w.readdirplus(d), STALE + NO_ATTRS),
    "FSSTAT": (w.FSSTAT, lambda r, d, f: w.fh_args(r), STALE + NO_ATTRS),
}


def test_a_copied_handle_gets_nothing(server, storage):
    root, folder, file = handles(server)
    secret = storage[1][FILE]
    assert secret
    # The same calls from the host that may make them: all succeed (so the
    # refusals below are about the host, not about malformed calls).
    with client(server, "127.0.0.2") as c:
        for name, (proc, args, _) in COPIED.items():
            assert c.nfs(proc, args(root, folder, file)).status() == w.NFS3_OK, name
        assert w.read_data(c.nfs(w.READ, w.read(file)).body) == secret
    got = {}
    for reserved in (False, True):
        with client(server, "127.0.0.3", reserved=reserved) as c:
            for name, (proc, args, failure) in COPIED.items():
                r = c.nfs(proc, args(root, folder, file))
                assert r.ok, f"{name}: RPC-level {r.accept_stat}"
                got[name, reserved] = r.body
                assert r.body == failure, f"{name} from 127.0.0.3: {r.body.hex()}"
                assert secret not in r.raw and NAME.encode() not in r.raw
    assert len(got) == 2 * len(COPIED)


# ---------------------------------------------------------------- libnfs, a real client


def test_libnfs_as_root_reads_from_a_secure_export(server, storage):
    _require(shutil.which("nfs-cat") is not None, "nfs-cat (Debian package libnfs-utils)")
    res = subprocess.run(
        ["nfs-cat", server.url(FILE)], capture_output=True, timeout=60, check=False
    )
    assert res.returncode == 0, res.stderr.decode() + server.diagnostics()
    assert res.stdout == storage[1][FILE]


def test_libnfs_from_an_unprivileged_port_is_refused(server):
    """libnfs binds a port below 1024 only as root: as nobody, 127.0.0.1 (secure) is refused."""
    _require(shutil.which("setpriv") is not None, "setpriv (util-linux)")
    argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    argv += ["nfs-cat", server.url(FILE)]
    res = subprocess.run(argv, capture_output=True, timeout=60, check=False)
    assert res.returncode != 0
    assert res.stdout == b""
    assert b"mount" in res.stderr.lower(), res.stderr.decode()


# ---------------------------------------------------------------- live changes

RELOAD_BEFORE = "/recover/images 127.0.0.2(insecure) 127.0.0.4(insecure)\n"
RELOAD_AFTER = "# .2 revoked, .3 added\n/recover/images 127.0.0.3(insecure) 127.0.0.4(insecure)\n"
RELOAD_BROKEN = "/recover/images 127.0.0.3(insecure)\n/recover/images 127.0.0.2(bogus_option)\n"


def _wait_for(check, what: str, limit: float = 5.0) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > limit:
            pytest.fail(f"{what} not within {limit} s")
        time.sleep(0.05)
    return time.monotonic() - started


def test_reload_revokes_and_adds_clients_on_live_connections(storage, tmp_path):
    srv, path = start(storage[0], tmp_path, RELOAD_BEFORE)
    revoked = client(srv, "127.0.0.2")
    kept = client(srv, "127.0.0.4")
    try:
        root, _, file = handles(srv)
        assert revoked.mount()[0] == kept.mount()[0] == w.MNT3_OK
        assert getattr_status(revoked, file) == getattr_status(kept, file) == w.NFS3_OK
        with client(srv, "127.0.0.3") as c:
            assert c.mount()[0] == w.MNT3ERR_ACCES

        # A READ on its way when the list changes: answered either way, never wrong.
        revoked.send(w.NFS_PROGRAM, 3, w.READ, w.read(file), None)
        path.write_text(RELOAD_AFTER)
        res = srv.exports("reload")
        assert res.returncode == 0, res.stdout + res.stderr + srv.diagnostics()
        in_flight = w.Reply.parse(revoked.receive())
        if in_flight.status() == w.NFS3_OK:
            assert w.read_data(in_flight.body) == storage[1][FILE]
        else:
            assert in_flight.body == STALE + NO_ATTRS

        # The revoked host's next call, on the same connection: refused.
        assert getattr_status(revoked, file) == w.NFS3ERR_STALE
        assert revoked.nfs(w.READ, w.read(file)).body == STALE + NO_ATTRS
        assert revoked.mount()[0] == w.MNT3ERR_ACCES
        # The still-allowed host's connection was not dropped.
        assert getattr_status(kept, root) == w.NFS3_OK
        # The added host mounts, and its calls are served.
        with client(srv, "127.0.0.3") as c:
            assert c.mount()[0] == w.MNT3_OK
            assert w.read_data(c.nfs(w.READ, w.read(file)).body) == storage[1][FILE]

        # A broken file: exit 1 naming file and line, the old list stays, the log says why.
        path.write_text(RELOAD_BROKEN)
        res = srv.exports("reload")
        assert res.returncode == 1, res.stdout + res.stderr
        assert f"{path}:2" in res.stdout + res.stderr, res.stdout + res.stderr
        with client(srv, "127.0.0.3") as c:
            assert getattr_status(c, file) == w.NFS3_OK, "the old list must stay in force"
        assert getattr_status(revoked, file) == w.NFS3ERR_STALE
        assert getattr_status(kept, file) == w.NFS3_OK
        _wait_for(lambda: "bogus_option" in srv.log.read_text(errors="replace"), "the log line")

        # SIGHUP does what reload does.
        path.write_text(RELOAD_BEFORE)
        srv.proc.send_signal(signal.SIGHUP)
        _wait_for(lambda: getattr_status(revoked, file) == w.NFS3_OK, "re-admitted after SIGHUP")
        with client(srv, "127.0.0.3") as c:
            assert getattr_status(c, file) == w.NFS3ERR_STALE
        assert getattr_status(kept, file) == w.NFS3_OK

        log = srv.log.read_text(errors="replace")
        assert "Traceback" not in log, log[-4000:]
        shown = srv.exports("show")
        assert shown.returncode == 0, shown.stderr
        lines = [ln for ln in shown.stdout.splitlines() if ln.strip()]
        assert all(ln.split()[0] == "/recover/images" for ln in lines), shown.stdout
        for host in ("127.0.0.2", "127.0.0.4"):
            spec = next((ln.split()[1] for ln in lines if ln.split()[1].startswith(host)), "")
            assert spec.startswith(f"{host}(") and "insecure" in spec, shown.stdout
            assert "root_squash" in spec and "ro" in spec.split("(")[1], shown.stdout
        assert "127.0.0.3" not in shown.stdout
        assert srv.alive()
    finally:
        revoked.close()
        kept.close()
        srv.stop()


def _served(srv: Server, source: str, fh: bytes) -> Client | None:
    """A connection from ``source`` whose GETATTR was answered NFS3_OK, or None
    when the server closed it (refused for want of a slot)."""
    c = client(srv, source, timeout=2.0)
    try:
        if getattr_status(c, fh) == w.NFS3_OK:
            return c
    except (OSError, EOFError, ConnectionError):
        pass
    c.close()
    return None


def test_a_host_taken_off_the_list_cannot_keep_the_connection_slots(storage, tmp_path):
    """A host validated before a reload took it off kept its connections, and
    its NULLs (answered whoever calls: the Linux client's pings) kept them
    alive: at --max-connections a listed host was refused for good.  After the
    reload they must be validated again, and the listed host gets a slot."""
    srv, path = start(
        storage[0], tmp_path, RELOAD_BEFORE, "--workers", "1", "--max-connections", "3"
    )
    held: list[Client] = []
    try:
        _, _, file = handles(srv)
        for _ in range(3):
            c = _served(srv, "127.0.0.2", file)
            assert c is not None, srv.diagnostics()
            held.append(c)
        assert _served(srv, "127.0.0.4", file) is None, "all three slots validated: refused"

        path.write_text(RELOAD_AFTER)
        res = srv.exports("reload")
        assert res.returncode == 0, res.stdout + res.stderr + srv.diagnostics()
        for c in held:  # the removed host keeps pinging: answered, yet not admitted
            assert c.call(w.NFS_PROGRAM, 3, 0).accept_stat == 0
        got: list[Client] = []

        def listed_host_served() -> bool:
            c = _served(srv, "127.0.0.4", file)
            got.extend([c] if c is not None else [])
            return c is not None

        _wait_for(listed_host_served, "a slot for the listed host")
        for c in held:  # refused as before, on the connections it still has
            with contextlib.suppress(OSError, EOFError):  # the one closed to make room
                assert getattr_status(c, file) == w.NFS3ERR_STALE
        held += got
        assert srv.alive()
        log = srv.log.read_text(errors="replace")
        assert "not validated since the exports changed" in log, log[-4000:]
        assert "Traceback" not in log, log[-4000:]
    finally:
        for c in held:
            c.close()
        srv.stop()


def test_broken_exports_file_stops_the_server_at_start(storage, tmp_path):
    path = tmp_path / "exports"
    path.write_text("# fine\n/recover/images 127.0.0.2(rw)\n")
    cmd = recovery_fs_command()
    assert cmd
    argv = [*cmd, "serve", "--storage", str(storage[0]), "--bind", "127.0.0.1", "--port", "0"]
    argv += ["--no-portmap", "--state-dir", str(tmp_path / "state")]
    argv += ["--log-file", str(tmp_path / "log"), "--exports", str(path)]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert res.returncode != 0
    assert f"{path}:2" in res.stdout + res.stderr, res.stdout + res.stderr


# ---------------------------------------------------------------- NFS over UDP

UDP_EXPORTS = "/recover/images 127.0.0.2(insecure)\n"


def _udp_getattr(srv: Server, fh: bytes) -> w.Reply | None:
    with client(srv, "127.0.0.2", udp=True, timeout=1.0) as c:
        try:
            return c.nfs(w.GETATTR, w.fh_args(fh))
        except TimeoutError:
            return None


def test_nfs_over_udp_only_with_the_udp_option(storage, tmp_path):
    plain, _ = start(storage[0], tmp_path / "plain", UDP_EXPORTS)
    try:
        root, _, _ = handles(plain)
        with client(plain, "127.0.0.2", udp=True) as c:
            assert c.mount()[0] == w.MNT3_OK, "MOUNT answers over UDP"
        reply = _udp_getattr(plain, root)  # the server's choice: PROG_UNAVAIL (nfsd/rpc.py)
        assert reply is not None and reply.accept_stat == w.PROG_UNAVAIL, reply
    finally:
        plain.stop()
    served, _ = start(storage[0], tmp_path / "udp", UDP_EXPORTS, "--udp")
    try:
        root, _, _ = handles(served)
        reply = _udp_getattr(served, root)
        assert reply is not None and reply.status() == w.NFS3_OK
    finally:
        served.stop()


# ---------------------------------------------------------------- port 111: a namespace

NETNS_EXPORTS = "/recover/images 127.0.0.1 127.0.0.2(insecure) 10.0.0.0/8(ro)\n"
GROUPS = ["127.0.0.1", "127.0.0.2", "10.0.0.0/8"]


@pytest.fixture(scope="module")
def netns_probe(storage, tmp_path_factory) -> dict:
    """What ``support.netns_probe`` saw in a private namespace (server on 111 too)."""
    for tool in ("unshare", "ip", "showmount"):
        _require(shutil.which(tool) is not None, f"{tool} (iproute2, util-linux, nfs-common)")
    work = tmp_path_factory.mktemp("netns")
    (work / "exports").write_text(NETNS_EXPORTS)
    args = ["--exports", str(work / "exports")]
    spec = {"storage": str(storage[0]), "work": str(work), "args": args}
    (work / "spec.json").write_text(json.dumps(spec))
    argv = ["unshare", "--net", "--mount", "--pid", "--fork", "--kill-child"]
    argv += [sys.executable, "-m", "tests.e2e.support.netns_probe", str(work / "spec.json")]
    repo = Path(__file__).resolve().parents[2]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=repo, check=False)
    out = work / "probe.json"
    assert res.returncode == 0 and out.exists(), f"probe failed:\n{res.stdout}\n{res.stderr}"
    return json.loads(out.read_text())


def test_showmount_e_lists_the_export_with_its_client_groups(netns_probe):
    show = netns_probe["showmount -e"]
    assert show["rc"] == 0, show
    lines = show["stdout"].splitlines()
    assert lines[0].startswith("Export list for 127.0.0.1"), show
    directory, listed = lines[1].split(None, 1)
    assert directory == "/recover/images"
    assert sorted(listed.split(",")) == sorted(GROUPS), show


def test_showmount_a_lists_the_mounts(netns_probe):
    show = netns_probe["showmount -a"]
    assert show["rc"] == 0, show
    assert "127.0.0.1:/recover/images" in show["stdout"], show
    assert "127.0.0.2:/recover/images" in show["stdout"], show


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_export_and_dump_raw_over_each_transport(netns_probe, transport):
    for source in ("127.0.0.1", "127.0.0.2"):
        got = netns_probe[f"EXPORT {transport} {source}"]
        assert got == [["/recover/images", GROUPS]] or (
            len(got) == 1 and sorted(got[0][1]) == sorted(GROUPS)
        ), got
        dump = {tuple(m) for m in netns_probe[f"DUMP {transport} {source}"]}
        assert {("127.0.0.1", "/recover/images"), ("127.0.0.2", "/recover/images")} <= dump
    assert netns_probe[f"EXPORT {transport} 127.0.0.3"] == [], "a host not admitted sees nothing"
    assert netns_probe[f"DUMP {transport} 127.0.0.3"] == []


def test_portmapper_over_udp_never_amplifies(netns_probe):
    probes = netns_probe["portmap udp"]
    assert {p["what"] for p in probes} >= {"v2 DUMP", "v2 CALLIT", "v4 DUMP", "v4 INDIRECT"}
    big = [p for p in probes if p["reply"] is not None and p["reply"] > p["call"]]
    assert big == [], f"replies larger than their calls: {big}"
    callit = [p for p in probes if "CALLIT" in p["what"] or "INDIRECT" in p["what"]]
    assert all(p["forwarded"] is False for p in callit), callit
    assert netns_probe["portmap tcp DUMP ok"], "the portmapper still answers DUMP over TCP"
