"""The access check's shortcuts give exactly the decisions and credentials it made before.

``AccessControl.decide`` reuses the last call's decision when the call's peer
string, flavour, export and Security object are the very ones of that call,
and ``squash`` gives the credential it made last for the same credential
object and options: checked against a reload, the sessions' list, expiry,
and against a squash made afresh.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import nfsd.programs.access as access_mod
from exports import ExportOptions
from nfsd.programs.access import OK, AccessControl, _squashed, squash
from nfsd.rpc import CallContext
from nfsd.transport.tls import Security
from xdr import nfs3const as nfs3
from xdr.rpc import AUTH_NONE, AUTH_SYS, authsys_parms

ALLOWED, STRANGER = "10.0.0.2", "10.0.0.3"


def ctx_for(peer: str, cred: authsys_parms | None = None, **kw: object) -> CallContext:
    cred = cred if cred is not None else authsys_parms(0, b"h", 1000, 1000, [])
    return CallContext(1, nfs3.NFS_PROGRAM, 3, 1, AUTH_SYS, cred, peer, "tcp", **kw)  # type: ignore[arg-type]


@pytest.fixture
def counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[AccessControl, Path, list]:
    f = tmp_path / "exports"
    f.write_text(f"/recover/images {ALLOWED}(insecure)\n")
    access = AccessControl(f, "/recover/images", tmp_path)
    calls: list[int] = []
    real = access._spec
    monkeypatch.setattr(access, "_spec", lambda *a: calls.append(1) or real(*a))
    return access, f, calls


def test_the_same_call_keys_reuse_the_decision(counted) -> None:
    access, _, calls = counted
    peer = f"{ALLOWED}:40000"
    first = access.decide(ctx_for(peer))
    assert first.reason == OK and calls == [1]
    for _ in range(3):
        assert access.decide(ctx_for(peer)) is first
    # an equal peer string, another object: the dict finds the same decision
    assert access.decide(ctx_for("".join([ALLOWED, ":40000"]))) is first
    assert calls == [1]
    # another Security object, equal or not, another export: not the last key
    assert access.decide(ctx_for(peer, security=Security())) is first  # equal: the dict's
    tls = access.decide(ctx_for(peer, security=Security("tls")))
    assert tls is not first and len(calls) == 2
    assert access.decide(ctx_for(peer), export="/elsewhere").reason != OK


def test_a_reload_is_seen_by_the_next_call(counted) -> None:
    access, f, _ = counted
    peer = f"{ALLOWED}:40000"
    ctx = ctx_for(peer)
    assert access.nfs_status(ctx) == nfs3.NFS3_OK
    assert access.nfs_status(ctx_for(peer)) == nfs3.NFS3_OK
    f.write_text(f"/recover/images {STRANGER}(insecure)\n")
    assert access.reload() is None
    assert access.nfs_status(ctx_for(peer)) == nfs3.NFS3ERR_STALE
    f.write_text(f"/recover/images {ALLOWED}(insecure)\n")
    assert access.reload() is None
    assert access.nfs_status(ctx_for(peer)) == nfs3.NFS3_OK


def test_the_sessions_list_set_makes_every_decision_again(counted) -> None:
    access, _, calls = counted
    peer = f"{ALLOWED}:40000"
    access.decide(ctx_for(peer))
    access.decide(ctx_for(peer))
    assert calls == [1]
    access.set_sessions(access.sessions_table)
    access.decide(ctx_for(peer))
    assert calls == [1, 1]


def test_an_expired_decision_is_made_again(counted, monkeypatch: pytest.MonkeyPatch) -> None:
    access, _, calls = counted
    peer = f"{ALLOWED}:40000"
    now = [1000.0]
    monkeypatch.setattr(access_mod.time, "monotonic", lambda: now[0])
    d = access.decide(ctx_for(peer))
    assert access.decide(ctx_for(peer)) is d and calls == [1]
    now[0] += access_mod.DECISION_TTL - 0.001
    assert access.decide(ctx_for(peer)) is d and calls == [1]
    now[0] += 0.001
    again = access.decide(ctx_for(peer))
    assert again is not d and again.until > d.until and calls == [1, 1]
    assert access.decide(ctx_for(peer)) is again and calls == [1, 1]


def test_the_bound_on_decisions_still_decides_the_last_key_again(counted, monkeypatch) -> None:
    access, _, calls = counted
    monkeypatch.setattr(access_mod, "MAX_DECISIONS", 2)
    peer = f"{ALLOWED}:40000"
    access.decide(ctx_for(peer))
    for port in (1, 2):
        access.decide(ctx_for(f"{ALLOWED}:{port}"))  # the second starts the dict again
    assert len(calls) == 3
    access.decide(ctx_for(peer))  # not in the new dict: made again, as before
    assert len(calls) == 4


ids = st.sampled_from([0, 1, 1000, 65534])
creds = st.one_of(
    st.none(),
    st.builds(authsys_parms, st.integers(0, 9), st.just(b"h"), ids, ids, st.lists(ids, max_size=4)),
)
options = st.builds(
    ExportOptions, squash=st.sampled_from(["root", "all", "none"]), anonuid=ids, anongid=ids
)


def fresh(cred: authsys_parms | None, o: ExportOptions) -> authsys_parms | None:
    """What squashing makes, written again from exports(5), remembering nothing."""
    if cred is None or o.squash == "all":
        return authsys_parms(0, b"", o.anonuid, o.anongid, [])
    if o.squash != "root" or 0 not in (cred.uid, cred.gid, *cred.gids):
        return cred  # kept as is: the very object

    def anon(i: int, to: int) -> int:
        return to if i == 0 else i

    gids = [anon(g, o.anongid) for g in cred.gids]
    uid, gid = anon(cred.uid, o.anonuid), anon(cred.gid, o.anongid)
    return authsys_parms(cred.stamp, cred.machinename, uid, gid, gids)


@given(
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), min_size=1, max_size=12),
    st.lists(creds, min_size=3, max_size=3),
    st.lists(options, min_size=3, max_size=3),
)
def test_squash_remembered_equals_squash_made_afresh(picks, cred_pool, option_pool) -> None:
    """The same credential objects and options, asked in any order: each answer
    equals the one made afresh, and a credential kept as is stays the object."""
    for i, j in picks:
        cred, o = cred_pool[i], option_pool[j]
        ctx = ctx_for(f"{ALLOWED}:1", cred)
        ctx.cred = cred  # None too: AUTH_NONE
        if cred is None:
            ctx.flavor = AUTH_NONE
        squash(ctx, o)
        want = fresh(cred, o)
        assert ctx.cred == want
        if want is cred:
            assert ctx.cred is cred
        assert _squashed(cred, o) == (None if want is cred else want)


def test_squash_of_the_same_root_credential_is_made_once() -> None:
    root = authsys_parms(0, b"h", 0, 0, [0, 5])
    o = ExportOptions()
    a, b = ctx_for("x:1", root), ctx_for("x:1", root)
    squash(a, o)
    squash(b, o)
    assert a.cred is b.cred and a.cred == authsys_parms(0, b"h", 65534, 65534, [65534, 5])
    c = ctx_for("x:1", authsys_parms(0, b"h", 0, 0, [0, 5]))  # equal, another object
    squash(c, o)
    assert c.cred == a.cred and c.cred is not a.cred
