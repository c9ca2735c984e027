"""``recovery-fs tls init``: the CA, the server and client certificates, what it prints."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import DNSName, IPAddress
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from nfsd.cli import commands as cli
from nfsd.cli.tls import TlsInitError, init
from nfsd.transport.tls import TlsSettings, server_context


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_init_writes_a_ca_a_server_and_clients(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli.main,
        [
            "tls", "init", str(tmp_path / "tls"),
            "--name", "nfs.example", "--name", "localhost",
            "--address", "10.0.2.2", "--address", "::1",
            "--client", "guest.example",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    d = tmp_path / "tls"
    for key in ("ca.key", "server.key", "clients/guest.example.key"):
        assert stat.S_IMODE((d / key).stat().st_mode) == 0o600, key
    server = load(d / "server.pem")
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["nfs.example", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.2.2"),
        ipaddress.ip_address("::1"),
    ]
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    client = load(d / "clients" / "guest.example.pem")
    csan = client.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert csan.get_values_for_type(x509.DNSName) == ["guest.example"]
    assert list(client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    # What it prints: SHA-256 fingerprints and the tlshd configuration.
    out = result.output
    der = server.public_bytes(serialization.Encoding.DER)
    assert hashlib.sha256(der).hexdigest().upper() in out.replace(":", "")
    assert "[authenticate.client]" in out
    assert "x509.truststore = /etc/tlshd/ca.pem" in out
    assert "x509.certificate = /etc/tlshd/guest.example.pem" in out
    assert "x509.private_key = /etc/tlshd/guest.example.key" in out
    # The files make a server context that asks for client certificates.
    server_context(TlsSettings(d / "server.pem", d / "server.key", d / "ca.pem"))


def test_certificates_verify_against_the_ca(tmp_path: Path) -> None:
    """As a TLS client checks the server (by name and by address) and a server its client."""
    init(tmp_path, ["localhost"], ["127.0.0.1"], ["a.example"])
    store = Store([load(tmp_path / "ca.pem")])
    server = load(tmp_path / "server.pem")
    for subject in (DNSName("localhost"), IPAddress(ipaddress.ip_address("127.0.0.1"))):
        PolicyBuilder().store(store).build_server_verifier(subject).verify(server, [])
    client = load(tmp_path / "clients" / "a.example.pem")
    verified = PolicyBuilder().store(store).build_client_verifier().verify(client, [])
    assert verified.subjects == [DNSName("a.example")]
    with pytest.raises(VerificationError):  # a server certificate is no client certificate
        PolicyBuilder().store(store).build_client_verifier().verify(server, [])


def test_a_second_run_keeps_the_ca(tmp_path: Path) -> None:
    first = init(tmp_path, ["localhost"], [])
    second = init(tmp_path, ["localhost"], [], ["later.example"])
    assert first[0].fingerprint == second[0].fingerprint
    assert first[1].fingerprint != second[1].fingerprint  # a new server certificate
    later = load(tmp_path / "clients" / "later.example.pem")
    assert later.issuer == load(tmp_path / "ca.pem").subject


def test_a_broken_ca_is_an_error(tmp_path: Path) -> None:
    init(tmp_path, ["localhost"], [])
    (tmp_path / "ca.key").write_text("not a key")
    with pytest.raises(TlsInitError, match="CA"):
        init(tmp_path, ["localhost"], [])


@pytest.mark.parametrize(
    ("names", "addresses", "clients"),
    [([], [], []), (["bad name"], [], []), (["ok"], ["10.0.0.300"], []), (["ok"], [], ["a/b"])],
)
def test_bad_names_are_usage_errors(
    tmp_path: Path, names: list[str], addresses: list[str], clients: list[str]
) -> None:
    args = ["tls", "init", str(tmp_path / "d")]
    args += [x for n in names for x in ("--name", n)]
    args += [x for a in addresses for x in ("--address", a)]
    args += [x for c in clients for x in ("--client", c)]
    result = CliRunner().invoke(cli.main, args)
    assert result.exit_code == 2
    assert re.search(r"DNS name|IP address|--name", result.output)
    assert not (tmp_path / "d").exists()


def test_a_symlink_planted_where_a_key_is_written_is_not_followed(tmp_path: Path) -> None:
    """A fixed ``.ca.key.tmp`` opened with O_TRUNC wrote the CA's key through
    a planted symlink, over the file it named (and made it mode 0600)."""
    d = tmp_path / "tls"
    d.mkdir(mode=0o755)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    victim.chmod(0o644)
    for name in ("ca.key", "ca.pem", "server.key", "server.pem"):
        (d / f".{name}.tmp").symlink_to(victim)
    result = CliRunner().invoke(cli.main, ["tls", "init", str(d), "--name", "localhost"])
    assert result.exit_code == 0, result.output
    assert victim.read_bytes() == b"precious\n"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644
    for name in ("ca.key", "server.key"):
        assert not (d / name).is_symlink()
        assert stat.S_IMODE((d / name).lstat().st_mode) == 0o600
    server_context(TlsSettings(d / "server.pem", d / "server.key", d / "ca.pem"))


@pytest.mark.parametrize("mode", [0o775, 0o757, 0o1777], ids=lambda m: f"{m:04o}")
def test_a_directory_others_may_write_to_is_refused(tmp_path: Path, mode: int) -> None:
    d = tmp_path / "shared"
    d.mkdir()
    d.chmod(mode)
    result = CliRunner().invoke(cli.main, ["tls", "init", str(d), "--name", "localhost"])
    assert result.exit_code == 2
    assert "writable by its group or others" in result.output
    assert list(d.iterdir()) == []


def test_a_clients_directory_others_may_write_to_is_refused(tmp_path: Path) -> None:
    (tmp_path / "clients").mkdir()
    (tmp_path / "clients").chmod(0o777)
    with pytest.raises(TlsInitError, match="clients is writable"):
        init(tmp_path, ["localhost"], [], ["a.example"])
    assert list(tmp_path.iterdir()) == [tmp_path / "clients"]
    assert list((tmp_path / "clients").iterdir()) == []


def test_a_directory_of_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: tmp_path.stat().st_uid + 1)
    with pytest.raises(TlsInitError, match="belongs to uid"):
        init(tmp_path, ["localhost"], [])
    assert list(tmp_path.iterdir()) == []


def test_a_missing_directory_is_made_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o002)
    try:
        init(tmp_path / "new", ["localhost"], [], ["a.example"])
    finally:
        os.umask(old)
    for d in (tmp_path / "new", tmp_path / "new" / "clients"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o755
