"""AUTH_SYS credentials decoded once per distinct body (``Dispatcher._authsys``).

The cache must never change what a procedure sees: each call gets its own
``authsys_parms`` with its own values, whatever was decoded before.
"""

from __future__ import annotations

from nfsd import rpc
from nfsd.rpc import CallContext, Dispatcher, Procedure, Program, Reply, no_args
from tests.proto.calls import auth_sys, call, parse
from xdr.rpc import AUTH_BADCRED, AUTH_SYS, MSG_DENIED, SUCCESS, opaque_auth

PROG = 400999


def harness() -> tuple[Dispatcher, list[CallContext]]:
    seen: list[CallContext] = []

    def run(ctx: CallContext, args: object) -> Reply:
        seen.append(ctx)
        return Reply([b""])

    prog = Program(PROG, "test", {1: {1: Procedure("SEE", no_args, run)}})
    return Dispatcher([prog]), seen


def serve(d: Dispatcher, cred: opaque_auth) -> int:
    reply = d.dispatch(call(PROG, 1, 1, cred=cred), "127.0.0.1:700", "tcp")
    assert reply is not None
    return parse(reply.parts).stat


def test_each_call_gets_its_own_credentials():
    d, seen = harness()
    for uid in (1000, 0, 1000, 5, 1000):
        assert serve(d, auth_sys(uid, uid + 1)) == SUCCESS
    assert [(c.cred.uid, c.cred.gid) for c in seen] == [
        (1000, 1001),
        (0, 1),
        (1000, 1001),
        (5, 6),
        (1000, 1001),
    ]
    first, third = seen[0].cred, seen[2].cred
    assert first is not third and first.gids is not third.gids
    first.gids.append(0)  # a procedure changing its copy changes nobody else's
    first.uid = 7
    assert serve(d, auth_sys(1000, 1001)) == SUCCESS
    assert (seen[-1].cred.uid, seen[-1].cred.gids) == (1000, [])


def test_more_distinct_credentials_than_kept():
    d, seen = harness()
    uids = [*range(rpc.CRED_CACHE + 10), 3, rpc.CRED_CACHE + 5]
    for uid in uids:
        assert serve(d, auth_sys(uid)) == SUCCESS
    assert [c.cred.uid for c in seen] == uids
    assert len(d._creds) <= rpc.CRED_CACHE


def test_malformed_credentials_are_refused_every_time():
    d, seen = harness()
    bad = opaque_auth(AUTH_SYS, b"\0\0\0\1")  # truncated
    for _ in range(2):
        reply = d.dispatch(call(PROG, 1, 1, cred=bad), "127.0.0.1:700", "tcp")
        assert reply is not None
        r = parse(reply.parts)
        assert r.reply_stat == MSG_DENIED
        assert r.body.endswith(AUTH_BADCRED.to_bytes(4, "big"))
    assert seen == []
