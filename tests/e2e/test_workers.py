"""End-to-end: ``recovery-fs serve --workers N``: a supervisor over worker processes.

What each test holds the supervised server to (``nfsd.service.supervisor``):

* ``status`` shows each worker (pid, connections, calls, RSS) and the total;
* a worker killed with SIGKILL mid-read is replaced within a second, and the
  reading client (libnfs's ``nfs-cat``, which reconnects and retransmits)
  gets every byte right; the spare takes its slot, and is itself replaced;
* ``exports reload`` reaches every worker (a host taken off the list is
  refused on connections held by both workers) and reports a bad file;
* ``appliance.debug.level`` reaches every process, each line naming it;
* two servers on two state directories with one secret are interchangeable
  (a handle, a cookie verifier from one valid on the other);
* ``--proxy-from``: the exports check sees the client a PROXY header names,
  and only when a listed balancer sends it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.support import rpcwire as w
from tests.e2e.support.prereq import require as _require
from tests.e2e.support.procs import stat_fields, suspend
from tests.e2e.support.rpcwire import Client
from tests.e2e.support.server import Server, recovery_fs_command

pytestmark = pytest.mark.e2e

BIG = 48 << 20
NFS, AUTH_TLS = 100003, 7  # RFC 1813; RFC 9289 §4.1


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _require(recovery_fs_command() is not None, "the recovery-fs command (pip install -e .)")
    _require(shutil.which("nfs-cat") is not None, "nfs-cat (Debian package libnfs-utils)")
    root = tmp_path_factory.mktemp("storage")
    root.chmod(0o755)
    (root / "big.img").write_bytes(os.urandom(BIG))
    (root / "dir").mkdir()
    for i in range(50):
        (root / "dir" / f"f{i:03}.txt").write_text(f"file {i}\n")
    return root


def start(storage: Path, workdir: Path, exports: str, *args: str) -> Server:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "exports"
    path.write_text(exports)
    try:
        srv = Server(storage, workdir, args=("--exports", str(path), *args))
    except (RuntimeError, TimeoutError) as e:
        out = workdir / "recovery-fs.out"
        pytest.fail(f"recovery-fs serve did not start: {e}\n{out.read_text(errors='replace')}")
    # NULL answers once the first worker listens; status.json, once all do
    wait_for(lambda: srv.state.joinpath("status.json").exists())
    return srv


def cli(srv: Server, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*srv.command, *argv, "--state-dir", str(srv.state)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def status(srv: Server) -> dict:
    p = cli(srv, "status", "--json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def status_file(srv: Server) -> dict:
    """status.json as the supervisor last wrote it (no process started)."""
    try:
        return json.loads(srv.state.joinpath("status.json").read_text())
    except (OSError, ValueError):
        return {"workers": [{"pid": None, "ready": False}] * 8}


def wait_for(what, timeout: float = 10.0, every: float = 0.02):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"not within {timeout} s")


@pytest.fixture(scope="module")
def server(storage: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    srv = start(
        storage, tmp_path_factory.mktemp("workers"), "/recover/images 127.0.0.0/8(insecure)\n"
    )
    yield srv
    srv.stop()


def test_status_shows_each_worker_and_the_total(server: Server) -> None:
    for _ in range(4):
        subprocess.run(["nfs-cat", server.url("dir/f001.txt")], capture_output=True, check=True)
    st = wait_for(lambda: (s := status(server))["transport"]["calls"] >= 4 * 3 and s)
    workers = st["workers"]
    assert [x["index"] for x in workers] == [0, 1]
    assert len({x["pid"] for x in workers} | {st["pid"]}) == 3
    assert all(x["ready"] and x["rss"] > 10 << 20 for x in workers)
    assert st["transport"]["calls"] == sum(x["calls"] for x in workers)
    assert st["rss_total"] > sum(x["rss"] for x in workers)
    text = cli(server, "status").stdout
    for x in workers:
        assert re.search(
            rf"worker {x['index']}: pid {x['pid']}, \d+ connections, \d+ calls, RSS", text
        )
    assert "total:" in text


def test_a_worker_killed_mid_read_is_replaced_and_the_read_is_byte_exact(
    server: Server, storage: Path
) -> None:
    want = hashlib.sha256((storage / "big.img").read_bytes()).hexdigest()
    reader = subprocess.Popen(
        ["nfs-cat", server.url("big.img")], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert reader.stdout is not None
    digest = hashlib.sha256()
    got = 0
    first = reader.stdout.read(1 << 20)  # started: then it stalls on the full pipe
    digest.update(first)
    got += len(first)
    holder = wait_for(
        lambda: next((x for x in status(server)["workers"] if x["connections"]), None)
    )
    os.kill(holder["pid"], signal.SIGKILL)
    killed = time.monotonic()
    # status.json itself (rewritten at once when a worker is replaced): a
    # `recovery-fs status` process per poll would cost more than the bound.
    replaced = wait_for(
        lambda: (
            (x := status_file(server)["workers"][holder["index"]])["pid"] != holder["pid"]
            and x["ready"]
            and x
        ),
        every=0.01,
    )
    took = time.monotonic() - killed
    while chunk := reader.stdout.read(1 << 20):
        digest.update(chunk)
        got += len(chunk)
    assert reader.wait(60) == 0, reader.stderr.read() if reader.stderr else ""
    assert got == BIG and digest.hexdigest() == want
    assert replaced["restarts"] == holder["restarts"] + 1
    assert took < 1.0, f"replaced after {took:.2f} s"
    assert "killed by signal 9" in server.log.read_text()


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not: its parent has not waited yet)."""
    fields = stat_fields(Path(f"/proc/{pid}/stat"))
    return fields is not None and fields[0] != "Z"


def _spare_other_than(srv: Server, pid: int) -> int | None:
    """The spare's pid in status.json, if there is one and it is not ``pid``."""
    spare = status_file(srv).get("spare")
    return spare["pid"] if spare and spare["pid"] != pid else None


def test_a_spare_takes_a_killed_workers_place_and_is_itself_replaced(
    storage: Path, tmp_path: Path
) -> None:
    """The spare (``nfsd.service.supervisor``): started once the workers are
    ready; a killed worker's slot goes to it, not to a fresh interpreter; a new
    spare follows; a spare killed unused is started again; none outlives stop."""
    srv = start(storage, tmp_path / "s", "/recover/images 127.0.0.0/8(insecure)\n")
    try:
        first = wait_for(lambda: status_file(srv).get("spare"))["pid"]
        assert _alive(first) and "spare:    pid" in cli(srv, "status").stdout
        victim = status_file(srv)["workers"][1]
        os.kill(victim["pid"], signal.SIGKILL)
        took = wait_for(
            lambda: (
                (x := status_file(srv)["workers"][1])["pid"] != victim["pid"] and x["ready"] and x
            ),
            every=0.005,
        )
        assert took["pid"] == first, "the slot went to a fresh process, not to the spare"
        assert took["restarts"] == victim["restarts"] + 1
        client = Client((srv.host, srv.port), "127.0.0.1")
        assert client.mount()[1]  # served (by either worker)
        client.close()
        second = wait_for(lambda: _spare_other_than(srv, first))
        time.sleep(2.1)  # past FLAP_SECONDS: the next spare starts without a delay
        os.kill(second, signal.SIGKILL)
        third = wait_for(lambda: _spare_other_than(srv, second))
        assert _alive(third) and "spare worker pid" in srv.log.read_text()
    finally:
        srv.stop()
    assert not _alive(third)


def _holds_listener(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a TCP socket listening on ``port`` (/proc)."""
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                f = row.split()
                if int(f[1].rsplit(":", 1)[1], 16) == port and f[3] == "0A":
                    listening.add(f"socket:[{f[9]}]")
    fds = Path(f"/proc/{pid}/fd")
    for fd in os.listdir(fds):
        try:
            if os.readlink(fds / fd) in listening:
                return True
        except FileNotFoundError:
            continue  # closed as we looked: a process starting opens and closes files
    return False


def test_with_inherited_listeners_the_spare_holds_none_until_it_takes_a_slot(
    storage: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``RECOVERY_FS_LISTEN=inherit``: the spare gets the listening sockets with its
    spec, not at its start (holding them while it imported, it kept the port
    bound after a supervisor killed with SIGKILL), and serves on them."""
    monkeypatch.setenv("RECOVERY_FS_LISTEN", "inherit")
    srv = start(storage, tmp_path / "s", "/recover/images 127.0.0.0/8(insecure)\n")
    try:
        assert status_file(srv)["listen_mode"] == "inherit"
        spare = wait_for(lambda: status_file(srv).get("spare"))["pid"]
        victim = status_file(srv)["workers"][0]
        assert _holds_listener(victim["pid"], srv.port) and not _holds_listener(spare, srv.port)
        os.kill(victim["pid"], signal.SIGKILL)
        wait_for(lambda: (x := status_file(srv)["workers"][0])["pid"] == spare and x["ready"])
        assert _holds_listener(spare, srv.port)
        other = status_file(srv)["workers"][1]["pid"]
        suspend(other)  # every new connection is the spare's to accept
        try:
            for _ in range(4):
                client = Client((srv.host, srv.port), "127.0.0.1")
                assert client.mount()[1]
                client.close()
        finally:
            os.kill(other, signal.SIGCONT)
    finally:
        srv.stop()


def test_a_reload_while_a_worker_starts_succeeds_and_reaches_it(
    storage: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker starting when the list is reloaded (here the spare, stopped before
    it serves) is no failure of the reload ("was not running to apply it": the
    list is in force everywhere else) and serves the new list once it runs."""
    monkeypatch.setenv("RECOVERY_FS_LISTEN", "inherit")  # a stopped worker takes no connection
    exports = tmp_path / "s" / "exports"
    srv = start(
        storage, tmp_path / "s", "/recover/images 127.0.0.2(insecure) 127.0.0.3(insecure)\n"
    )
    spare = wait_for(lambda: status_file(srv).get("spare"))["pid"]
    stopped = [spare]
    try:
        suspend(spare)
        victim = status_file(srv)["workers"][0]
        os.kill(victim["pid"], signal.SIGKILL)
        wait_for(lambda: (x := status_file(srv)["workers"][0])["pid"] == spare and not x["ready"])
        exports.write_text("/recover/images 127.0.0.2(insecure)\n")
        p = cli(srv, "exports", "reload")
        assert p.returncode == 0, p.stdout + p.stderr
        other = status_file(srv)["workers"][1]["pid"]
        os.kill(spare, signal.SIGCONT)
        stopped = [other]
        wait_for(lambda: status_file(srv)["workers"][0]["ready"])
        suspend(other)  # the new connections are the started worker's
        allowed = Client((srv.host, srv.port), "127.0.0.2")
        stranger = Client((srv.host, srv.port), "127.0.0.3")
        assert allowed.mount()[1] and not stranger.mount()[1]
        allowed.close()
        stranger.close()
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        srv.stop()


def test_a_worker_that_cannot_start_says_why_and_comes_back(tmp_path: Path) -> None:
    """A replacement that fails to start (here: the storage gone) is logged
    with the reason it sent, restarted with a growing delay, and serves again
    once the cause is gone."""
    store = tmp_path / "storage"
    store.mkdir()
    (store / "a.txt").write_text("a\n")
    srv = start(store, tmp_path / "s", "/recover/images 127.0.0.0/8(insecure)\n")
    try:
        victim = status_file(srv)["workers"][0]
        store.rename(tmp_path / "away")
        os.kill(victim["pid"], signal.SIGKILL)
        wait_for(lambda: "cannot read the storage" in srv.log.read_text())
        lines = srv.log.read_text().splitlines()
        line = next(ln for ln in lines if "cannot read the storage" in ln)
        assert re.search(r"worker 0 pid \d+ exited with status 1 after [0-9.]+ s \(", line), line
        assert "restarting in" in line, line
        (tmp_path / "away").rename(store)
        wait_for(
            lambda: (x := status_file(srv)["workers"][0])["ready"] and x["pid"] != victim["pid"],
            timeout=20,
        )
    finally:
        srv.stop()


def _record(body: bytes) -> bytes:
    return (0x80000000 | len(body)).to_bytes(4, "big") + body


def _read_record(sock: socket.socket) -> bytes:
    """One single-fragment reply record's body."""
    head = b""
    while len(head) < 4:
        got = sock.recv(4 - len(head))
        assert got, "closed"
        head += got
    n, body = int.from_bytes(head, "big") & 0x7FFFFFFF, b""
    while len(body) < n:
        got = sock.recv(n - len(body))
        assert got, "closed"
        body += got
    return body


def _tls_names(port: int, ca: Path) -> str:
    """The server's certificate names, over RPC-with-TLS (RFC 9289: the AUTH_TLS
    NULL probe, then TLS 1.3 with ALPN "sunrpc"), after a NULL call answered in it."""
    probe = w.call_record(1, NFS, 3, 0, cred=w.u32(AUTH_TLS) + w.u32(0))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(_record(probe))
        assert _read_record(sock).endswith(b"STARTTLS" + bytes(4))
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.set_alpn_protocols(["sunrpc"])
        with ctx.wrap_socket(sock, server_hostname="localhost") as tls:
            tls.sendall(_record(w.call_record(2, NFS, 3, 0)))
            assert _read_record(tls)[:4] == (2).to_bytes(4, "big")  # type: ignore[arg-type]
            cert = tls.getpeercert()
            assert cert is not None
            return ",".join(str(v) for _, v in cert["subjectAltName"])


def test_workers_started_while_the_tls_files_are_broken_serve_the_last_loaded(
    storage: Path, tmp_path: Path
) -> None:
    """The running workers keep their TLS context when the files on disk stop
    loading (a key replaced before its certificate); workers started then (every
    one was killed: the spare's slot and a fresh one) must not exit for it,
    leaving the port to no one, plain clients included: they serve the copy the
    supervisor kept of the files it last loaded, and the new files once they load."""
    pki = tmp_path / "pki"
    init = [*recovery_fs_command(), "tls", "init", str(pki), "--name", "localhost"]  # type: ignore[misc]
    subprocess.run([*init, "--address", "127.0.0.1"], check=True, capture_output=True)
    live = tmp_path / "live"
    live.mkdir()
    cert, key = live / "server.pem", live / "server.key"
    shutil.copy(pki / "server.pem", cert)
    shutil.copy(pki / "server.key", key)
    srv = start(
        storage, tmp_path / "s", "/recover/images 127.0.0.0/8(insecure)\n",
        "--tls-cert", str(cert), "--tls-key", str(key),
    )  # fmt: skip
    try:
        assert _tls_names(srv.port, pki / "ca.pem") == "localhost,127.0.0.1"
        renewed = tmp_path / "renewed"  # a new server pair of the same CA
        subprocess.run([*init, "--name", "renewed.example", "--address", "127.0.0.1"], check=True,
                       capture_output=True)  # fmt: skip
        shutil.copytree(pki, renewed)
        shutil.copy(renewed / "server.key", key)  # its key first: the pair does not match
        time.sleep(1.5)  # the workers and the supervisor have looked: the files do not load
        before = status(srv)["workers"]
        for x in before:
            os.kill(x["pid"], signal.SIGKILL)
        wait_for(
            lambda: all(
                x["ready"] and x["restarts"] > y["restarts"]
                for x, y in zip(status_file(srv)["workers"], before, strict=True)
            ),
            timeout=20,
        )
        for _ in range(6):  # over both workers
            client = Client((srv.host, srv.port), "127.0.0.1")
            assert client.mount()[1]  # plain TCP
            client.close()
            assert _tls_names(srv.port, pki / "ca.pem") == "localhost,127.0.0.1"
        assert "serving the ones last loaded" in srv.log.read_text()
        shutil.copy(renewed / "server.pem", cert)  # the pair matches again: taken up
        wait_for(lambda: "renewed.example" in _tls_names(srv.port, pki / "ca.pem"), timeout=10)
    finally:
        srv.stop()
    assert not (srv.state / "tls-loaded").exists()


def test_exports_reload_reaches_every_worker(storage: Path, tmp_path: Path) -> None:
    srv = start(
        storage, tmp_path / "s", "/recover/images 127.0.0.2(insecure) 127.0.0.3(insecure)\n"
    )
    try:
        # 16 connections: the chance that SO_REUSEPORT's hash puts all on one
        # worker of two is 2 ** -15
        clients = [Client((srv.host, srv.port), "127.0.0.3") for _ in range(16)]
        roots = [c.mount()[1] for c in clients]
        assert all(roots)
        spread = wait_for(
            lambda: sum(r := [x["connections"] for x in status(srv)["workers"]]) == 16 and r
        )
        assert all(spread), f"16 connections, per worker: {spread}"
        assert all(
            c.nfs(w.GETATTR, w.fh_args(r)).status() == w.NFS3_OK
            for c, r in zip(clients, roots, strict=True)
        )
        (tmp_path / "s" / "exports").write_text("/recover/images 127.0.0.2(insecure)\n")
        p = cli(srv, "exports", "reload")
        assert p.returncode == 0 and "generation 2" in p.stdout, p.stderr
        assert all(
            c.nfs(w.GETATTR, w.fh_args(r)).status() == w.NFS3ERR_STALE
            for c, r in zip(clients, roots, strict=True)
        )
        (tmp_path / "s" / "exports").write_text("/recover/images 127.0.0.2(rw)\n")
        p = cli(srv, "exports", "reload")
        assert p.returncode == 1 and "rw" in p.stderr, p.stderr
        for c in clients:
            c.close()
        log = srv.log.read_text()
        assert re.search(r"worker 0 pid \d+ ", log) and re.search(r"worker 1 pid \d+ ", log)
    finally:
        srv.stop()


def test_a_replaced_worker_serves_the_list_in_force_not_the_edited_file(
    storage: Path, tmp_path: Path
) -> None:
    """An operator editing the file has not reloaded it: a worker started
    meanwhile must not apply the edit while the others do not."""
    srv = start(storage, tmp_path / "s", "/recover/images 127.0.0.2(insecure)\n")
    try:
        (tmp_path / "s" / "exports").write_text("/recover/images 127.0.0.3(insecure)\n")
        for x in status(srv)["workers"]:
            os.kill(x["pid"], signal.SIGKILL)
        wait_for(lambda: all(x["ready"] and x["restarts"] for x in status(srv)["workers"]))
        for _ in range(8):  # over both workers (SO_REUSEPORT hashes each connection)
            allowed, stranger = (
                Client((srv.host, srv.port), "127.0.0.2"),
                Client((srv.host, srv.port), "127.0.0.3"),
            )
            assert allowed.mount()[1] and not stranger.mount()[1]
            allowed.close()
            stranger.close()
        assert "127.0.0.2(" in cli(srv, "exports", "show").stdout
    finally:
        srv.stop()
    assert not (srv.state / "exports.in-force").exists()


def test_the_debug_level_reaches_every_process(server: Server) -> None:
    p = cli(server, "registry", "set", "appliance.debug.level", "1")
    assert p.returncode == 0, p.stderr
    try:
        pids = {x["pid"] for x in status(server)["workers"]} | {status(server)["pid"]}

        def changed() -> bool:
            lines = [ln for ln in server.log.read_text().splitlines() if "debug level 0 -> 1" in ln]
            return {int(m.group(1)) for ln in lines if (m := re.search(r" pid (\d+) ", ln))} >= pids

        wait_for(changed, timeout=5)
    finally:
        cli(server, "registry", "set", "appliance.debug.level", "0")


def test_two_servers_with_one_secret_are_interchangeable(storage: Path, tmp_path: Path) -> None:
    exports = "/recover/images 127.0.0.0/8(insecure)\n"
    (tmp_path / "b" / "state").mkdir(parents=True)
    a = start(storage, tmp_path / "a", exports)
    try:
        shown = cli(a, "secret", "show")
        assert shown.returncode == 0 and len(shown.stdout.strip()) == 64
        (tmp_path / "secret.hex").write_text(shown.stdout)
        b_state = tmp_path / "b" / "state"
        p = subprocess.run(
            [
                *a.command,
                "secret",
                "install",
                str(tmp_path / "secret.hex"),
                "--state-dir",
                str(b_state),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert p.returncode == 0, p.stderr
        b = start(storage, tmp_path / "b", exports, "--workers", "1")
        try:
            with (
                Client((a.host, a.port), "127.0.0.2") as ca,
                Client((b.host, b.port), "127.0.0.2") as cb,
            ):
                root = ca.mount()[1]
                assert root is not None
                folder_a = w.lookup_ok(ca.nfs(w.LOOKUP, w.lookup(root, b"dir")).body)
                folder_b = w.lookup_ok(
                    cb.nfs(w.LOOKUP, w.lookup(root, b"dir")).body
                )  # A's root on B
                assert folder_a == folder_b
                file_b = w.lookup_ok(cb.nfs(w.LOOKUP, w.lookup(folder_a, b"f007.txt")).body)
                assert w.read_data(ca.nfs(w.READ, w.read(file_b)).body) == b"file 7\n"
                list_a = ca.nfs(w.READDIR, w.readdir(folder_a, 512)).body
                list_b = cb.nfs(w.READDIR, w.readdir(folder_a, 512)).body
                assert list_a == list_b  # the same attributes, cookie verifier and cookies
        finally:
            b.stop()
        other = start(storage, tmp_path / "c", exports, "--workers", "1")  # its own secret
        try:
            with Client((other.host, other.port), "127.0.0.2") as cc:
                assert cc.nfs(w.GETATTR, w.fh_args(root)).status() != w.NFS3_OK
        finally:
            other.stop()
    finally:
        a.stop()


def test_a_second_server_on_a_port_in_use_is_refused_not_shared(
    server: Server, storage: Path, tmp_path: Path
) -> None:
    """SO_REUSEPORT would let a second server of the same user bind the port the
    workers of a running one listen on and take part of its connections, each
    answered with the other's secret (a held handle STALE): it is refused, and
    every connection still reaches the first."""
    (tmp_path / "exports").write_text("/recover/images 127.0.0.0/8(insecure)\n")
    started = time.monotonic()
    p = subprocess.run(
        [*server.command, "serve", "--storage", str(storage), "--bind", server.host,
         "--port", str(server.port), "--no-portmap", "--state-dir", str(tmp_path / "state"),
         "--log-file", str(tmp_path / "log"), "--exports", str(tmp_path / "exports"),
         "--workers", "2"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert p.returncode != 0, p.stdout + p.stderr
    assert "Address already in use" in p.stderr, p.stderr
    assert time.monotonic() - started < 60
    with Client((server.host, server.port), "127.0.0.2") as c:
        root = c.mount()[1]
    assert root is not None
    for _ in range(20):  # new connections, each hashed to some listener of the port
        with Client((server.host, server.port), "127.0.0.2") as c:
            assert c.nfs(w.GETATTR, w.fh_args(root)).status() == w.NFS3_OK


def test_proxy_from_the_client_behind_the_balancer_is_checked(
    storage: Path, tmp_path: Path
) -> None:
    srv = start(
        storage,
        tmp_path / "p",
        "/recover/images 127.0.0.9(insecure)\n",
        "--proxy-from",
        "127.0.0.2",
    )
    try:

        def through_balancer(client_addr: str) -> int:
            with Client((srv.host, srv.port), "127.0.0.2") as c:
                c.sock.sendall(f"PROXY TCP4 {client_addr} 127.0.0.1 40000 {srv.port}\r\n".encode())
                return c.mount()[0]

        assert through_balancer("127.0.0.9") == w.MNT3_OK
        assert through_balancer("127.0.0.5") == w.MNT3ERR_ACCES
        with Client((srv.host, srv.port), "127.0.0.9") as c:
            assert c.mount()[0] == w.MNT3_OK  # direct clients as always
        with Client((srv.host, srv.port), "127.0.0.9") as c:
            c.sock.sendall(f"PROXY TCP4 127.0.0.9 127.0.0.1 40000 {srv.port}\r\n".encode())
            with pytest.raises((EOFError, ConnectionResetError)):
                c.mount()  # a header from a host not in --proxy-from: closed
        with (
            Client((srv.host, srv.port), "127.0.0.2") as c,
            pytest.raises((EOFError, ConnectionResetError)),
        ):
            c.mount()  # the balancer without a header: closed
    finally:
        srv.stop()
