"""The resolver: time to live, stale answers, cached failures, bounds, and `wait` kept."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from exports import Resolver, parse


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Table:
    """A look-up function over a dict, counting calls; optionally held until released."""

    def __init__(self, answers: dict[str, set[str]], *, hold: bool = False) -> None:
        self.answers = answers
        self.calls: list[str] = []
        self.release = threading.Event()
        if not hold:
            self.release.set()

    def __call__(self, key: str) -> set[str]:
        self.calls.append(key)
        self.release.wait(10)
        if key not in self.answers:
            raise OSError("no such name")
        return set(self.answers[key])


def eventually(condition: Callable[[], object], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.002)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def closing() -> Iterator[list[Resolver]]:
    made: list[Resolver] = []
    yield made
    for r in made:
        r.close()


def make(closing: list[Resolver], **kwargs: object) -> Resolver:
    r = Resolver(**kwargs)  # type: ignore[arg-type]
    closing.append(r)
    return r


def test_first_ask_schedules_and_a_later_ask_is_answered(closing: list[Resolver]) -> None:
    forward = Table({"h.example": {"10.0.0.1"}})
    r = make(closing, forward=forward)
    assert r.addresses("h.example") is None  # not known yet, nobody waits
    eventually(lambda: r.addresses("h.example") == {"10.0.0.1"})
    assert forward.calls == ["h.example"]


def test_wait_returns_the_answer_of_a_quick_look_up(closing: list[Resolver]) -> None:
    r = make(
        closing, forward=Table({"h": {"10.0.0.1"}}), reverse=Table({"10.0.0.1": {"H.Example."}})
    )
    assert r.addresses("h", wait=5) == {"10.0.0.1"}
    assert r.names("::ffff:10.0.0.1", wait=5) == {"h.example"}


def test_positive_answers_live_ttl_then_are_stale_while_refreshed(
    closing: list[Resolver], clock: Clock
) -> None:
    forward = Table({"h": {"10.0.0.1"}})
    r = make(closing, ttl=300, neg_ttl=30, forward=forward, clock=clock)
    assert r.addresses("h", wait=5) == {"10.0.0.1"}
    clock.now += 299
    assert r.addresses("h") == {"10.0.0.1"}
    assert forward.calls == ["h"]
    forward.answers["h"] = {"10.0.0.2"}
    forward.release.clear()  # the refresh hangs
    clock.now += 2
    assert r.addresses("h", wait=5) == {"10.0.0.1"}  # stale, at once, even with a wait
    eventually(lambda: len(forward.calls) == 2)
    assert r.addresses("h") == {"10.0.0.1"}  # one refresh at a time: no second call
    assert len(forward.calls) == 2
    forward.release.set()
    eventually(lambda: r.addresses("h") == {"10.0.0.2"})
    assert len(forward.calls) == 2


def test_a_stale_answer_is_given_at_most_stale_seconds_while_its_refresh_hangs(
    closing: list[Resolver], clock: Clock
) -> None:
    """A name server that never answers the refresh must not keep a host admitted
    on an answer of any age: past ``stale``, not known (None), as a new name."""
    forward = Table({"h": {"10.0.0.1"}})
    r = make(closing, ttl=300, neg_ttl=30, stale=30, forward=forward, clock=clock)
    assert r.addresses("h", wait=5) == {"10.0.0.1"}
    forward.release.clear()  # every refresh hangs from now on
    clock.now += 300 + 29
    assert r.addresses("h") == {"10.0.0.1"}  # stale, its refresh begun
    eventually(lambda: len(forward.calls) == 2)
    clock.now += 1
    assert r.addresses("h") is None
    start = time.monotonic()
    assert r.addresses("h", wait=0.2) is None  # waited for the refresh, which did not end
    assert time.monotonic() - start >= 0.2
    assert len(forward.calls) == 2  # still the one refresh
    forward.release.set()
    eventually(lambda: r.addresses("h") == {"10.0.0.1"})  # fresh again once it answers


def test_a_stale_answer_whose_refresh_cannot_be_queued_ends_too(
    closing: list[Resolver], clock: Clock
) -> None:
    """With the look-ups bounded and full (a crowd of strangers), an expired answer
    gets no refresh: it is still not given past ``stale``."""
    forward = Table({"h": {"10.0.0.1"}})
    r = make(closing, ttl=300, stale=30, forward=forward, clock=clock, maxsize=3, threads=1)
    assert r.addresses("h", wait=5) == {"10.0.0.1"}
    forward.release.clear()
    for i in range(3):
        r.addresses(f"stranger{i}.example")
    assert r.pending() == 3
    clock.now += 300 + 10
    assert r.addresses("h") == {"10.0.0.1"}
    assert r.pending() == 3 and not r.looking_up("addresses", "h")  # no refresh queued
    clock.now += 20
    assert r.addresses("h", wait=0.05) is None
    forward.release.set()


def test_failures_are_cached_neg_ttl(closing: list[Resolver], clock: Clock) -> None:
    forward = Table({})
    r = make(closing, ttl=300, neg_ttl=30, forward=forward, clock=clock)
    assert r.addresses("gone.example", wait=5) is None
    assert r.addresses("gone.example", wait=5) is None
    clock.now += 29
    assert r.addresses("gone.example", wait=5) is None
    assert forward.calls == ["gone.example"]
    clock.now += 2
    forward.answers["gone.example"] = {"10.0.0.7"}
    assert r.addresses("gone.example", wait=5) == {"10.0.0.7"}  # expired failure: waited for
    assert forward.calls == ["gone.example", "gone.example"]


def test_a_failed_refresh_replaces_a_stale_answer(closing: list[Resolver], clock: Clock) -> None:
    forward = Table({"h": {"10.0.0.1"}})
    r = make(closing, ttl=10, neg_ttl=30, forward=forward, clock=clock)
    assert r.addresses("h", wait=5) == {"10.0.0.1"}
    del forward.answers["h"]
    clock.now += 11
    assert r.addresses("h") == {"10.0.0.1"}
    eventually(lambda: r.addresses("h") is None)  # fail closed


def test_empty_answers_and_garbage_are_failures_and_answers_normalized(
    closing: list[Resolver],
) -> None:
    r = make(
        closing,
        forward=Table({"empty": set(), "mixed": {"::ffff:10.0.0.1", "fd00::0:1", "garbage"}}),
    )
    assert r.addresses("empty", wait=5) is None
    assert r.addresses("MIXED.", wait=5) == {"10.0.0.1", "fd00::1"}


def test_raising_anything_is_a_failure(closing: list[Resolver]) -> None:
    def broken(name: str) -> set[str]:
        raise RuntimeError("resolver bug")

    r = make(closing, forward=broken)
    assert r.addresses("h", wait=5) is None
    assert r.addresses("h", wait=5) is None  # and the thread lives on


def test_names_of_something_not_an_address_is_none_without_a_look_up(
    closing: list[Resolver],
) -> None:
    reverse = Table({})
    r = make(closing, reverse=reverse)
    assert r.names("not-an-address", wait=1) is None
    assert reverse.calls == []


def test_a_slow_resolver_never_blocks_beyond_wait(closing: list[Resolver]) -> None:
    forward = Table({"h": {"10.0.0.1"}}, hold=True)
    r = make(closing, forward=forward)
    start = time.monotonic()
    assert r.addresses("h") is None
    assert time.monotonic() - start < 0.5  # the look-up itself is held for 10 s
    start = time.monotonic()
    assert r.addresses("h", wait=0.1) is None
    took = time.monotonic() - start
    assert 0.09 <= took < 1.0
    forward.release.set()
    assert r.addresses("h", wait=5) == {"10.0.0.1"}


def test_match_with_a_hanging_resolver_answers_within_wait(closing: list[Resolver]) -> None:
    hung = Table({}, hold=True)
    r = make(closing, forward=hung, reverse=hung)
    table = parse("/e h.example(anonuid=1) *.example(anonuid=2) 10.0.0.0/8(anonuid=3)")
    start = time.monotonic()
    assert table.match("/e", "192.168.0.1", r, wait=0.1) is None
    assert time.monotonic() - start < 1.0  # one budget for the whole match, not per look-up
    start = time.monotonic()
    spec = table.match("/e", "10.0.0.1", r)
    assert spec is not None and spec.text == "10.0.0.0/8"
    assert time.monotonic() - start < 0.5
    hung.release.set()


def test_many_callers_one_look_up(closing: list[Resolver]) -> None:
    forward = Table({"h": {"10.0.0.1"}}, hold=True)
    r = make(closing, forward=forward)
    results: list[set[str] | None] = []
    callers = [
        threading.Thread(target=lambda: results.append(r.addresses("h", wait=5))) for _ in range(20)
    ]
    for t in callers:
        t.start()
    eventually(lambda: r.pending() == 1 and len(forward.calls) == 1)
    forward.release.set()
    for t in callers:
        t.join()
    assert results == [{"10.0.0.1"}] * 20
    assert forward.calls == ["h"]


def test_the_cache_is_bounded_least_recently_used_first(closing: list[Resolver]) -> None:
    forward = Table({f"h{i}": {f"10.0.0.{i}"} for i in range(10)})
    r = make(closing, forward=forward, maxsize=3)
    for name in ("h0", "h1", "h2"):
        assert r.addresses(name, wait=5) is not None
    assert r.addresses("h0") == {"10.0.0.0"}  # h0 used again: h1 is now the oldest
    assert r.addresses("h3", wait=5) is not None
    assert len(r) == 3
    calls = len(forward.calls)
    assert r.addresses("h0") == {"10.0.0.0"}
    assert r.addresses("h2") == {"10.0.0.2"}
    assert len(forward.calls) == calls
    assert r.addresses("h1") is None  # evicted: asked again
    for i in range(10):
        r.addresses(f"h{i}", wait=5)
    assert len(r) == 3


def test_pending_look_ups_are_bounded_and_threads_too(closing: list[Resolver]) -> None:
    forward = Table({}, hold=True)
    r = make(closing, forward=forward, maxsize=5, threads=2)
    before = threading.active_count()
    start = time.monotonic()
    for i in range(1000):
        assert r.addresses(f"stranger{i}.example") is None
    assert time.monotonic() - start < 2.0
    assert r.pending() == 5
    assert threading.active_count() - before <= 2
    eventually(lambda: len(forward.calls) == 2)  # two threads, each stuck in one look-up
    forward.release.set()
    eventually(lambda: r.pending() == 0)
    assert len(forward.calls) == 5


def test_close_wakes_waiters_and_stops_looking_up(closing: list[Resolver]) -> None:
    forward = Table({"h": {"10.0.0.1"}}, hold=True)
    r = make(closing, forward=forward)
    got: list[set[str] | None] = []
    waiter = threading.Thread(target=lambda: got.append(r.addresses("h", wait=10)))
    waiter.start()
    eventually(lambda: forward.calls == ["h"])
    start = time.monotonic()
    r.close()
    waiter.join(5)
    assert got == [None] and time.monotonic() - start < 1.0
    forward.release.set()
    assert r.addresses("other", wait=0.1) is None
    assert forward.calls == ["h"]


def test_the_system_resolver_knows_localhost(closing: list[Resolver]) -> None:
    r = make(closing)
    found = r.addresses("localhost", wait=10)
    assert found is not None and found & {"127.0.0.1", "::1"}


def test_looking_up_names_the_look_ups_still_running(closing: list[Resolver]) -> None:
    """``looking_up``: whether a None answer may still become one (the access check
    keeps a host admitted only while its own look-ups run), keys normalized."""
    forward, reverse = Table({"h": {"10.0.0.1"}}, hold=True), Table({}, hold=True)
    r = make(closing, forward=forward, reverse=reverse)
    assert r.addresses("H.") is None and r.names("::ffff:10.0.0.9") is None
    assert r.looking_up("addresses", "h") and r.looking_up("names", "10.0.0.9")
    assert not r.looking_up("addresses", "other") and not r.looking_up("names", "10.0.0.8")
    assert not r.looking_up("names", "not an address")
    forward.release.set()
    reverse.release.set()
    eventually(lambda: r.pending() == 0)
    assert not r.looking_up("addresses", "h") and not r.looking_up("names", "10.0.0.9")
    assert r.names("10.0.0.9") is None  # failed: kept, no look-up runs
    assert not r.looking_up("names", "10.0.0.9")
