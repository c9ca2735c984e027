"""The store's two stages: a group's data sync (the syncer) overlaps the previous
group's COMMIT (the committer); a map is never committed before its data's sync."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from instant.store import SMALL_WRITE, Store
from merge.namespace import StorageIOError
from tests.unit import test_instant_store_async
from tests.unit.test_instant_store import BASE, BLOCK, read

base_fd = test_instant_store_async.base_fd  # the fixture


def _until(cond: Callable[[], bool], what: str) -> None:
    for _ in range(10_000):
        if cond():
            return
        threading.Event().wait(0.001)
    raise AssertionError(f"waited 10 s for {what}")


class _Gate:
    """A store hook: once shut, the thread reaching ``point`` waits there until opened."""

    def __init__(self, point: str) -> None:
        self.point = point
        self.opened = threading.Event()
        self.opened.set()
        self.held = threading.Event()

    def shut(self) -> None:
        self.held.clear()
        self.opened.clear()

    def __call__(self, point: str) -> None:
        if point == self.point and not self.opened.is_set():
            self.held.set()
            self.opened.wait(10)


def test_the_next_group_syncs_while_a_group_commits(tmp_path: Path, base_fd: int) -> None:
    """The committer held after group A's COMMIT (before A is told): write B is
    synced meanwhile, by the syncer; B is told only after its own COMMIT."""
    hold_commit = threading.Event()
    seen: list[tuple[str, str]] = []

    def hook(point: str) -> None:
        seen.append((threading.current_thread().name, point))
        if point == "after-commit" and not hold_commit.is_set():
            hold_commit.wait(10)

    told: dict[str, object] = {}
    with Store(tmp_path / "s", hook=hook) as s:
        hold_commit.set()
        s.write(1, 0, b"o" * BLOCK, len(BASE))  # the log open, both threads started
        hold_commit.clear()
        seen.clear()
        s.write_async(1, BLOCK, b"a" * BLOCK, len(BASE), done=lambda o: told.update(a=o))
        _until(lambda: ("store-committer", "after-commit") in seen, "A's COMMIT")
        syncs = s.stats.data_syncs
        s.write_async(1, 2 * BLOCK, b"b" * BLOCK, len(BASE), done=lambda o: told.update(b=o))
        # B's data is synced while the committer is still held in A's round.
        _until(lambda: s.stats.data_syncs == syncs + 1, "B's sync while A commits")
        assert ("store-syncer", "after-sync") in seen
        assert told == {}  # A's done comes after the hook, B's after B's COMMIT
        assert read(s, 1, base_fd, 2 * BLOCK, BLOCK) == BASE[2 * BLOCK : 3 * BLOCK]
        hold_commit.set()
        _until(lambda: len(told) == 2, "both told")
        assert told == {"a": len(BASE), "b": len(BASE)}
        assert read(s, 1, base_fd, BLOCK, 2 * BLOCK) == b"a" * BLOCK + b"b" * BLOCK


def test_no_map_is_committed_before_its_data_sync(tmp_path: Path, base_fd: int) -> None:
    """Held between its ``fdatasync`` and the hand-over to the committer, a write is
    not mapped: the committer, idle, commits nothing of it; a later write queued
    meanwhile waits behind it and is told after it (groups commit in order)."""
    hold_sync = threading.Event()
    held = threading.Event()
    order: list[str] = []

    def hook(point: str) -> None:
        if point == "after-sync" and not hold_sync.is_set():
            held.set()
            hold_sync.wait(10)

    with Store(tmp_path / "s", hook=hook) as s:
        hold_sync.set()
        s.write(1, 0, b"o" * BLOCK, len(BASE))
        hold_sync.clear()
        commits = s.stats.commits
        s.write_async(1, 0, b"1" * BLOCK, len(BASE), done=lambda o: order.append("first"))
        assert held.wait(10)
        s.write_async(1, 0, b"2" * BLOCK, len(BASE), done=lambda o: order.append("second"))
        threading.Event().wait(0.05)
        assert s.stats.commits == commits and order == []
        assert read(s, 1, base_fd, 0, BLOCK) == b"o" * BLOCK
        hold_sync.set()
        _until(lambda: len(order) == 2, "both told")
        assert order == ["first", "second"]
        assert read(s, 1, base_fd, 0, BLOCK) == b"2" * BLOCK


def test_close_drains_both_stages(tmp_path: Path, base_fd: int) -> None:
    """Closed with one write held in its sync and one queued behind it: close
    returns only after both are committed and told."""
    gate = _Gate("after-sync")
    told: list[object] = []
    s = Store(tmp_path / "s", hook=gate)
    s.write(1, 0, b"o" * BLOCK, len(BASE))
    gate.shut()
    s.write_async(1, BLOCK, b"x" * BLOCK, len(BASE), done=told.append)
    assert gate.held.wait(10)
    s.write_async(1, 2 * BLOCK, b"y" * BLOCK, len(BASE), done=told.append)
    closer = threading.Thread(target=s.close)
    closer.start()
    threading.Event().wait(0.05)
    assert closer.is_alive() and told == []
    gate.opened.set()
    closer.join(10)
    assert not closer.is_alive()
    assert told == [len(BASE), len(BASE)]
    with Store(tmp_path / "s") as again:
        assert read(again, 1, base_fd, 0, 3 * BLOCK) == b"o" * BLOCK + b"x" * BLOCK + b"y" * BLOCK


def test_a_write_logged_before_a_failed_sync_is_never_acknowledged(
    tmp_path: Path, base_fd: int
) -> None:
    """Write B is pwritten while group A's sync is failing (its page's writeback may
    be what failed, and the next fdatasync would not say so): B goes in the next
    group, whose sync succeeds, and is still told an error and never mapped; a
    write logged after the failure is acknowledged."""
    hold, held, fail = threading.Event(), threading.Event(), threading.Event()

    def hook(point: str) -> None:
        if point == "after-sync" and fail.is_set():
            fail.clear()
            held.set()
            hold.wait(10)
            raise OSError(5, "I/O error")

    told: dict[str, object] = {}
    with Store(tmp_path / "s", hook=hook) as s:
        s.write(1, 0, b"o" * BLOCK, len(BASE))
        fail.set()
        s.write_async(1, BLOCK, b"a" * BLOCK, len(BASE), done=lambda o: told.update(a=o))
        assert held.wait(10)
        s.write_async(1, 2 * BLOCK, b"b" * BLOCK, len(BASE), done=lambda o: told.update(b=o))
        hold.set()
        _until(lambda: len(told) == 2, "A and B told")
        assert isinstance(told["a"], StorageIOError)
        assert isinstance(told["b"], StorageIOError), told
        assert s.write(1, 3 * BLOCK, b"c" * BLOCK, len(BASE)) == len(BASE)
        assert read(s, 1, base_fd, 0, 4 * BLOCK) == (
            b"o" * BLOCK + BASE[BLOCK : 3 * BLOCK] + b"c" * BLOCK
        )


def test_a_large_write_is_synced_only_while_no_group_commits(tmp_path: Path, base_fd: int) -> None:
    """The committer held in group A's round: a small write is synced meanwhile, a
    large one (its writeback would hold the WAL's fsync up) waits for the round's end."""
    big = SMALL_WRITE
    gate = _Gate("after-commit")
    told: list[object] = []
    with Store(tmp_path / "s", hook=gate) as s:
        s.write(1, 0, b"o" * BLOCK, len(BASE))
        gate.shut()
        s.write_async(1, BLOCK, b"a" * BLOCK, len(BASE), done=told.append)
        assert gate.held.wait(10)
        syncs = s.stats.data_syncs
        s.write_async(1, big, b"L" * big, len(BASE), done=told.append)
        threading.Event().wait(0.1)
        assert s.stats.data_syncs == syncs  # held back while A's group commits
        gate.opened.set()
        _until(lambda: len(told) == 2, "both told")
        assert s.stats.data_syncs == syncs + 1
        assert read(s, 1, base_fd, big, big) == b"L" * big


def test_a_group_is_mapped_while_its_data_syncs(tmp_path: Path, base_fd: int) -> None:
    """The committer maps the batch the syncer is syncing (its edits in the open
    transaction), and commits and tells it only once that sync has returned."""
    gate = _Gate("after-sync")
    mapped: list[int] = []
    told: list[object] = []
    with Store(tmp_path / "s", hook=gate) as s:
        s.write(1, 0, b"o" * BLOCK, len(BASE))
        apply_ = s._apply

        def apply(tx: object, batch: list) -> object:  # type: ignore[type-arg]
            mapped.append(len(batch))
            return apply_(tx, batch)  # type: ignore[arg-type]

        s._apply = apply  # type: ignore[method-assign]
        commits = s.stats.commits
        gate.shut()
        s.write_async(1, BLOCK, b"x" * BLOCK, len(BASE), done=told.append)
        assert gate.held.wait(10)  # its fdatasync done, the syncer not through yet
        _until(lambda: mapped == [1], "the map edits during the sync")
        threading.Event().wait(0.05)
        assert s.stats.commits == commits and told == []
        assert read(s, 1, base_fd, BLOCK, BLOCK) == BASE[BLOCK : 2 * BLOCK]
        gate.opened.set()
        _until(lambda: told == [len(BASE)], "told after the sync")
        assert read(s, 1, base_fd, BLOCK, BLOCK) == b"x" * BLOCK


def test_a_sync_failing_after_its_map_edits_maps_the_group_again_without_it(
    tmp_path: Path, base_fd: int
) -> None:
    """A write whose sync fails once the committer mapped it: the transaction is
    rolled back and the group mapped again without it: it is told its error and
    never mapped; later writes commit."""
    gate = _Gate("after-sync")
    fail = threading.Event()
    told: dict[str, object] = {}
    with Store(tmp_path / "s", hook=gate) as s:
        s.write(1, 0, b"o" * BLOCK, len(BASE))
        real = s._sync

        def sync(batch: list) -> None:  # type: ignore[type-arg]
            real(batch)  # the gate holds it here (after-sync) while the committer maps
            if fail.is_set():
                for p in batch:
                    p.error = StorageIOError("the sync failed")

        s._sync = sync  # type: ignore[method-assign]
        redos = 0
        apply_ = s._apply

        def apply(tx: object, batch: list) -> object:  # type: ignore[type-arg]
            # Counted once the group is mapped: counted before, the gate could open
            # (and the sync fail) before the map edits saw the write, which then
            # was rightly never mapped, and never redone (1 in ~20 runs).
            nonlocal redos
            out = apply_(tx, batch)  # type: ignore[arg-type]
            redos += 1
            return out

        s._apply = apply  # type: ignore[method-assign]
        gate.shut()
        fail.set()
        s.write_async(1, BLOCK, b"x" * BLOCK, len(BASE), done=lambda o: told.update(x=o))
        assert gate.held.wait(10)
        _until(lambda: redos == 1, "mapped during its sync")
        gate.opened.set()
        _until(lambda: "x" in told, "told")
        assert isinstance(told["x"], StorageIOError) and redos == 2
        fail.clear()
        assert read(s, 1, base_fd, BLOCK, BLOCK) == BASE[BLOCK : 2 * BLOCK]
        s.write(1, 2 * BLOCK, b"y" * BLOCK, len(BASE))
        assert (
            read(s, 1, base_fd, 0, 3 * BLOCK)
            == b"o" * BLOCK + BASE[BLOCK : 2 * BLOCK] + b"y" * BLOCK
        )
    with Store(tmp_path / "s") as again:
        assert (
            read(again, 1, base_fd, 0, 3 * BLOCK)
            == b"o" * BLOCK + BASE[BLOCK : 2 * BLOCK] + b"y" * BLOCK
        )
