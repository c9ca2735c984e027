"""A throwaway RPC-with-TLS endpoint and one guest boot against it (tlshd validation).

Until the server's transport speaks TLS, this checks the other half: that the
Debian 13 guest of ``assets_tls`` asks for TLS as RFC 9289 says and that its
tlshd completes a TLS 1.3 handshake with ALPN ``sunrpc`` against
``nfsd.transport.tls``.  The endpoint is a thread per connection around the real
dispatcher (MOUNT and NFS over a one-file storage), ``nfsd.transport.tls.TlsSession``
after the STARTTLS reply, and a log line per handshake.

    python -m tests.e2e.kernel.tls_probe [--modes "tls mtls"]   # as root

Prints the guest's result lines and the endpoint's log; exit 0 when every
mode mounted, listed and read the file byte-exact over TLS.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from nfsd.cli.tls import init as tls_init
from nfsd.programs import build_programs
from nfsd.programs.access import AccessControl
from nfsd.rpc import Dispatcher
from nfsd.transport.record import RecordReader, frame
from nfsd.transport.tls import PLAIN, ContextSource, TlsRefused, TlsSession, TlsSettings

from . import assets, assets_tls, guest, netns

log = logging.getLogger("tls_probe")
EXPORT = "/recover/images"
READ_FILE = "hello.bin"


class Endpoint:
    """Plain RPC until STARTTLS, then the same calls inside TLS; one thread a connection."""

    def __init__(self, storage: Path, source: ContextSource, port: int = 0) -> None:
        from merge import build_namespace

        access = AccessControl(None, EXPORT, storage)
        programs = build_programs(build_namespace(str(storage)), os.urandom(32), access, EXPORT)
        self.dispatcher = Dispatcher(programs)
        self.dispatcher.starttls = True
        self.source = source
        self.sock = socket.create_server(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.events: list[str] = []

    def event(self, text: str) -> None:
        self.events.append(text)
        log.info("%s", text)

    def serve_forever(self) -> None:
        while True:
            conn, addr = self.sock.accept()
            threading.Thread(target=self._serve, args=(conn, addr), daemon=True).start()

    def _serve(self, conn: socket.socket, addr: tuple) -> None:
        peer = f"{addr[0]}:{addr[1]}"
        reader = RecordReader()
        session: TlsSession | None = None
        try:
            while True:
                conn.settimeout(10.0 if session and not session.established else 300.0)
                data = conn.recv(65536)
                if not data:
                    return
                if session is not None:
                    was = session.established
                    data = session.receive(data)
                    out = session.outgoing()
                    if out:
                        conn.sendall(out)
                    if session.established and not was:
                        sec = session.security
                        obj = session._obj
                        self.event(
                            f"HANDSHAKE {peer} {obj.version()} alpn={obj.selected_alpn_protocol()}"
                            f" cipher={obj.cipher()[0]} security={sec.describe() if sec else '?'}"
                        )
                for record in reader.feed(data):
                    security = session.security if session and session.security else PLAIN
                    reply = self.dispatcher.dispatch(record, peer, "tcp", security=security)
                    if reply is None:
                        continue
                    parts = frame(reply.parts)
                    if session is not None:
                        conn.sendall(session.encrypt(parts))
                    else:
                        conn.sendall(b"".join(bytes(p) for p in parts))
                    reply.free()
                    if reply.starttls:
                        if reader.pending or reader.begun:
                            self.event(f"CLOSED {peer}: bytes after the STARTTLS call")
                            return
                        self.event(f"STARTTLS {peer}")
                        session = TlsSession(self.source.context(), time.monotonic())
                        break
        except TlsRefused as e:
            self.event(f"CLOSED {peer}: {e}")
        except OSError as e:
            self.event(f"CLOSED {peer}: {e}")
        finally:
            conn.close()


def _inside(spec_path: str) -> int:
    """In the namespace: the endpoint, then QEMU; write outcome.json."""
    spec = json.loads(Path(spec_path).read_text())
    run = Path(spec["run_dir"])
    logging.basicConfig(
        filename=run / "endpoint.log", level=logging.DEBUG, format="%(relativeCreated)d %(message)s"
    )
    netns.setup()
    tls = Path(spec["tls_dir"])
    source = ContextSource(TlsSettings(tls / "server.pem", tls / "server.key", tls / "ca.pem"))
    ep = Endpoint(Path(spec["storage"]), source, spec["port"])
    threading.Thread(target=ep.serve_forever, daemon=True).start()
    cmd = guest.qemu_command(Path(spec["kernel"]), Path(spec["initrd"]), run, guest.choose_accel())
    started = time.monotonic()
    with open(run / "qemu.out", "wb") as out:
        qemu = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        try:
            rc = qemu.wait(spec["timeout"])
        except subprocess.TimeoutExpired:
            qemu.kill()
            rc = qemu.wait()
    outcome = {"qemu_rc": rc, "wall_s": time.monotonic() - started, "events": ep.events}
    (run / "outcome.json").write_text(json.dumps(outcome, indent=1))
    return 0


def run(modes: list[str], timeout: float = 240.0) -> tuple[dict, list[str], str]:
    """Prepare, boot, and return (outcome, result lines, expected sha256)."""
    t0 = time.monotonic()
    a = assets_tls.prepare()
    prepared = time.monotonic() - t0
    for old in assets_tls.CACHE.glob("tls-probe-*"):  # only the last run is kept
        shutil.rmtree(old, ignore_errors=True)
    run_dir = Path(tempfile.mkdtemp(prefix="tls-probe-", dir=assets_tls.CACHE))
    storage = run_dir / "storage"
    storage.mkdir()
    data = os.urandom(3 * 1024 * 1024 + 17)
    (storage / READ_FILE).write_bytes(data)
    tls = run_dir / "tls"
    tls_init(tls, ["localhost"], ["10.0.2.2", "127.0.0.1"], ["guest.example"])
    port = 20500
    params = {
        "SERVER": guest.GUEST_HOST_ADDR,
        "EXPORT": EXPORT,
        "MOUNT_OPTS": f"vers=3,proto=tcp,port={port},mountport={port},mountproto=tcp,nolock",
        "MOUNT_TIMEOUT": 60,
        "MODES": " ".join(modes),
        "READ_FILE": READ_FILE,
    }
    files = guest.guest_files("tls_probe", params, {})
    files["ca.pem"] = (tls / "ca.pem").read_bytes()
    files["client.pem"] = (tls / "clients" / "guest.example.pem").read_bytes()
    files["client.key"] = (tls / "clients" / "guest.example.key").read_bytes()
    initrd = assets.scenario_initrd(a.boot.initramfs, files, run_dir / "initrd.img")
    spec = {
        "run_dir": str(run_dir),
        "kernel": str(a.boot.kernel),
        "initrd": str(initrd),
        "storage": str(storage),
        "tls_dir": str(tls),
        "port": port,
        "timeout": timeout,
    }
    (run_dir / "spec.json").write_text(json.dumps(spec))
    env = dict(os.environ, PYTHONPATH=str(assets.REPO))
    cmd = netns.wrap([sys.executable, "-m", __spec__.name, "--inside", str(run_dir / "spec.json")])
    subprocess.run(cmd, env=env, timeout=timeout + 60, check=False)
    outcome = json.loads((run_dir / "outcome.json").read_text())
    outcome["prepare_s"] = prepared
    outcome["run_dir"] = str(run_dir)
    outcome["initramfs_bytes"] = a.boot.initramfs.stat().st_size
    outcome["initrd_bytes"] = initrd.stat().st_size
    outcome["kernel_bytes"] = a.boot.kernel.stat().st_size
    results = run_dir / "results.log"
    lines = (
        results.read_text(errors="replace").replace("\r", "").splitlines()
        if results.exists()
        else []
    )
    return outcome, lines, hashlib.sha256(data).hexdigest()


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--inside":
        return _inside(sys.argv[2])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default="tls mtls")
    args = ap.parse_args()
    modes = args.modes.split()
    outcome, lines, sha = run(modes)
    for line in lines:
        print("guest:", line)
    for e in outcome["events"]:
        print("endpoint:", e)
    print("outcome:", shlex.join(f"{k}={v}" for k, v in outcome.items() if k != "events"))
    ok = all(f"SHA_{m} {sha}" in lines for m in modes)
    print("RESULT", "ok" if ok else "FAILED", f"(expected sha256 {sha})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
