"""TLS settings of a whole server: --tls-cert/--tls-key/--tls-client-ca, bad files, and
MOUNT, NFS and the portmapper answered inside TLS by a started ``Service``."""

from __future__ import annotations

import dataclasses
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from nfsd.cli import commands as cli
from nfsd.service.app import Service
from nfsd.service.config import Config, ConfigError, load
from nfsd.service.tlsconfig import tls_settings
from tests.proto.calls import auth_sys, call, parse
from tests.unit.test_cli import invoke
from tests.unit.test_tls_transport import read_records, record
from tests.unit.tls_helpers import Pki, client_context
from xdr import mount3, nfs3, rpc
from xdr.base import Packer, Unpacker


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def cfg(tmp_path: Path, pki: Pki, exports: str | None = None, **kw: object) -> Config:
    storage = tmp_path / "storage"
    storage.mkdir(exist_ok=True)
    (storage / "hello.txt").write_bytes(b"hello over tls\n")
    values: dict[str, object] = {
        "storage": storage,
        "bind": "127.0.0.1",
        "port": 0,
        "portmap": False,
        "state_dir": tmp_path / "state",
        "log_file": tmp_path / "log",
        "tls_cert": pki.server_cert,
        "tls_key": pki.server_key,
        "tls_client_ca": pki.ca_file,
    }
    if exports is not None:
        (tmp_path / "exports").write_text(exports)
        values["exports"] = tmp_path / "exports"
    values.update(kw)
    return Config(**values)  # type: ignore[arg-type]


@pytest.fixture()
def service(tmp_path: Path, pki: Pki) -> Iterator[Service]:
    s = Service(cfg(tmp_path, pki, "/recover/images 127.0.0.1(insecure,xprtsec=tls:mtls)\n"))
    s.start()
    yield s
    s.stop()


class TlsRpc:
    """Calls over one connection that asked for TLS with an AUTH_TLS NULL of ``prog``."""

    def __init__(self, pki: Pki, port: int, prog: int, cert: tuple[Path, Path] | None = None):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(starttls_call_of(prog))
        (reply,) = read_records(sock, 1)
        assert b"STARTTLS" in reply
        self.sock = client_context(pki, cert=cert).wrap_socket(sock, server_hostname="localhost")
        self.xid = 100

    def call(self, prog: int, vers: int, proc: int, args: bytes = b"") -> bytes:
        self.xid += 1
        self.sock.sendall(record(call(prog, vers, proc, args, xid=self.xid, cred=auth_sys())))
        (reply,) = read_records(self.sock, 1)
        r = parse([reply])
        assert (r.xid, r.reply_stat, r.stat) == (self.xid, rpc.MSG_ACCEPTED, rpc.SUCCESS)
        return r.body

    def close(self) -> None:
        self.sock.close()


def starttls_call_of(prog: int) -> bytes:
    tls_cred = rpc.opaque_auth(7, b"")
    return record(call(prog, 3 if prog != 100000 else 2, 0, cred=tls_cred))


def mnt_args() -> bytes:
    p = Packer()
    p.pack_string(b"/recover/images")
    return p.get_buffer()


def test_mount_and_nfs_inside_tls_on_the_nfs_port(service: Service, pki: Pki) -> None:
    assert service.port and service.status()["tls"] == "tls and mtls"
    code, out, _ = invoke("status", "--state-dir", str(service.config.state_dir))
    assert code == 0 and "tls:      tls and mtls" in out
    c = TlsRpc(pki, service.port, mount3.MOUNT_PROGRAM)  # MOUNT asks for TLS too
    try:
        u = Unpacker(c.call(mount3.MOUNT_PROGRAM, 3, mount3.MOUNTPROC3_MNT, mnt_args()))
        assert u.unpack_uint() == mount3.MNT3_OK
        root = u.unpack_opaque()
        p = Packer()
        p.pack_opaque(root)
        body = c.call(nfs3.NFS_PROGRAM, 3, nfs3.NFSPROC3_GETATTR, p.get_buffer())
        assert struct.unpack(">I", body[:4])[0] == nfs3.NFS3_OK
    finally:
        c.close()


def test_the_own_portmapper_answers_inside_tls(tmp_path: Path, pki: Pki) -> None:
    from nfsd.service.app import HostPortmapper

    pm_port = _free_port()
    assert not HostPortmapper.answers(pm_port)
    s = Service(cfg(tmp_path, pki, portmap=True), portmap_port=pm_port, rpcbind_sockets=())
    s.start()
    try:
        assert s.portmap_mode == "own"
        c = TlsRpc(pki, pm_port, 100000)
        c.call(100000, 2, 0)
        c.close()
    finally:
        s.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tls_key": None}, "tls-cert is given without tls-key"),
        ({"tls_cert": None}, "tls-key is given without tls-cert"),
        ({"tls_cert": None, "tls_key": None}, "tls-client-ca needs tls-cert and tls-key"),
    ],
)
def test_incomplete_tls_settings_are_refused(tmp_path, pki, change, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=message):
        tls_settings(dataclasses.replace(cfg(tmp_path, pki), **change))


@pytest.mark.parametrize("which", ["cert", "key", "ca"])
def test_a_bad_tls_file_stops_the_start_naming_it(tmp_path: Path, pki: Pki, which: str) -> None:
    bad = tmp_path / f"bad-{which}.pem"
    bad.write_text("not a PEM file\n")
    field = {"cert": "tls_cert", "key": "tls_key", "ca": "tls_client_ca"}[which]
    s = Service(cfg(tmp_path, pki, **{field: bad}))
    with pytest.raises(ConfigError, match=str(bad)):
        s.start()
    assert not (tmp_path / "state" / "status.json").exists()
    # the wrong key for the certificate
    mismatch = Service(cfg(tmp_path, pki, tls_key=pki.root / "client.key"))
    with pytest.raises(ConfigError, match="certificate"):
        mismatch.start()


def test_tls_options_from_the_command_line_and_the_config_file(tmp_path: Path, pki: Pki) -> None:
    ini = tmp_path / "r.conf"
    ini.write_text("[server]\ntls-cert = server.pem\ntls-key = server.key\n")
    c = load(ini, {"tls_client_ca": "ca.pem"})
    assert c.tls_cert == tmp_path / "server.pem" and c.tls_key == tmp_path / "server.key"
    assert c.tls_client_ca == Path("ca.pem").absolute()
    args = cli.serve_args(c, ini)
    for flag, value in (("--tls-cert", c.tls_cert), ("--tls-client-ca", c.tls_client_ca)):
        assert args[args.index(flag) + 1] == str(value)


def test_a_tls_only_client_is_refused_a_plain_connection(service: Service, pki: Pki) -> None:
    """Sanity of the wiring: the transport hands the connection's level to access."""
    from nfsd.transport.rpcclient import RpcClient

    with RpcClient("127.0.0.1", service.port or 0, cred=auth_sys()) as c:
        r = c.call(mount3.MOUNT_PROGRAM, 3, mount3.MOUNTPROC3_MNT, mnt_args())
        assert r.ok and Unpacker(r.body).unpack_uint() == mount3.MNT3_OK  # MNT in clear
        root = Unpacker(r.body[4:]).unpack_opaque()
        p = Packer()
        p.pack_opaque(root)
        r = c.call(nfs3.NFS_PROGRAM, 3, nfs3.NFSPROC3_GETATTR, p.get_buffer())
        assert r.ok and struct.unpack(">I", r.body[:4])[0] == nfs3.NFS3ERR_ACCES
