"""``recovery-fs tls init DIR``: a small CA, a server certificate, client certificates.

Design notes
------------
What a site needs to try RPC-with-TLS, with no PKI of its own::

    DIR/ca.pem, ca.key                 the CA (kept: a second run reuses it)
    DIR/server.pem, server.key         subjectAltName: every --name and --address
    DIR/clients/NAME.pem, NAME.key     one per --client; subjectAltName DNS NAME

Keys are ECDSA P-256 (GnuTLS, which tlshd uses, and OpenSSL both take it;
signing is cheap), written mode 0600 by a rename, so that a server
reloading its files never reads half of one.  The file renamed is a new
one of a name no one could guess (``mkstemp``: ``O_EXCL``, no symlink
followed): a fixed ``.NAME.tmp`` opened with ``O_TRUNC`` wrote the CA's key
through a symlink planted there, over any file its target named.  DIR
(and ``DIR/clients``) must belong to the user running the command and be
writable by no one else: another user who can write there can swap the
keys themselves.  A client certificate's DNS
name is the identity an ``mtls`` export's client list may name.  tlshd
checks the server certificate against the name the client mounted (an IP
address is checked against the IP entries), so give every name and address
clients will use.

Why the ``cryptography`` package rather than the ``openssl`` command: one
call per certificate with typed extensions, no configuration file to write
for subjectAltName, and the same code creates the certificates of the
tests (expired, untrusted, wrong purpose) on any machine.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import re
import stat
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import click
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 825
NAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_*]([A-Za-z0-9_.-]*[A-Za-z0-9])?$")


class TlsInitError(ValueError):
    """A name or address that cannot go in a certificate, or a broken CA in DIR."""


@dataclass(frozen=True)
class Issued:
    """A certificate written: its role, files and SHA-256 fingerprint."""

    role: str  # "ca", "server" or "client NAME"
    cert: Path
    key: Path
    fingerprint: str


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER form, as ``openssl x509 -fingerprint -sha256`` prints it."""
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` by a rename, with ``mode`` from the start.

    The temporary file is created new (``mkstemp``: mode 0600, ``O_EXCL``, a
    random name), never an existing file or a symlink planted in its place.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            os.fchmod(fd, mode)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _private_directory(directory: Path) -> Path:
    """``directory``, made if missing (mode 0755); TlsInitError unless it is a
    directory of the effective user that no one else may write to (then
    another user could replace the keys, or plant links where they go)."""
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    st = directory.stat()
    if st.st_uid != os.geteuid():
        raise TlsInitError(f"{directory} belongs to uid {st.st_uid}, not to this user")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise TlsInitError(
            f"{directory} is writable by its group or others"
            f" (mode {stat.S_IMODE(st.st_mode):04o}): use a private directory"
        )
    return directory


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "recovery-fs"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def make_certificate(
    subject: str,
    *,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    dns: Sequence[str] = (),
    addresses: Sequence[str] = (),
    usage: str = "server",
    not_before: datetime.datetime | None = None,
    days: int = LEAF_DAYS,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate and its new key: a CA (``usage="ca"``, self-signed without
    ``issuer``) or a leaf for ``usage`` "server" or "client"."""
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    signer_cert, signer_key = issuer if issuer else (None, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(signer_cert.subject if signer_cert else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if signer_cert is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()), False
        )
    if usage == "ca":
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
    else:
        eku = (
            ExtendedKeyUsageOID.SERVER_AUTH
            if usage == "server"
            else ExtendedKeyUsageOID.CLIENT_AUTH
        )
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), True
        )
        builder = builder.add_extension(x509.ExtendedKeyUsage([eku]), False)
        alt: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
        alt += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
        if alt:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), False)
    return builder.sign(signer_key, hashes.SHA256()), key


def check_names(names: Sequence[str], addresses: Sequence[str]) -> None:
    """Raise TlsInitError for a DNS name or an address a certificate cannot hold."""
    for n in names:
        if not NAME_RE.match(n):
            raise TlsInitError(f"not a DNS name: {n!r}")
    for a in addresses:
        try:
            ipaddress.ip_address(a)
        except ValueError as e:
            raise TlsInitError(f"not an IP address: {a!r}") from e


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    cert_file, key_file = directory / "ca.pem", directory / "ca.key"
    if not (cert_file.exists() or key_file.exists()):
        return None
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), None)
    except (OSError, ValueError, TypeError) as e:
        raise TlsInitError(f"the CA in {directory} cannot be read: {e}") from e
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise TlsInitError(f"{key_file} is not the key of {cert_file}")
    return cert, key


def _save(
    role: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, cert_file: Path
) -> Issued:
    key_file = cert_file.with_suffix(".key")
    _write(key_file, _key_pem(key), 0o600)
    _write(cert_file, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return Issued(role, cert_file, key_file, fingerprint(cert))


def init(
    directory: Path,
    names: Sequence[str],
    addresses: Sequence[str],
    clients: Sequence[str] = (),
    days: int = LEAF_DAYS,
) -> list[Issued]:
    """Create (or reuse) the CA in ``directory``; issue the server's and clients' certificates."""
    check_names([*names, *clients], addresses)
    if not names and not addresses:
        raise TlsInitError("give the server's names (--name) or addresses (--address)")
    _private_directory(directory)
    if clients:
        _private_directory(directory / "clients")
    issued: list[Issued] = []
    ca = _load_ca(directory)
    if ca is None:
        ca = make_certificate("recovery-fs CA", usage="ca", days=CA_DAYS)
        issued.append(_save("ca", *ca, directory / "ca.pem"))
    else:
        issued.append(Issued("ca", directory / "ca.pem", directory / "ca.key", fingerprint(ca[0])))
    server = make_certificate(
        (list(names) or list(addresses))[0],
        issuer=ca,
        dns=names,
        addresses=addresses,
        usage="server",
        days=days,
    )
    issued.append(_save("server", *server, directory / "server.pem"))
    for name in clients:
        client = make_certificate(name, issuer=ca, dns=[name], usage="client", days=days)
        issued.append(_save(f"client {name}", *client, directory / "clients" / f"{name}.pem"))
    return issued


def tlshd_conf(ca: Path, client: Issued | None) -> str:
    """The ``/etc/tlshd.conf`` section a Linux client needs (paths as on the client)."""
    lines = ["[authenticate.client]", f"x509.truststore = /etc/tlshd/{ca.name}"]
    if client is not None:
        lines.append(f"x509.certificate = /etc/tlshd/{client.cert.name}")
        lines.append(f"x509.private_key = /etc/tlshd/{client.key.name}")
    return "\n".join(lines) + "\n"


def report(directory: Path, issued: Sequence[Issued]) -> str:
    """What ``tls init`` prints: files, fingerprints, server options, tlshd.conf."""
    out = ["certificates (SHA-256 fingerprints):"]
    for i in issued:
        out.append(f"  {i.role:<20} {i.cert}  {i.fingerprint}")
    ca = next(i for i in issued if i.role == "ca")
    server = next(i for i in issued if i.role == "server")
    out += [
        "",
        "server:",
        f"  recovery-fs serve ... --tls-cert {server.cert} --tls-key {server.key}"
        f" --tls-client-ca {ca.cert}",
        "",
        f"Linux client (ktls-utils): copy {ca.cert} to /etc/tlshd/, then in /etc/tlshd.conf:",
        "",
        *("  " + line for line in tlshd_conf(ca.cert, None).splitlines()),
        "",
        "  and mount with -o xprtsec=tls",
    ]
    for client in (i for i in issued if i.role.startswith("client ")):
        out += [
            "",
            f"{client.role} (xprtsec=mtls): copy {ca.cert}, {client.cert} and {client.key}"
            " (mode 0600) to /etc/tlshd/, then:",
            "",
            *("  " + line for line in tlshd_conf(ca.cert, client).splitlines()),
        ]
    return "\n".join(out) + "\n"


@click.group("tls")
def tls_group() -> None:
    """RPC-with-TLS (RFC 9289): certificates for the server and its clients."""


@tls_group.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", "names", multiple=True, help="A DNS name of the server (repeatable).")
@click.option(
    "--address", "addresses", multiple=True, help="An IP address of the server (repeatable)."
)
@click.option(
    "--client",
    "clients",
    multiple=True,
    help="Issue a client certificate for this DNS name, for xprtsec=mtls (repeatable).",
)
@click.option(
    "--days",
    type=click.IntRange(1, 36500),
    default=LEAF_DAYS,
    show_default=True,
    help="Validity of the server and client certificates.",
)
def tls_init(
    directory: Path,
    names: tuple[str, ...],
    addresses: tuple[str, ...],
    clients: tuple[str, ...],
    days: int,
) -> None:
    """Create a small CA in DIRECTORY (or reuse the one there), a server
    certificate for the names and addresses given, and client certificates
    on request; print the fingerprints and the client's tlshd configuration.

    Keys are written mode 0600.  DIRECTORY must be yours and writable by
    no one else.  A running server picks up a replaced server certificate
    for its new connections.
    """
    try:
        issued = init(directory, names, addresses, clients, days)
    except TlsInitError as e:
        click.echo(f"recovery-fs: {e}", err=True)
        sys.exit(2)
    except OSError as e:
        click.echo(f"recovery-fs: cannot write the certificates: {e}", err=True)
        sys.exit(1)
    click.echo(report(directory, issued), nl=False)
