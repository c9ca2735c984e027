"""Name look-ups never stall the loop, never tie a worker per UDP datagram, and a
flood of strangers never makes an admitted client refused (found by review).

The exports list a wildcard (``*.backup.example``); the resolver's reverse
look-up is ours: it answers the allowed address, and blocks on an Event for any
other (a name server that never answers).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import nfsd.programs.access as access_mod
from exports import Resolver
from nfsd.programs.access import NOT_LISTED, OK, AccessControl
from nfsd.rpc import CallContext, DropCall, WouldBlock
from xdr import mount3
from xdr.rpc import AUTH_SYS, authsys_parms

GOOD = "10.0.0.2"


def ctx(peer: str, *, inline: bool = False, transport: str = "tcp") -> CallContext:
    cred = authsys_parms(0, b"h", 0, 0, [])
    return CallContext(
        1, mount3.MOUNT_PROGRAM, 3, 1, AUTH_SYS, cred, f"{peer}:700", transport, inline=inline
    )


@pytest.fixture
def slow_dns(tmp_path: Path):  # type: ignore[no-untyped-def]
    never = threading.Event()

    def reverse(addr: str) -> set[str]:
        if addr == GOOD:
            return {"good.backup.example"}
        never.wait(30)
        return set()

    resolver = Resolver(
        reverse=reverse, forward=lambda name: {GOOD} if name.startswith("good.") else set()
    )
    f = tmp_path / "exports"
    f.write_text("/recover/images *.backup.example(insecure)\n")
    access = AccessControl(f, "/recover/images", tmp_path, resolver=resolver)
    yield access
    never.set()
    resolver.close()


def test_a_mnt_on_the_loop_is_handed_on_not_waited_for(slow_dns: AccessControl) -> None:
    started = time.monotonic()
    with pytest.raises(WouldBlock):
        slow_dns.check_mount(ctx("10.9.9.9", inline=True))
    assert time.monotonic() - started < 0.5  # it waited 2 s, stalling every connection


def test_a_mnt_over_udp_gets_no_reply_while_its_name_is_looked_up(
    slow_dns: AccessControl,
) -> None:
    started = time.monotonic()
    with pytest.raises(DropCall):
        slow_dns.check_mount(ctx("10.9.9.8", transport="udp"))
    assert time.monotonic() - started < 0.5


def test_a_mnt_on_a_worker_still_waits_for_the_name(slow_dns: AccessControl) -> None:
    status, _ = slow_dns.check_mount(ctx(GOOD))
    assert status == mount3.MNT3_OK


def test_strangers_cannot_get_an_admitted_client_refused(
    slow_dns: AccessControl, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decisions' bound and the resolver's cache emptied by a flood: the
    admitted client's next call finds no answer, a look-up runs, it stays in."""
    monkeypatch.setattr(access_mod, "MAX_DECISIONS", 8)
    good = ctx(GOOD)
    assert slow_dns.check_mount(good)[0] == mount3.MNT3_OK
    nfs = CallContext(1, 100003, 3, 1, AUTH_SYS, good.cred, good.peer, "tcp")
    assert slow_dns.decide(nfs).reason == OK
    for i in range(20):  # strangers: their look-ups never answer
        slow_dns.decide(ctx(f"10.8.0.{i}"))
    slow_dns.resolver._cache.clear()  # evicted by the flood (its LRU bound)
    for _ in range(50):
        assert slow_dns.decide(nfs).reason == OK


def test_at_most_a_few_mnts_hold_a_worker_waiting_for_names(slow_dns: AccessControl) -> None:
    """Strangers whose names never resolve: MOUNT_WAITERS of them wait, the next
    is answered at once (refused), so they cannot hold every worker."""
    waiting = [
        threading.Thread(target=slow_dns.check_mount, args=(ctx(f"10.7.0.{i}"),), daemon=True)
        for i in range(access_mod.MOUNT_WAITERS)
    ]
    for t in waiting:
        t.start()
    time.sleep(0.2)  # they are waiting now
    started = time.monotonic()
    status, _ = slow_dns.check_mount(ctx("10.7.1.1"))
    assert status == mount3.MNT3ERR_ACCES
    assert time.monotonic() - started < 0.5
    assert slow_dns.check_mount(ctx(GOOD))[0] in (mount3.MNT3_OK, mount3.MNT3ERR_ACCES)
    for t in waiting:
        t.join(5)
    assert slow_dns.check_mount(ctx(GOOD))[0] == mount3.MNT3_OK  # waited for once free


class _Dns:
    """A name server under the test's control: ``trusted.example`` is 10.0.0.5 until
    ``forget``; its forward look-up blocks once ``hang`` is set; every reverse
    look-up from 10.66.* blocks (a stranger's zone that never answers)."""

    def __init__(self) -> None:
        self.forward = {"trusted.example": {"10.0.0.5"}}
        self.hang = False
        self.release = threading.Event()

    def addresses(self, name: str) -> set[str]:
        if self.hang:
            self.release.wait(30)
        return self.forward.get(name, set())

    def names(self, addr: str) -> set[str]:
        if addr.startswith("10.66."):
            self.release.wait(30)
        raise OSError("no PTR")


@pytest.fixture
def trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """(access, dns, clock): a host-name client and a wildcard one, the resolver's
    answers kept 10 s (failures 1000), and one clock for the resolver and access."""
    now = [1000.0]
    monkeypatch.setattr(
        access_mod, "time", SimpleNamespace(monotonic=lambda: now[0], time=time.time)
    )
    dns = _Dns()
    resolver = Resolver(ttl=10, neg_ttl=1000, forward=dns.addresses, reverse=dns.names,
                        clock=lambda: now[0])  # fmt: skip
    f = tmp_path / "exports"
    f.write_text("/recover/images trusted.example(insecure) *.lab.example(insecure)\n")
    access = AccessControl(f, "/recover/images", tmp_path, resolver=resolver)
    yield access, dns, now
    dns.release.set()
    resolver.close()


def _nfs(peer: str) -> CallContext:
    return CallContext(1, 100003, 3, 1, AUTH_SYS, authsys_parms(0, b"h", 0, 0, []), peer, "tcp")


def _idle(resolver: Resolver, name: str) -> None:
    deadline = time.monotonic() + 5
    while resolver.looking_up("addresses", name) and time.monotonic() < deadline:
        time.sleep(0.005)


def _admit(access: AccessControl, peer: str) -> None:
    access.decide(_nfs(peer))  # starts the look-up: no verdict yet
    _idle(access.resolver, "trusted.example")
    assert access.decide(_nfs(peer)).reason == OK


def test_another_clients_look_up_does_not_keep_a_host_admitted(trusted) -> None:
    """Found by review: a host admitted by its name stayed admitted after the name
    stopped resolving to it while any look-up at all ran (a stranger's slow reverse
    zone, which a stranger controls); only the decision's own look-ups count."""
    access, dns, now = trusted
    _admit(access, "10.0.0.5:900")
    dns.forward["trusted.example"] = set()  # the host is taken out of DNS
    access.decide(_nfs("10.66.0.1:900"))  # a stranger's reverse look-up never answers
    now[0] += access_mod.DECISION_TTL + 1  # the decision and the answer expired:
    assert access.decide(_nfs("10.0.0.5:900")).reason == OK  # the stale one, refreshed
    _idle(access.resolver, "trusted.example")  # the refresh: no address
    now[0] += access_mod.DECISION_TTL + 1
    assert access.resolver.pending() == 1  # the stranger's
    assert access.decide(_nfs("10.0.0.5:900")).reason == NOT_LISTED


def test_an_admitted_host_waits_for_its_look_up_one_decision_ttl_at_most(trusted) -> None:
    """Its own look-up running (its answer evicted, the name server silent), an
    admitted host stays admitted, as before, but for one DECISION_TTL past the
    decision's expiry: a look-up kept pending does not keep it in for ever."""
    access, dns, now = trusted
    _admit(access, "10.0.0.5:900")
    dns.hang = True
    access.resolver._cache.clear()  # evicted (a flood of strangers: the LRU bound)
    now[0] += access_mod.DECISION_TTL + 1
    assert access.decide(_nfs("10.0.0.5:900")).reason == OK  # its look-up runs
    assert access.resolver.looking_up("addresses", "trusted.example")
    now[0] += access_mod.DECISION_TTL - 2
    assert access.decide(_nfs("10.0.0.5:900")).reason == OK
    now[0] += 2
    d = access.decide(_nfs("10.0.0.5:900"))
    assert d.reason == NOT_LISTED
    assert d.waiting  # no verdict yet: a MNT on the loop would still go to a worker
