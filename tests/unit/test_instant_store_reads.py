"""instant.store's small reads for the server's loop: ``read_one`` and ``nowait``.

``read_one`` is :meth:`Store.read` for one statement without its BEGIN and
COMMIT (after each group this process commits, the loop's next WRITE reads
its node again): it must answer what ``read`` answers, leave no read
transaction open (which would pin the WAL and hide later commits), join an
open ``read`` block's snapshot, and in ``nowait`` refuse to wait for the read
lock.  ``nowait`` is a small class now: it must nest and restore the flag.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from instant.errors import WouldWait
from instant.store import Store
from merge.namespace import Run
from tests.proto.test_instant_write_deferred import read_lock_held

SQL = "SELECT size, gen FROM objects WHERE id=?"
BASE_FD = 1000  # a base file's runs, as merge.sources gives them


@pytest.fixture
def store(tmp_path):  # type: ignore[no-untyped-def]
    s = Store(tmp_path / "s")
    yield s
    s.close()


def test_read_one_answers_as_read_and_leaves_no_transaction(store: Store) -> None:
    assert store.read_one(SQL, (7,)) is None
    store.write(7, 0, b"x" * 100, 50)
    with store.read() as conn:
        expected = conn.execute(SQL, (7,)).fetchone()
    assert expected is not None
    assert store.read_one(SQL, (7,)) == expected
    assert not store._r.in_transaction  # nothing pinned: the next commit is seen
    store.write(7, 100, b"y", 50)
    assert store.read_one(SQL, (7,)) == (101, expected[1] + 1)


def test_read_one_inside_a_read_block_is_that_snapshot(store: Store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    store.write(7, 0, b"x", 0)
    other = Store(tmp_path / "s")  # another process's store on the same session
    try:
        with store.read() as conn:
            before = conn.execute(SQL, (7,)).fetchone()
            other.write(7, 1, b"z", 0)
            assert store.read_one(SQL, (7,)) == before  # the block's snapshot
            assert store._r.in_transaction  # the block's, not ended by read_one
        assert store.read_one(SQL, (7,)) == (2, before[1] + 1)
    finally:
        other.close()


def test_read_one_in_nowait_does_not_wait_for_the_read_lock(store: Store) -> None:
    with read_lock_held(store), store.nowait(), pytest.raises(WouldWait):
        store.read_one(SQL, (7,))
    assert store.read_one(SQL, (7,)) is None  # outside nowait: it takes the lock


@settings(max_examples=30, deadline=None)
@given(depth=st.integers(1, 4), fail_at=st.integers(0, 5))
def test_nowait_nests_and_restores(tmp_path_factory, depth: int, fail_at: int) -> None:  # type: ignore[no-untyped-def]
    s = Store(tmp_path_factory.mktemp("n"))
    try:
        flags: list[bool] = []

        def enter(k: int) -> None:
            if k == depth:
                flags.append(getattr(s._nowait, "on", False))
                if fail_at == k:
                    raise KeyError(k)
                return
            with s.nowait():
                flags.append(s._nowait.on)
                enter(k + 1)
            flags.append(getattr(s._nowait, "on", False))

        try:
            enter(0)
        except KeyError:
            assert fail_at == depth
        else:
            # inside: on; after each inner block: still on (the outer's); after all: off
            assert flags == [True] * (2 * depth) + [False]
        assert flags[0] is True
        assert getattr(s._nowait, "on", False) is False  # back as before, raised or not
    finally:
        s.close()


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(0, 300), min_size=1, max_size=3), short=st.integers(0, 900))
def test_pwrite_all_finishes_a_short_pwritev(
    tmp_path_factory, sizes: list[int], short: int
) -> None:  # type: ignore[no-untyped-def]
    """``_pwrite_all`` (the loop's WRITE puts its record with it): a ``pwritev`` that
    wrote less is finished by ``pwrite``s, every byte in place."""
    import os

    import instant.store as store_mod

    bufs: list[bytes | memoryview] = [bytes([i + 1]) * n for i, n in enumerate(sizes)]
    bufs[-1] = memoryview(bufs[-1])
    path = tmp_path_factory.mktemp("w") / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    real = os.pwritev

    def shorter(f: int, b: list, pos: int) -> int:  # type: ignore[type-arg]
        whole = b"".join(bytes(x) for x in b)
        return os.pwrite(f, whole[: min(short, len(whole))], pos)

    try:
        store_mod.os.pwritev = shorter  # type: ignore[assignment]
        store_mod._pwrite_all(fd, bufs, 10)
    finally:
        store_mod.os.pwritev = real  # type: ignore[assignment]
        os.close(fd)
    whole = b"".join(bytes(b) for b in bufs)
    assert path.read_bytes() == (bytes(10) + whole if whole else b"")


def test_runs_of_a_file_never_changed_need_no_read_lock(store: Store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A READ of a file no write changed, at a version its entry was checked at, is
    the base's runs, answered on the loop while another thread holds the read lock
    (as ``state`` is); once another process changed it, the version moved and the
    read must look again: it does not answer from what it knew."""

    def base(offset: int, count: int) -> list[Run]:
        end = min(offset + count, 100)
        return [Run(BASE_FD, offset, end - offset)] if offset < end else []

    v = store.version()
    assert store.runs(7, 10, 50, base, 100, version=v) == [Run(BASE_FD, 10, 50)]  # checked
    with read_lock_held(store), store.nowait():
        assert store.runs(7, 90, 50, base, 100, version=v) == [Run(BASE_FD, 90, 10)]
        assert store.runs(7, 200, 5, base, 100, version=v) == []  # past its end
    other = Store(tmp_path / "s")  # another process's store on the same session
    try:
        other.write(7, 20, b"z" * 10, 100)
    finally:
        other.close()
    v2 = store.version()
    assert v2 != v
    with read_lock_held(store), store.nowait(), pytest.raises(WouldWait):
        store.runs(7, 10, 50, base, 100, version=v2)
    runs = store.runs(7, 10, 50, base, 100, version=v2)
    assert runs[0] == Run(BASE_FD, 10, 10) and runs[1].fd != BASE_FD and runs[1].length == 10
