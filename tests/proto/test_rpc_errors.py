"""RPC-level replies exactly as RFC 5531 says, bytes in and bytes out."""

from __future__ import annotations

import struct

import pytest

from nfsd.rpc import Dispatcher, Procedure, Program, Reply, no_args
from tests.proto.calls import call, parse
from xdr import rpc
from xdr.base import Unpacker


def echo_uint(u: Unpacker) -> int:
    return u.unpack_uint()


def make_dispatcher() -> Dispatcher:
    def boom(ctx, args):  # type: ignore[no-untyped-def]
        raise RuntimeError("bug")

    prog = Program(
        number=400000,
        name="TEST",
        versions={
            2: {0: Procedure("NULL", no_args, lambda ctx, a: Reply([]))},
            3: {
                0: Procedure("NULL", no_args, lambda ctx, a: Reply([])),
                1: Procedure("ECHO", echo_uint, lambda ctx, a: Reply([struct.pack(">I", a)])),
                2: Procedure("BOOM", no_args, boom),
            },
        },
    )
    return Dispatcher([prog])


D = make_dispatcher()


def dispatch(record: bytes):  # type: ignore[no-untyped-def]
    reply = D.dispatch(record, "127.0.0.1:999", "tcp")
    assert reply is not None
    return parse(reply.parts)


def test_success_echoes_xid_and_result() -> None:
    r = dispatch(call(400000, 3, 1, struct.pack(">I", 77), xid=0xDEADBEEF))
    assert (r.xid, r.reply_stat, r.stat, r.body) == (
        0xDEADBEEF,
        rpc.MSG_ACCEPTED,
        rpc.SUCCESS,
        struct.pack(">I", 77),
    )


def test_prog_unavail_for_unknown_program_and_nfsacl() -> None:
    for prog in (100227, 123456):
        r = dispatch(call(prog, 3, 0))
        assert (r.reply_stat, r.stat) == (rpc.MSG_ACCEPTED, rpc.PROG_UNAVAIL)


def test_prog_mismatch_carries_the_version_range() -> None:
    r = dispatch(call(400000, 4, 0))
    assert (r.reply_stat, r.stat) == (rpc.MSG_ACCEPTED, rpc.PROG_MISMATCH)
    assert struct.unpack(">II", r.body) == (2, 3)


def test_proc_unavail() -> None:
    r = dispatch(call(400000, 3, 99))
    assert (r.reply_stat, r.stat) == (rpc.MSG_ACCEPTED, rpc.PROC_UNAVAIL)


@pytest.mark.parametrize("args", [b"", b"\0\0", struct.pack(">II", 1, 2)])
def test_garbage_args_for_short_or_trailing_bytes(args: bytes) -> None:
    r = dispatch(call(400000, 3, 1, args))
    assert (r.reply_stat, r.stat) == (rpc.MSG_ACCEPTED, rpc.GARBAGE_ARGS)


def test_rpc_mismatch_names_version_2() -> None:
    reply = D.dispatch(call(400000, 3, 0, rpcvers=3), "p", "tcp")
    assert reply is not None
    data = b"".join(bytes(p) for p in reply.parts)
    assert struct.unpack(">IIIIII", data) == (
        0x1234,
        rpc.REPLY,
        rpc.MSG_DENIED,
        rpc.RPC_MISMATCH,
        2,
        2,
    )


@pytest.mark.parametrize("flavor", [rpc.AUTH_SHORT, rpc.AUTH_DH, rpc.RPCSEC_GSS, 99])
def test_auth_error_for_other_flavours(flavor: int) -> None:
    reply = D.dispatch(call(400000, 3, 0, cred=rpc.opaque_auth(flavor, b"x" * 8)), "p", "tcp")
    assert reply is not None
    data = b"".join(bytes(p) for p in reply.parts)
    assert struct.unpack(">IIIII", data) == (
        0x1234,
        rpc.REPLY,
        rpc.MSG_DENIED,
        rpc.AUTH_ERROR,
        rpc.AUTH_BADCRED,
    )


def test_auth_none_is_accepted() -> None:
    r = dispatch(call(400000, 3, 0, cred=rpc.opaque_auth(rpc.AUTH_NONE, b"")))
    assert r.stat == rpc.SUCCESS


def test_malformed_auth_sys_body_is_badcred() -> None:
    reply = D.dispatch(
        call(400000, 3, 0, cred=rpc.opaque_auth(rpc.AUTH_SYS, b"\0\0\0\1")), "p", "tcp"
    )
    assert reply is not None
    data = b"".join(bytes(p) for p in reply.parts)
    assert struct.unpack(">IIIII", data)[3:] == (rpc.AUTH_ERROR, rpc.AUTH_BADCRED)


@pytest.mark.parametrize(
    ("cred_len", "verf_len", "stat"),
    [(401, 0, rpc.AUTH_BADCRED), (0xFFFFFFFF, 0, rpc.AUTH_BADCRED), (0, 401, rpc.AUTH_BADVERF)],
)
def test_credential_or_verifier_over_400_bytes_is_an_auth_error(
    cred_len: int, verf_len: int, stat: int
) -> None:
    """RFC 5531 §8.2: opaque_auth bodies are at most 400 bytes; the call is
    answered (a TCP client would wait for it), never dropped."""
    head = struct.pack(">IIIIIII", 0x51, rpc.CALL, 2, 400000, 3, 0, rpc.AUTH_NONE)
    if cred_len == 0:
        record = head + struct.pack(">III", 0, rpc.AUTH_NONE, verf_len) + bytes(404)
    else:
        record = head + struct.pack(">I", cred_len) + bytes(404) + bytes(8)
    reply = D.dispatch(record, "p", "tcp")
    assert reply is not None
    data = b"".join(bytes(p) for p in reply.parts)
    assert struct.unpack(">IIIII", data) == (0x51, rpc.REPLY, rpc.MSG_DENIED, rpc.AUTH_ERROR, stat)


def test_unexpected_exception_is_system_err_without_a_fault_status() -> None:
    r = dispatch(call(400000, 3, 2))
    assert r.stat == rpc.SYSTEM_ERR


@pytest.mark.parametrize(
    "record", [b"", b"\0\0\0\1", struct.pack(">II", 1, rpc.REPLY) + b"\0" * 40]
)
def test_undecodable_header_or_a_reply_gets_no_answer(record: bytes) -> None:
    assert D.dispatch(record, "p", "tcp") is None
