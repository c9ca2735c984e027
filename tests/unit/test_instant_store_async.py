"""``Store.write_async``: writes answered by the committer thread, never before they
are durable, in groups of every write queued, errors to every write of a failed group."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from instant.errors import NoSpace
from instant.store import HEAD, Store
from merge.namespace import StorageIOError
from tests.unit.test_instant_store import BASE, BLOCK, read


@pytest.fixture
def base_fd(tmp_path: Path) -> Iterator[int]:
    p = tmp_path / "base"
    p.write_bytes(BASE)
    fd = os.open(p, os.O_RDONLY)
    yield fd
    os.close(fd)


class Outcomes:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.got: dict[int, object] = {}
        self.threads: set[str] = set()
        self.all = threading.Event()
        self.expect = 0

    def done(self, i: int):  # type: ignore[no-untyped-def]
        def told(outcome: int | Exception) -> None:
            with self.lock:
                assert i not in self.got, "told twice"
                self.got[i] = outcome
                self.threads.add(threading.current_thread().name)
                if len(self.got) == self.expect:
                    self.all.set()

        return told


def test_writes_queued_while_a_group_commits_are_told_after_their_own_commit(
    tmp_path: Path, base_fd: int
) -> None:
    """16 writes queued behind a held group: nothing told before the COMMIT, all of
    them in one group (one fdatasync), told on the committer thread, readable.

    The group is held in its sync (the syncer's ``after-sync``); the committer may
    commit it alone or with the 16 (pipelined: whichever is synced when it looks)."""
    hold = threading.Event()
    points: list[tuple[str, str, int]] = []
    out = Outcomes()

    def hook(point: str) -> None:
        if point in ("after-sync", "after-commit"):
            points.append((threading.current_thread().name, point, len(out.got)))
            if point == "after-sync":
                hold.wait(10)

    with Store(tmp_path / "s", hook=hook) as s:
        hold.set()
        s.write(2, 0, b"o" * BLOCK, len(BASE))  # the log open, the threads started
        hold.clear()
        points.clear()
        out.expect = 17
        s.write_async(2, BLOCK, b"h" * BLOCK, len(BASE), done=out.done(99))
        # The syncer took it and waits in the hook, its sync counted (an
        # empty queue alone is not enough: the sync may still run).
        while ("store-syncer", "after-sync", 0) not in points:
            threading.Event().wait(0.001)
        syncs, groups = s.stats.data_syncs, s.stats.groups
        for i in range(16):
            s.write_async(1, i * BLOCK, bytes([i + 1]) * BLOCK, len(BASE), done=out.done(i))
        threading.Event().wait(0.05)
        assert out.got == {}  # none told before its group's COMMIT
        points.clear()
        hold.set()
        assert out.all.wait(10)
        assert out.threads == {"store-committer"}
        assert all(out.got[i] == len(BASE) for i in range(16)), out.got
        # The held group's sync was counted before the hook: the 16 took one more.
        assert s.stats.data_syncs - syncs == 1 and s.stats.groups - groups in (1, 2)
        # The 16's sync on the syncer, before any of them was told; the last
        # COMMIT on the committer, none of the 16 told before it.
        synced = [(p, n) for t, p, n in points if t == "store-syncer"]
        committed = [(p, n) for t, p, n in points if t == "store-committer"]
        assert len(synced) == 1 and synced[0][0] == "after-sync" and synced[0][1] <= 1, points
        assert committed[-1][0] == "after-commit" and committed[-1][1] <= 1, points
        assert len(committed) == s.stats.groups - groups
        assert read(s, 1, base_fd, 0, 16 * BLOCK) == b"".join(
            bytes([i + 1]) * BLOCK for i in range(16)
        )


def test_over_the_quota_a_write_is_refused_at_once_and_never_told(tmp_path: Path) -> None:
    out = Outcomes()
    with Store(tmp_path / "s", quota=2 * (BLOCK + HEAD)) as s:  # records: headers and data
        s.write(1, 0, b"a" * BLOCK, len(BASE))
        s.write(1, BLOCK, b"b" * BLOCK, len(BASE))
        with pytest.raises(NoSpace):
            s.write_async(1, 2 * BLOCK, b"c" * BLOCK, len(BASE), done=out.done(0))
        threading.Event().wait(0.05)
        assert out.got == {}


def test_a_failed_group_tells_each_of_its_writes_the_error(tmp_path: Path) -> None:
    fail = threading.Event()
    out = Outcomes()

    def hook(point: str) -> None:
        if point == "after-sync" and fail.is_set():
            fail.clear()
            raise OSError(5, "I/O error")

    with Store(tmp_path / "s", hook=hook) as s:
        s.write(1, 0, b"o" * BLOCK, len(BASE))
        out.expect = 4
        wakes: list[Callable[[], None]] = []

        def later(wake: Callable[[], None]) -> bool:
            wakes.append(wake)
            return True

        fail.set()
        for i in range(4):  # the syncer woken once, after the last: the four in one group
            s.write_async(1, i * BLOCK, b"x" * BLOCK, len(BASE), done=out.done(i), wake_later=later)
        wakes[-1]()
        assert out.all.wait(10)
        assert all(isinstance(o, StorageIOError) for o in out.got.values()), out.got
        assert s.write(1, 0, b"y" * BLOCK, len(BASE)) == len(BASE)  # the committer goes on


def test_close_commits_what_is_queued_and_refuses_what_comes_after(
    tmp_path: Path, base_fd: int
) -> None:
    hold = threading.Event()
    out = Outcomes()

    def hook(point: str) -> None:
        if point == "after-sync":
            hold.wait(10)

    s = Store(tmp_path / "s", hook=hook)
    hold.set()
    s.write(1, 0, b"o" * BLOCK, len(BASE))
    hold.clear()
    out.expect = 3
    for i in range(3):
        s.write_async(1, i * BLOCK, b"q" * BLOCK, len(BASE), done=out.done(i))
    closer = threading.Thread(target=s.close)
    closer.start()
    threading.Event().wait(0.05)
    with pytest.raises(StorageIOError):
        s.write_async(1, 0, b"late" * 1024, len(BASE), done=out.done(9))
    hold.set()
    closer.join(10)
    assert not closer.is_alive()
    assert out.all.wait(1) and sorted(out.got) == [0, 1, 2]
    assert all(o == len(BASE) for o in out.got.values())
    with Store(tmp_path / "s") as again:
        assert read(again, 1, base_fd, 0, 3 * BLOCK) == b"q" * 3 * BLOCK
