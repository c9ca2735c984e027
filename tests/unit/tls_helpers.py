"""Certificates and an in-memory TLS client for the tests of ``nfsd.transport.tls``."""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from nfsd.cli.tls import make_certificate
from nfsd.transport.tls import TlsRefused, TlsSession, TlsSettings, server_context


@dataclass
class Pki:
    """A CA, a server certificate for localhost, and client certificates in ``root``."""

    root: Path

    def __post_init__(self) -> None:
        self.ca = make_certificate("test CA", usage="ca")
        self.other_ca = make_certificate("another CA", usage="ca")
        self.ca_file = self.write("ca", *self.ca)
        self.server_cert, self.server_key = self.issue("server", dns=["localhost"])
        self.client_cert, self.client_key = self.issue(
            "client", dns=["guest.example"], usage="client"
        )
        self.stranger_cert, self.stranger_key = self.issue(
            "stranger", dns=["guest.example"], usage="client", issuer=self.other_ca
        )
        past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
        self.expired_cert, self.expired_key = self.issue(
            "expired", dns=["guest.example"], usage="client", not_before=past, days=1
        )

    def write(self, name: str, cert, key) -> Path:  # type: ignore[no-untyped-def]
        cert_file = self.root / f"{name}.pem"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (self.root / f"{name}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_file

    def issue(self, name: str, *, issuer=None, **kw) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
        cert, key = make_certificate(name, issuer=issuer or self.ca, **kw)
        return self.write(name, cert, key), self.root / f"{name}.key"


def client_context(
    pki: Pki,
    alpn: list[str] | None = None,
    cert: tuple[Path, Path] | None = None,
    tls12_only: bool = False,
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    if cert is not None:
        ctx.load_cert_chain(*cert)
    if tls12_only:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class MemoryClient:
    """A TLS client over memory BIOs, pumped against a :class:`TlsSession`."""

    def __init__(self, ctx: ssl.SSLContext, server: TlsSession) -> None:
        self.inc = ssl.MemoryBIO()
        self.out = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_hostname="localhost")
        self.server = server
        self.plain = b""  # what the server decrypted

    def handshake(self) -> None:
        """Run the handshake to its end; server errors (TlsRefused) propagate."""
        for _ in range(10):
            try:
                self.obj.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            self.pump()
            if done and self.server.established:
                return
        raise AssertionError("handshake did not finish")

    def pump(self) -> None:
        data = self.out.read()
        if data:
            self.plain += self.server.receive(data)
        back = self.server.outgoing()
        if back:
            self.inc.write(back)

    def send(self, data: bytes) -> None:
        self.obj.write(data)
        self.pump()

    def receive(self, ciphertext: bytes) -> bytes:
        self.inc.write(ciphertext)
        chunks = []
        while True:
            try:
                chunks.append(self.obj.read(1 << 20))
            except ssl.SSLWantReadError:
                return b"".join(chunks)


def refused_session(pki: Pki) -> TlsSession:
    """An established session whose last record (a bad MAC) ``receive`` refused,
    as the loop's session is when a worker comes to encrypt a reply."""
    server = TlsSession(
        server_context(TlsSettings(pki.server_cert, pki.server_key, pki.ca_file)), now=100.0
    )
    client = MemoryClient(client_context(pki, alpn=["sunrpc"]), server)
    client.handshake()
    client.obj.write(b"x" * 100)
    record = bytearray(client.out.read())
    record[-1] ^= 1
    try:
        server.receive(bytes(record))
    except TlsRefused:
        return server
    raise AssertionError("a record with a bad MAC was accepted")
