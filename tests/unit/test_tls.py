"""nfsd.transport.tls: STARTTLS policy, the TLS session over memory BIOs, the context, its reload.

Python's ``ssl`` is the client, over memory BIOs too: no socket, no thread.
"""

from __future__ import annotations

import logging
import os
import select
import shutil
import socket
import ssl
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from nfsd.service.tlsconfig import LOADED_DIR, Loaded
from nfsd.transport.tls import (
    AUTH_TLS,
    HANDSHAKE_TIMEOUT,
    ContextSource,
    Security,
    TlsConfigError,
    TlsRefused,
    TlsSession,
    TlsSettings,
    certificate_names,
    client_hello_alpn,
    ktls_in_use,
    server_context,
    starttls_refusal,
    starttls_reply,
)
from tests.unit.tls_helpers import MemoryClient, Pki, client_context, refused_session
from xdr.rpc import (
    AUTH_BADCRED,
    AUTH_BADVERF,
    AUTH_NONE,
    AUTH_SYS,
    MSG_ACCEPTED,
    REPLY,
    SUCCESS,
    call_body,
    opaque_auth,
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def settings(pki: Pki, *, ca: bool = True, require: bool = False) -> TlsSettings:
    return TlsSettings(pki.server_cert, pki.server_key, pki.ca_file if ca else None, require)


def session(pki: Pki, **kw: bool) -> TlsSession:
    return TlsSession(server_context(settings(pki, **kw)), now=100.0)


# ---------------------------------------------------------------- STARTTLS policy


def probe(proc: int = 0, cred: bytes = b"", verf: opaque_auth | None = None) -> call_body:
    return call_body(2, 100003, 3, proc, opaque_auth(AUTH_TLS, cred), verf or opaque_auth(0, b""))


@pytest.mark.parametrize(
    ("call", "transport", "security", "enabled", "stat"),
    [
        (probe(), "tcp", "none", True, 0),
        (probe(proc=1), "tcp", "none", True, AUTH_BADCRED),
        (probe(cred=b"\0\0\0\0"), "tcp", "none", True, AUTH_BADCRED),
        (probe(verf=opaque_auth(AUTH_SYS, b"")), "tcp", "none", True, AUTH_BADVERF),
        (probe(verf=opaque_auth(AUTH_NONE, b"x")), "tcp", "none", True, AUTH_BADVERF),
        (probe(), "udp", "none", True, AUTH_BADCRED),
        (probe(), "tcp", "tls", True, AUTH_BADCRED),
        (probe(), "tcp", "mtls", True, AUTH_BADCRED),
        (probe(), "tcp", "none", False, AUTH_BADCRED),
    ],
    ids=[
        "null-plain-tcp",
        "not-null",
        "cred-body",
        "verf-flavour",
        "verf-body",
        "udp",
        "inside-tls",
        "inside-mtls",
        "not-configured",
    ],
)
def test_starttls_refusal(
    call: call_body, transport: str, security: str, enabled: bool, stat: int
) -> None:
    assert starttls_refusal(call, transport, security, enabled) == stat


def test_starttls_reply_is_accepted_with_the_starttls_verifier() -> None:
    """RFC 9289 §4.1: MSG_ACCEPTED, AUTH_NONE verifier of 8 bytes "STARTTLS", SUCCESS."""
    data = starttls_reply(0xABCDEF01)
    assert data == struct.pack(">IIIII", 0xABCDEF01, REPLY, MSG_ACCEPTED, AUTH_NONE, 8) + (
        b"STARTTLS" + struct.pack(">I", SUCCESS)
    )


# ---------------------------------------------------------------- handshakes


def test_handshake_with_sunrpc_alpn_then_records_both_ways(pki: Pki) -> None:
    server = session(pki, ca=False)
    client = MemoryClient(client_context(pki, alpn=["sunrpc"]), server)
    client.handshake()
    assert server.security == Security("tls")
    assert client.obj.version() == "TLSv1.3"
    assert client.obj.selected_alpn_protocol() == "sunrpc"
    client.send(b"\x80\x00\x00\x04call")
    assert client.plain == b"\x80\x00\x00\x04call"
    big = os.urandom(300 * 1024)
    parts = [b"\x80\x04\xb0\x10", b"head" * 10, memoryview(big), b"tail"]
    assert client.receive(server.encrypt(parts)) == b"".join(bytes(p) for p in parts)


def test_client_alpn_list_holding_sunrpc_is_accepted(pki: Pki) -> None:
    server = session(pki)
    MemoryClient(client_context(pki, alpn=["h2", "sunrpc"]), server).handshake()
    assert server.established


@pytest.mark.parametrize("alpn", [["h2"], ["sunrpc2"], ["http/1.1", "h2"]])
def test_client_offering_alpn_without_sunrpc_is_refused(pki: Pki, alpn: list) -> None:
    """OpenSSL completes these handshakes; the session must refuse them itself."""
    server = session(pki)
    with pytest.raises(TlsRefused, match="offered ALPN"):
        MemoryClient(client_context(pki, alpn=alpn), server).handshake()
    assert not server.established


def test_client_offering_no_alpn_is_kept_unless_required(pki: Pki) -> None:
    """Linux's tlshd (ktls-utils 1.0.0) offers no ALPN; a strict server closes it."""
    server = session(pki)
    MemoryClient(client_context(pki), server).handshake()
    assert server.security == Security("tls")
    strict = TlsSession(server_context(settings(pki)), now=0.0, require_alpn=True)
    with pytest.raises(TlsRefused, match="no ALPN"):
        MemoryClient(client_context(pki), strict).handshake()


def test_tls12_only_client_is_refused(pki: Pki) -> None:
    server = session(pki)
    with pytest.raises(TlsRefused, match="handshake failed"):
        MemoryClient(client_context(pki, alpn=["sunrpc"], tls12_only=True), server).handshake()


@pytest.mark.parametrize(
    "first",
    [
        b"\x80\x00\x00\x28" + b"\0" * 40,  # a plain RPC record (pipelined after the NULL)
        b"GET / HTTP/1.1\r\n\r\n",
        b"\x15\x03\x03\x00\x02\x02\x28",  # an alert, not a ClientHello
    ],
)
def test_bytes_other_than_a_client_hello_are_refused(pki: Pki, first: bytes) -> None:
    with pytest.raises(TlsRefused, match="ClientHello"):
        session(pki).receive(first)


@pytest.mark.parametrize(
    "data",
    [
        b"\x16\x03\x01\x00\x10" + b"\xff" * 16,  # a handshake record, not a ClientHello
        b"\x16\x03\x01\x00\x08\x01\x00\x00\x04" + b"\xff" * 4,  # a truncated ClientHello
        b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00",  # a ClientHello that OpenSSL refuses
    ],
)
def test_garbage_in_a_handshake_record_is_refused(pki: Pki, data: bytes) -> None:
    with pytest.raises(TlsRefused):
        session(pki).receive(data)


def test_a_client_hello_that_never_ends_is_refused(pki: Pki) -> None:
    """A trickle of one-byte handshake fragments: bounded, not re-read without end."""
    server = session(pki)
    server.receive(b"\x16\x03\x01\x00\x04\x01\x00\xff\xff")  # announces 65535 bytes
    with pytest.raises(TlsRefused, match="no complete ClientHello"):
        for _ in range(4000):
            server.receive(b"\x16\x03\x01\x00\x01\x00")


def test_client_hello_alpn_parsing_across_records(pki: Pki) -> None:
    """The ALPN list is read from a ClientHello split over records and receives."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_context(pki, alpn=["h2", "sunrpc"]).wrap_bio(inc, out, server_hostname="x")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = out.read()
    body = hello[5:]
    split = b"".join(
        b"\x16\x03\x01" + len(body[i : i + 50]).to_bytes(2, "big") + body[i : i + 50]
        for i in range(0, len(body), 50)
    )
    for cut in (1, 5, 60, len(split) - 1):
        assert client_hello_alpn(split[:cut]) == (False, None)
    assert client_hello_alpn(split) == (True, ["h2", "sunrpc"])
    assert client_hello_alpn(hello) == (True, ["h2", "sunrpc"])


def test_plain_call_after_tls_was_agreed_is_refused(pki: Pki) -> None:
    server = session(pki)
    MemoryClient(client_context(pki, alpn=["sunrpc"]), server).handshake()
    with pytest.raises(TlsRefused, match="record refused"):
        server.receive(b"\x80\x00\x00\x28" + b"\0" * 40)


def test_close_notify_ends_the_session(pki: Pki) -> None:
    server = session(pki)
    client = MemoryClient(client_context(pki, alpn=["sunrpc"]), server)
    client.handshake()
    with pytest.raises(ssl.SSLWantReadError):
        client.obj.unwrap()
    with pytest.raises(TlsRefused, match="close_notify"):
        client.pump()


def test_encrypt_after_a_refused_record_is_refused_not_an_ssl_error(pki: Pki) -> None:
    """OpenSSL fails writes once a read failed (SSLEOFError): a worker
    encrypting a reply meanwhile must get the refusal it handles."""
    server = refused_session(pki)
    with pytest.raises(TlsRefused, match="encrypt"):
        server.encrypt([b"reply", b"x" * (1 << 20)])


def test_handshake_deadline(pki: Pki) -> None:
    server = session(pki)
    assert not server.expired(100.0 + HANDSHAKE_TIMEOUT - 0.01)
    assert server.expired(100.0 + HANDSHAKE_TIMEOUT)
    MemoryClient(client_context(pki, alpn=["sunrpc"]), server).handshake()
    assert not server.expired(1e9)  # established: the idle limit applies instead


def test_no_reply_before_the_handshake(pki: Pki) -> None:
    with pytest.raises(TlsRefused):
        session(pki).encrypt([b"reply"])


def test_no_session_tickets(pki: Pki) -> None:
    """Nothing after the handshake that the kernel would have to discard."""
    server = session(pki)
    client = MemoryClient(client_context(pki, alpn=["sunrpc"]), server)
    client.handshake()
    client.pump()
    assert server.outgoing() == b""
    assert client.obj.session is not None and not client.obj.session.has_ticket


# ---------------------------------------------------------------- client certificates


def test_verified_client_certificate_is_mtls_with_its_dns_names(pki: Pki) -> None:
    server = session(pki)
    client = MemoryClient(
        client_context(pki, alpn=["sunrpc"], cert=(pki.client_cert, pki.client_key)), server
    )
    client.handshake()
    assert server.security is not None
    assert server.security.level == "mtls"
    assert server.security.names == ("guest.example",)
    assert len(server.security.fingerprint) == 64
    assert "guest.example" in server.security.describe()


def test_no_client_certificate_is_tls_when_optional(pki: Pki) -> None:
    server = session(pki)
    MemoryClient(client_context(pki, alpn=["sunrpc"]), server).handshake()
    assert server.security == Security("tls")


@pytest.mark.parametrize("which", ["stranger", "expired"])
def test_untrusted_or_expired_client_certificate_is_refused(pki: Pki, which: str) -> None:
    cert = getattr(pki, f"{which}_cert"), getattr(pki, f"{which}_key")
    server = session(pki)
    client = MemoryClient(client_context(pki, alpn=["sunrpc"], cert=cert), server)
    with pytest.raises(TlsRefused, match="handshake failed"):
        client.handshake()
        client.send(b"x")  # TLS 1.3: the server judges the client's certificate last


def test_missing_client_certificate_is_refused_when_required(pki: Pki) -> None:
    server = session(pki, require=True)
    client = MemoryClient(client_context(pki, alpn=["sunrpc"]), server)
    with pytest.raises(TlsRefused, match="handshake failed"):
        client.handshake()
        client.send(b"x")


def test_certificate_names_takes_dns_entries_only() -> None:
    cert = {"subjectAltName": (("DNS", "A.Example"), ("IP Address", "10.0.0.1"), ("DNS", "b"))}
    assert certificate_names(cert) == ("a.example", "b")
    assert certificate_names({}) == ()


# ---------------------------------------------------------------- the context


def test_context_policy(pki: Pki) -> None:
    ctx = server_context(settings(pki))
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
    assert ctx.verify_mode == ssl.CERT_OPTIONAL
    assert ctx.num_tickets == 0
    assert server_context(settings(pki, ca=False)).verify_mode == ssl.CERT_NONE
    assert server_context(settings(pki, require=True)).verify_mode == ssl.CERT_REQUIRED


def test_context_errors_name_the_files(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(TlsConfigError, match="no client CA"):
        server_context(settings(pki, ca=False, require=True))
    with pytest.raises(TlsConfigError, match=r"missing\.pem"):
        server_context(TlsSettings(tmp_path / "missing.pem", pki.server_key))
    with pytest.raises(TlsConfigError, match=r"client\.key"):  # a key of another certificate
        server_context(TlsSettings(pki.server_cert, pki.client_key))
    with pytest.raises(TlsConfigError, match="client CA"):
        server_context(TlsSettings(pki.server_cert, pki.server_key, pki.server_key))


def _server_names(source: ContextSource, pki: Pki) -> str:
    server = TlsSession(source.context(), now=0.0)
    client = MemoryClient(client_context(pki, alpn=["sunrpc"]), server)
    client.handshake()
    cert = client.obj.getpeercert()
    return ",".join(v for k, v in cert["subjectAltName"])


def test_replaced_certificate_files_are_used_for_new_connections(
    pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    shutil.copy(pki.server_cert, cert)
    shutil.copy(pki.server_key, key)
    now = [0.0]
    source = ContextSource(TlsSettings(cert, key), clock=lambda: now[0])
    assert _server_names(source, pki) == "localhost"

    new_cert, new_key = pki.issue("renewed", dns=["localhost", "renewed.example"])
    shutil.copy(new_key, key)  # the key first: for a moment the pair does not match
    now[0] = 1.5
    with caplog.at_level(logging.WARNING, "recovery_fs.tls"):
        assert _server_names(source, pki) == "localhost"  # the old pair stays in force
    assert "cannot be used" in caplog.text
    shutil.copy(new_cert, cert)
    now[0] = 2.0  # within a second of the last check: not looked at yet
    assert _server_names(source, pki) == "localhost"
    now[0] = 2.6
    assert _server_names(source, pki) == "localhost,renewed.example"


def test_a_source_started_on_broken_files_serves_the_copy_last_loaded(
    pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker started while the files on disk do not load (a new key before its
    certificate): the supervisor's copy (``tlsconfig.Loaded``) is served, and the
    files are taken up once they load; a supervisor's copy is made only of files
    that load, in a folder of its own, and a failed copy keeps the one in force."""
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    shutil.copy(pki.server_cert, cert)
    shutil.copy(pki.server_key, key)
    state = tmp_path / "state"
    state.mkdir()
    loaded = Loaded(TlsSettings(cert, key), state)
    loaded.take()
    first = loaded.current
    assert first is not None and first.parent == state / LOADED_DIR
    assert stat.S_IMODE(first.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in first.iterdir())

    new_cert, new_key = pki.issue("renewed", dns=["localhost", "renewed.example"])
    shutil.copy(new_key, key)  # the pair does not match now
    loaded.refresh()
    assert loaded.current == first and first.is_dir()  # a failed copy keeps the one in force
    with pytest.raises(TlsConfigError):
        ContextSource(TlsSettings(cert, key))  # what a worker did: it exited
    now = [0.0]
    with caplog.at_level(logging.WARNING, "recovery_fs.tls"):
        source = ContextSource(
            TlsSettings(cert, key),
            clock=lambda: now[0],
            fallback=TlsSettings(first / "cert.pem", first / "key.pem"),
        )
    assert "serving the ones last loaded" in caplog.text
    assert _server_names(source, pki) == "localhost"
    now[0] = 1.5
    assert _server_names(source, pki) == "localhost"  # the same broken files: not retried
    shutil.copy(new_cert, cert)
    now[0] = 3.0
    assert _server_names(source, pki) == "localhost,renewed.example"
    loaded.refresh()
    assert loaded.current is not None and loaded.current != first and not first.exists()
    loaded.discard()
    assert not (state / LOADED_DIR).exists()


def test_a_copy_the_state_directory_cannot_take_is_logged_not_raised(
    pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A state directory that cannot hold the copy (full, or not a folder): the
    supervisor serves on without one (it warns at start), and a later look logs."""
    state = tmp_path / "state"
    state.mkdir()
    (state / LOADED_DIR).write_text("in the way")
    loaded = Loaded(TlsSettings(pki.server_cert, pki.server_key), state)
    with pytest.raises(OSError):
        loaded.take()  # the supervisor turns it into a start-up warning
    with caplog.at_level(logging.WARNING, "recovery_fs.tls"):
        loaded.refresh()  # the supervisor's looks: the same files, not tried again
        assert "cannot copy" not in caplog.text
        shutil.copy(pki.server_cert, tmp_path / "cert.pem")
        loaded.settings = TlsSettings(tmp_path / "cert.pem", pki.server_key)  # changed files
        loaded.refresh()
    assert caplog.text.count("cannot copy the TLS files") == 1 and loaded.current is None


def test_first_context_failure_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TlsConfigError):
        ContextSource(TlsSettings(tmp_path / "none.pem", tmp_path / "none.key"))


REPO = Path(__file__).resolve().parents[2]
KEY_FORMATS = {
    "pkcs8": serialization.PrivateFormat.PKCS8,
    "traditional": serialization.PrivateFormat.TraditionalOpenSSL,  # Proc-Type: 4,ENCRYPTED
}


def encrypted_copy(key: Path, to: Path, key_format: str) -> Path:
    """``key`` rewritten under a passphrase, as ``openssl ec -aes256`` does."""
    loaded = serialization.load_pem_private_key(key.read_bytes(), None)
    to.write_bytes(
        loaded.private_bytes(
            serialization.Encoding.PEM,
            KEY_FORMATS[key_format],
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    return to


@pytest.mark.parametrize("key_format", list(KEY_FORMATS))
def test_a_key_that_needs_a_passphrase_does_not_load(
    pki: Pki, tmp_path: Path, key_format: str
) -> None:
    key = encrypted_copy(pki.server_key, tmp_path / "server.key", key_format)
    started = time.monotonic()
    with pytest.raises(TlsConfigError, match=r"server\.key.*passphrase"):
        server_context(TlsSettings(pki.server_cert, key))
    assert time.monotonic() - started < 2


# The reload of a child whose controlling terminal is a pseudo-terminal: where
# OpenSSL, given no password callback, asks for a passphrase and waits.
RELOAD_ON_A_TERMINAL = """
import os, shutil, sys, time
from pathlib import Path
from nfsd.transport.tls import ContextSource, TlsSettings
os.close(os.open(os.ttyname(0), os.O_RDWR))  # a session leader: now its terminal
cert, key, encrypted = map(Path, sys.argv[1:])
now = [0.0]
source = ContextSource(TlsSettings(cert, key), clock=lambda: now[0])
first = source.context()
shutil.copy(encrypted, key)
now[0] = 5.0
started = time.monotonic()
kept = source.context() is first
print(f"kept={kept} after {time.monotonic() - started:.1f} s", flush=True)
"""


def test_a_replaced_key_that_needs_a_passphrase_is_never_asked_for(
    pki: Pki, tmp_path: Path
) -> None:
    """The reload runs on the event loop: a prompt on the server's terminal
    stopped a foreground server (every client, SIGTERM too) until someone typed."""
    key = tmp_path / "server.key"
    shutil.copy(pki.server_key, key)
    encrypted = encrypted_copy(pki.server_key, tmp_path / "encrypted.key", "traditional")
    primary, secondary = os.openpty()
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            RELOAD_ON_A_TERMINAL,
            str(pki.server_cert),
            str(key),
            str(encrypted),
        ],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    os.close(secondary)
    out = b""
    deadline = time.monotonic() + 20
    try:
        while b"kept=" not in out and b"pass phrase" not in out and time.monotonic() < deadline:
            if select.select([primary], [], [], 0.2)[0]:
                try:
                    out += os.read(primary, 4096)
                except OSError:  # EIO: the child has gone
                    break
    finally:
        child.kill()
        child.wait()
        os.close(primary)
    assert b"pass phrase" not in out
    assert b"kept=True" in out, out
    assert b"cannot ask for its passphrase" in out  # the warning, on stderr


def test_ktls_is_not_claimed_on_a_plain_socket() -> None:
    a, b = socket.socketpair()
    with a, b:
        assert ktls_in_use(a) is False
    with socket.create_server(("127.0.0.1", 0)) as srv:
        c = socket.create_connection(srv.getsockname())
        s, _ = srv.accept()
        with c, s:
            assert ktls_in_use(s) is False
