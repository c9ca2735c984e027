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

import pytest

import nfsd.programs.access as access_mod
from exports import Resolver
from nfsd.programs.access import OK, AccessControl
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
