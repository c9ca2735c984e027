"""AUTH_TLS through the RPC dispatcher (RFC 9289 §4.1), bytes in and bytes out."""

from __future__ import annotations

import struct

import pytest

from nfsd.rpc import CallContext, Dispatcher, Procedure, Program, Reply, no_args
from nfsd.transport.tls import AUTH_TLS, PLAIN, Security
from tests.proto.calls import call, parse
from xdr import rpc

seen: list[CallContext] = []


def _record(ctx: CallContext, args: object) -> Reply:
    seen.append(ctx)
    return Reply([])


def dispatcher(starttls: bool = True) -> Dispatcher:
    prog = Program(
        number=400000,
        name="TEST",
        versions={3: {0: Procedure("NULL", no_args, _record), 1: Procedure("P", no_args, _record)}},
    )
    d = Dispatcher([prog])
    d.starttls = starttls
    return d


TLS_CRED = rpc.opaque_auth(AUTH_TLS, b"")
MTLS = Security("mtls", ("guest.example",), "ab" * 32)


def auth_stat(reply: Reply | None) -> tuple[int, int]:
    assert reply is not None
    r = parse(reply.parts)
    assert r.reply_stat == rpc.MSG_DENIED
    return r.stat, struct.unpack(">I", r.body)[0]


@pytest.mark.parametrize(("prog", "vers"), [(400000, 3), (100003, 3), (100005, 3), (123, 9)])
def test_null_with_auth_tls_on_plain_tcp_gets_starttls(prog: int, vers: int) -> None:
    """Any program and version: the probe is answered before the program is looked up."""
    reply = dispatcher().dispatch(call(prog, vers, 0, xid=77, cred=TLS_CRED), "p", "tcp")
    assert reply is not None and reply.starttls
    data = b"".join(bytes(p) for p in reply.parts)
    assert data == struct.pack(">IIIII", 77, rpc.REPLY, rpc.MSG_ACCEPTED, rpc.AUTH_NONE, 8) + (
        b"STARTTLS\0\0\0\0"
    )


@pytest.mark.parametrize(
    ("proc", "transport", "security", "starttls"),
    [
        (1, "tcp", PLAIN, True),  # another procedure
        (0, "udp", PLAIN, True),  # over UDP (no DTLS)
        (0, "tcp", Security("tls"), True),  # inside TLS
        (0, "tcp", MTLS, True),
        (0, "tcp", PLAIN, False),  # no certificate configured
    ],
    ids=["not-null", "udp", "inside-tls", "inside-mtls", "not-configured"],
)
def test_auth_tls_elsewhere_is_badcred(
    proc: int, transport: str, security: Security, starttls: bool
) -> None:
    reply = dispatcher(starttls).dispatch(
        call(400000, 3, proc, cred=TLS_CRED), "p", transport, security=security
    )
    assert not reply.starttls  # type: ignore[union-attr]
    assert auth_stat(reply) == (rpc.AUTH_ERROR, rpc.AUTH_BADCRED)


def test_auth_tls_with_a_verifier_is_badverf() -> None:
    reply = dispatcher().dispatch(
        call(400000, 3, 0, cred=TLS_CRED, verf=rpc.opaque_auth(rpc.AUTH_NONE, b"xxxx")), "p", "tcp"
    )
    assert auth_stat(reply) == (rpc.AUTH_ERROR, rpc.AUTH_BADVERF)


def test_procedures_see_the_connection_security() -> None:
    seen.clear()
    d = dispatcher()
    d.dispatch(call(400000, 3, 1), "p", "tcp", security=MTLS)
    d.dispatch(call(400000, 3, 1), "p", "tcp")
    assert [c.security for c in seen] == [MTLS, PLAIN]
