"""RPC-with-TLS (RFC 9289): the policy and the sans-IO pieces, no sockets.

Design notes
------------
A client asks for TLS on an ordinary TCP connection with a NULL call whose
credential flavour is AUTH_TLS (7), of any program and version (RFC 9289
§4.1).  What happens to such a call (:func:`starttls_refusal`):

=====================================  =====================================
the AUTH_TLS call                      answer
=====================================  =====================================
NULL, plain TCP, TLS configured,       MSG_ACCEPTED, verifier AUTH_NONE with
empty credential, AUTH_NONE verifier   the 8 bytes ``STARTTLS``, SUCCESS;
                                       the handshake follows on the same
                                       connection (``Reply.starttls``)
verifier not an empty AUTH_NONE        AUTH_ERROR / AUTH_BADVERF
any other procedure, a credential      AUTH_ERROR / AUTH_BADCRED
body, over UDP, inside TLS, or no
TLS configured on this server
=====================================  =====================================

(knfsd answers the same, but a server with no TLS says so with an accepted
reply and a null verifier; AUTH_BADCRED is what this server answered before
it knew AUTH_TLS, and the Linux client takes both as "no TLS here".)

After the STARTTLS reply the transport stops reading RPC records on the
connection: the next bytes must be a TLS handshake record (a ClientHello).
Anything else - bytes pipelined after the NULL call, a plain call - closes
the connection (:class:`TlsSession` raises :class:`TlsRefused`).

The policy of :func:`server_context`:

* TLS 1.3 only (the RFC's floor); ALPN ``sunrpc`` offered.  OpenSSL
  completes a handshake whose client offered no ALPN, or another one
  (Python cannot make its ALPN callback fatal), so :class:`TlsSession`
  reads the ALPN list of the ClientHello itself (:func:`client_hello_alpn`)
  and decides after the handshake:

  ===========================  =========================================
  the client's ALPN            the connection
  ===========================  =========================================
  a list holding ``sunrpc``    kept (``sunrpc`` is what was agreed)
  a list without ``sunrpc``    closed (RFC 9289 §7.2)
  no ALPN extension at all     kept, unless ``require_alpn``: the Linux
                               client's tlshd (ktls-utils 1.0.0, Debian
                               13) sends none - measured, and its binary
                               links no ``gnutls_alpn_*`` - and knfsd,
                               whose handshakes tlshd does, accepts it
  ===========================  =========================================

* No session tickets: RPC connections live long and are not resumed, and
  a NewSessionTicket arriving after tlshd handed the socket to the kernel
  is one more record the Linux client must discard.
* With a client CA, certificates are asked for (``CERT_OPTIONAL``: a client
  without one is ``tls``, with a verified one ``mtls``; each export's
  ``xprtsec=`` then admits or refuses its calls).  ``CERT_REQUIRED`` only
  with ``TlsSettings.require_client_cert``, which the server's options do
  not set.  A certificate that does not verify
  (untrusted, expired) fails the handshake: OpenSSL does that part.
* ``OP_ENABLE_KTLS`` is set where this Python has it (3.12 and later).
  It takes effect only on a socket BIO and with the kernel's ``tls``
  module; :class:`TlsSession` runs over memory BIOs, so that the
  transport keeps its own sockets, its ``sendmsg`` batching and its
  budgets (the ciphertext is plain bytes to it).  :func:`ktls_in_use`
  tells whether a socket carries the kernel's TLS.

Certificate files replaced on disk are used for new connections
(:class:`ContextSource`): their (device, inode, size, mtime) are compared
at most once a second; a set of files that does not load (a key written
before its certificate, a mismatch, a key that needs a passphrase) keeps
the previous context and is logged once per change.  A passphrase is never
asked for (:func:`_no_passphrase`): OpenSSL would prompt on the terminal,
and the reload runs on the event loop - a foreground server would stop
answering every client, and SIGTERM, until someone typed.

A session's SSL object is used by the loop (receive) and by workers
(encrypt): its lock serialises the two, as OpenSSL requires.  Once one
side has failed (a record refused, an alert) OpenSSL fails the other too;
both raise :class:`TlsRefused`, never a bare ``ssl.SSLError``, so that a
worker holding a pooled READ reply frees it and closes the connection.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from xdr.rpc import (
    AUTH_BADCRED,
    AUTH_BADVERF,
    AUTH_NONE,
    SUCCESS,
    RpcPacker,
    call_body,
    opaque_auth,
)

if TYPE_CHECKING:
    import ssl

# ``ssl`` and ``hashlib`` (OpenSSL's libraries, about 5 MB of a process) are
# imported where a TLS session or context is made: a server offering no TLS
# never loads them in its supervisor, nor ``ssl`` in its workers.

log = logging.getLogger("recovery_fs.tls")

AUTH_TLS = 7  # RFC 9289 §4.1, enum auth_flavor
STARTTLS = b"STARTTLS"
ALPN = "sunrpc"  # RFC 9289 §7.2
HANDSHAKE_TIMEOUT = 10.0  # seconds from the STARTTLS reply to a finished handshake
RELOAD_INTERVAL = 1.0  # seconds between checks of the certificate files
READ_CHUNK = 64 * 1024
COALESCE = 16 * 1024  # reply parts below this are joined: one TLS record, not several
TCP_ULP = getattr(socket, "TCP_ULP", 31)
TLS_HANDSHAKE = 0x16  # TLS record content type of a ClientHello
MAX_HELLO = 16 * 1024  # bytes a ClientHello may take (real ones: under 2 KiB)

Buffer = bytes | bytearray | memoryview
SECURITY_LEVELS = ("none", "tls", "mtls")


class TlsConfigError(ValueError):
    """Certificate, key or CA files that cannot be used."""


class TlsRefused(Exception):
    """A TLS connection to close; the message says why, for the log line."""


class TlsClosed(TlsRefused):
    """The client ended TLS with a close_notify: an ordinary close, not a refusal."""


# ---------------------------------------------------------------- STARTTLS


def starttls_refusal(call: call_body, transport: str, security: str, enabled: bool) -> int:
    """0 when an AUTH_TLS call gets the STARTTLS reply, else its auth_stat.

    ``transport`` is "tcp" or "udp", ``security`` the connection's level
    ("none" before any handshake), ``enabled`` whether a certificate is
    configured.  See the table of the design notes.
    """
    if call.verf.flavor != AUTH_NONE or call.verf.body:
        return AUTH_BADVERF
    if call.proc != 0 or call.cred.body:
        return AUTH_BADCRED
    if transport != "tcp" or security != "none" or not enabled:
        return AUTH_BADCRED
    return 0


def starttls_reply(xid: int) -> bytes:
    """MSG_ACCEPTED, verifier AUTH_NONE holding ``STARTTLS``, SUCCESS (NULL's void result)."""
    p = RpcPacker()
    p.pack_accepted_header(xid, opaque_auth(AUTH_NONE, STARTTLS), SUCCESS)
    return p.get_buffer()


# ---------------------------------------------------------------- what a connection proved


@dataclass(frozen=True, slots=True)
class Security:
    """What a connection's transport proved: checked against an export's ``xprtsec=``.

    ``level`` is "none" (plain TCP or UDP), "tls" or "mtls" (a client
    certificate that verified against the client CA); ``names`` are that
    certificate's subjectAltName DNS names, lower case; ``fingerprint`` its
    SHA-256, hex, for the logs.
    """

    level: str = "none"
    names: tuple[str, ...] = ()
    fingerprint: str = ""

    def describe(self) -> str:
        if self.level != "mtls":
            return self.level
        return f"mtls {','.join(self.names) or '(no DNS name)'} sha256:{self.fingerprint[:16]}"


PLAIN = Security()


def certificate_names(cert: dict) -> tuple[str, ...]:
    """subjectAltName DNS names of a certificate as ``SSLObject.getpeercert()`` gives it."""
    return tuple(
        str(value).lower()
        for kind, value in cert.get("subjectAltName", ())
        if kind == "DNS" and value
    )


def established_security(
    obj: ssl.SSLObject | ssl.SSLSocket,
    offered: Sequence[str] | None,
    require_alpn: bool = False,
) -> Security:
    """The checks OpenSSL does not make, once a handshake has finished.

    ``offered`` is the ALPN list of the ClientHello (None: no ALPN
    extension).  Raises :class:`TlsRefused` unless TLS 1.3 was agreed and
    ALPN ``sunrpc`` too - or, without ``require_alpn``, the client sent no
    ALPN at all (see the design notes); returns "mtls" with the names of a
    verified client certificate, "tls" without one.
    """
    version = obj.version()
    if version != "TLSv1.3":
        raise TlsRefused(f"handshake agreed {version}, not TLSv1.3")
    alpn = obj.selected_alpn_protocol()
    if offered is not None and ALPN not in offered:
        raise TlsRefused(f"client offered ALPN {list(offered)}, not {ALPN!r}")
    if offered is None and require_alpn:
        raise TlsRefused("client offered no ALPN")
    if offered is not None and alpn != ALPN:
        raise TlsRefused(f"ALPN {alpn!r} agreed, not {ALPN!r}")
    cert = obj.getpeercert()
    if not cert:  # none sent, or no client CA to verify it against
        return Security("tls")
    der = obj.getpeercert(binary_form=True) or b""
    import hashlib  # noqa: PLC0415  (see the imports)

    return Security("mtls", certificate_names(cert), hashlib.sha256(der).hexdigest())


# ---------------------------------------------------------------- the ClientHello


class _Short(Exception):
    pass


def _take(buf: memoryview, at: int, n: int) -> tuple[memoryview, int]:
    if at + n > len(buf):
        raise _Short
    return buf[at : at + n], at + n


def _int(buf: memoryview, at: int, n: int) -> tuple[int, int]:
    raw, at = _take(buf, at, n)
    return int.from_bytes(raw, "big"), at


class HelloReader:
    """Reads the ALPN list of a ClientHello from the first bytes a client sends.

    Fed incrementally, each byte looked at once (a trickle of one-byte
    records costs no more than one record): ``complete`` once the
    ClientHello is whole; ``alpn`` is then its ALPN list, or None without
    an ALPN extension.  Raises :class:`TlsRefused` for bytes that are no
    ClientHello, or more than :data:`MAX_HELLO` of them.
    """

    def __init__(self) -> None:
        self._raw = bytearray()  # bytes of a record not yet whole
        self._body = bytearray()  # handshake fragments joined
        self._fed = 0
        self.complete = False
        self.alpn: list[str] | None = None

    def feed(self, data: Buffer) -> bool:
        if self.complete:
            return True
        self._fed += len(data)
        if self._fed > MAX_HELLO:
            raise TlsRefused(f"no complete ClientHello in {MAX_HELLO} bytes")
        self._raw += data
        while len(self._raw) >= 5:
            if self._raw[0] != TLS_HANDSHAKE:
                raise TlsRefused("bytes other than a ClientHello after STARTTLS")
            length = int.from_bytes(self._raw[3:5], "big")
            if len(self._raw) < 5 + length:
                break
            self._body += self._raw[5 : 5 + length]
            del self._raw[: 5 + length]
        if self._raw and self._raw[0] != TLS_HANDSHAKE:
            raise TlsRefused("bytes other than a ClientHello after STARTTLS")
        if len(self._body) < 4:
            return False
        if self._body[0] != 1:
            raise TlsRefused("first handshake message is not a ClientHello")
        need = int.from_bytes(self._body[1:4], "big")
        if len(self._body) < 4 + need:
            return False
        self.alpn = _hello_alpn(memoryview(bytes(self._body[4 : 4 + need])))
        self.complete = True
        self._raw = self._body = bytearray()
        return True


def _hello_alpn(hello: memoryview) -> list[str] | None:
    """The ALPN list of a ClientHello body (RFC 8446 §4.1.2), None without one."""
    try:
        at = 2 + 32  # legacy_version, random
        n, at = _int(hello, at, 1)
        _, at = _take(hello, at, n)  # legacy_session_id
        n, at = _int(hello, at, 2)
        _, at = _take(hello, at, n)  # cipher_suites
        n, at = _int(hello, at, 1)
        _, at = _take(hello, at, n)  # legacy_compression_methods
        if at == len(hello):
            return None
        n, at = _int(hello, at, 2)
        exts, _ = _take(hello, at, n)
        at = 0
        while at < len(exts):
            etype, at = _int(exts, at, 2)
            n, at = _int(exts, at, 2)
            ext, at = _take(exts, at, n)
            if etype != 16:  # application_layer_protocol_negotiation
                continue
            n, pos = _int(ext, 0, 2)
            names: list[str] = []
            while pos < 2 + n:
                k, pos = _int(ext, pos, 1)
                name, pos = _take(ext, pos, k)
                names.append(bytes(name).decode("ascii", "replace"))
            return names
    except _Short:
        raise TlsRefused("malformed ClientHello") from None
    return None


def client_hello_alpn(data: Buffer) -> tuple[bool, list[str] | None]:
    """(complete, ALPN list) of the ClientHello at the start of ``data`` (:class:`HelloReader`)."""
    r = HelloReader()
    return r.feed(data), r.alpn


# ---------------------------------------------------------------- the context


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """The files of ``--tls-cert``, ``--tls-key`` and ``--tls-client-ca``.

    ``require_client_cert``: refuse a handshake without a client
    certificate; otherwise one is asked for whenever a client CA is given.
    No option of the server sets it (``nfsd.service.tlsconfig``): a client
    without one is ``tls``, refused by the ``mtls`` exports only.
    """

    cert: Path
    key: Path
    client_ca: Path | None = None
    require_client_cert: bool = False
    require_alpn: bool = False  # also close clients that send no ALPN (Linux's tlshd 1.0)

    def files(self) -> tuple[Path, ...]:
        return (self.cert, self.key) + ((self.client_ca,) if self.client_ca else ())


def _no_passphrase() -> bytes:
    """``load_cert_chain``'s password callback: a key that needs a passphrase
    fails at once (without a callback OpenSSL reads one from the terminal)."""
    raise TlsConfigError("the key is encrypted: the server cannot ask for its passphrase")


def server_context(settings: TlsSettings) -> ssl.SSLContext:
    """The server's SSLContext under the policy of the design notes."""
    import ssl  # noqa: PLC0415  (see the imports)

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols([ALPN])
    ctx.num_tickets = 0
    ctx.options |= getattr(ssl, "OP_ENABLE_KTLS", 0)
    try:
        ctx.load_cert_chain(settings.cert, settings.key, password=_no_passphrase)
    except (OSError, ssl.SSLError, TlsConfigError) as e:
        raise TlsConfigError(f"certificate {settings.cert} with key {settings.key}: {e}") from e
    if settings.client_ca is not None:
        try:
            ctx.load_verify_locations(cafile=settings.client_ca)
        except (OSError, ssl.SSLError) as e:
            raise TlsConfigError(f"client CA {settings.client_ca}: {e}") from e
        ctx.verify_mode = ssl.CERT_REQUIRED if settings.require_client_cert else ssl.CERT_OPTIONAL
    elif settings.require_client_cert:
        raise TlsConfigError("client certificates are required but no client CA is given")
    return ctx


def file_signature(paths: Sequence[Path]) -> tuple[tuple[int, int, int, int], ...]:
    """Device, inode, size and mtime of each file (a missing one: zeros): a change
    of any of them is a change of the files."""
    out = []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            out.append((0, 0, -1, 0))
        else:
            out.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


@dataclass
class ContextSource:
    """The context for a new connection, rebuilt when its files change on disk.

    The first build raises :class:`TlsConfigError` (the server does not
    start); later ones that fail keep the context in force.  ``fallback``: the
    files the server last loaded (a copy the supervisor keeps), built instead
    when the first build of ``settings`` fails: a worker started while the
    files on disk are broken serves what the running ones do, and takes the
    files up once they load.
    """

    settings: TlsSettings
    clock: Callable[[], float] = time.monotonic
    interval: float = RELOAD_INTERVAL
    fallback: TlsSettings | None = None
    _ctx: ssl.SSLContext = field(init=False)
    _sig: tuple = field(init=False)
    _failed_sig: tuple | None = field(init=False, default=None)
    _checked: float = field(init=False)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._sig = file_signature(self.settings.files())
        try:
            self._ctx = server_context(self.settings)
        except TlsConfigError as e:
            if self.fallback is None:
                raise
            self._ctx = server_context(self.fallback)  # raises the same if that fails too
            self._failed_sig, self._sig = self._sig, ()  # tried again once they change
            log.warning("TLS files cannot be used, serving the ones last loaded: %s", e)
        self._checked = self.clock()

    def context(self) -> ssl.SSLContext:
        now = self.clock()
        if now - self._checked < self.interval:
            return self._ctx
        with self._lock:
            if now - self._checked >= self.interval:
                self._checked = now
                self._reload()
            return self._ctx

    def _reload(self) -> None:
        sig = file_signature(self.settings.files())
        if sig in (self._sig, self._failed_sig):
            return
        try:
            ctx = server_context(self.settings)
        except TlsConfigError as e:
            self._failed_sig = sig
            log.warning("TLS files changed but cannot be used, keeping the previous ones: %s", e)
            return
        self._ctx, self._sig, self._failed_sig = ctx, sig, None
        log.info("TLS certificate files reloaded: used for new connections")


# ---------------------------------------------------------------- one connection


class TlsSession:
    """One connection's TLS over memory BIOs: ciphertext in and out, no socket.

    The transport feeds what it receives to :meth:`receive` (plaintext comes
    back, once the handshake is done), sends whatever :meth:`outgoing` holds
    after every call (handshake messages, alerts, key updates), and turns
    reply buffers into ciphertext with :meth:`encrypt`.  A failure raises
    :class:`TlsRefused` (:class:`TlsClosed` for a close_notify): close the
    connection and log the message.  ``pending`` counts the ciphertext bytes
    received since plaintext last came out: a TLS record begun and not
    finished, which the transport times and counts like an RPC record.
    """

    def __init__(
        self,
        ctx: ssl.SSLContext,
        now: float,
        timeout: float = HANDSHAKE_TIMEOUT,
        require_alpn: bool = False,
    ) -> None:
        import ssl  # noqa: PLC0415  (see the imports)

        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = ctx.wrap_bio(self._in, self._out, server_side=True)
        self._lock = threading.Lock()
        self._hello = HelloReader()
        self.require_alpn = require_alpn
        self.deadline = now + timeout
        self.security: Security | None = None  # set once established
        self.pending = 0  # ciphertext bytes received since plaintext last came out

    @property
    def established(self) -> bool:
        return self.security is not None

    def expired(self, now: float) -> bool:
        """True while the handshake is unfinished past its deadline."""
        return self.security is None and now >= self.deadline

    def receive(self, data: Buffer) -> bytes:
        """Feed received ciphertext; return the plaintext it completes (maybe b"")."""
        import ssl  # noqa: PLC0415  (see the imports)

        with self._lock:
            self._hello.feed(data)
            self._in.write(data)
            if self.security is not None:
                self.pending += len(data)
            else:
                try:
                    self._obj.do_handshake()
                except ssl.SSLWantReadError:
                    return b""
                except ssl.SSLError as e:
                    raise TlsRefused(f"handshake failed: {e.reason or e}") from e
                if not self._hello.complete:
                    raise TlsRefused("handshake finished before the ClientHello was read")
                self.security = established_security(self._obj, self._hello.alpn, self.require_alpn)
            plain = self._read_plain()
            if plain:
                self.pending = 0
            return plain

    def _read_plain(self) -> bytes:
        import ssl  # noqa: PLC0415  (see the imports)

        chunks: list[bytes] = []
        while True:
            try:
                chunk = self._obj.read(READ_CHUNK)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError as e:
                raise TlsClosed("client closed TLS (close_notify)") from e
            except ssl.SSLError as e:
                raise TlsRefused(f"TLS record refused: {e.reason or e}") from e
            if not chunk:  # over memory BIOs, b"" is only ever a close_notify
                raise TlsClosed("client closed TLS (close_notify)")
            chunks.append(chunk)
        return b"".join(chunks)

    def encrypt(self, parts: Sequence[Buffer]) -> bytes:
        """The ciphertext of ``parts`` (and of anything else pending), in order.

        Small parts are joined so that a reply header and its body share a
        TLS record.  Raises :class:`TlsRefused` for any ``ssl.SSLError``:
        once :meth:`receive` has refused a record (a bad MAC, an alert) on
        the loop, OpenSSL refuses to write too (``SSLEOFError``), and a
        worker encrypting a reply meanwhile must see the refusal it knows
        how to handle (the reply freed, the connection closed), not an
        exception that escapes it.
        """
        import ssl  # noqa: PLC0415  (see the imports)

        with self._lock:
            if self.security is None:
                raise TlsRefused("reply before the TLS handshake finished")
            try:
                self._write(parts)
            except ssl.SSLError as e:
                raise TlsRefused(f"TLS refused to encrypt a reply: {e.reason or e}") from e
            return self._out.read()

    def _write(self, parts: Sequence[Buffer]) -> None:
        """(lock held) Write ``parts`` to the SSL object, small ones joined."""
        small = bytearray()
        for part in parts:
            if len(part) < COALESCE:
                small += part
                continue
            if small:
                self._obj.write(small)
                small = bytearray()
            self._obj.write(part)
        if small:
            self._obj.write(small)

    def outgoing(self) -> bytes:
        """Ciphertext waiting to be sent (handshake, alerts, key updates)."""
        with self._lock:
            return self._out.read()


def ktls_in_use(sock: socket.socket) -> bool:
    """True when the kernel's TLS ULP is attached to ``sock`` (OP_ENABLE_KTLS took)."""
    try:
        ulp = sock.getsockopt(socket.IPPROTO_TCP, TCP_ULP, 16)
    except OSError:
        return False
    return ulp.rstrip(b"\0") == b"tls"
