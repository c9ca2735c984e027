"""instant.store's read cache while this process's commit is being published.

Between a group's COMMIT and ``Store._publish`` the read connection already
sees the new ``gen``.  A read then must not reload the whole map (which
``_publish`` used to throw away, so that under 16 writes in flight every
write cost a reload of a map growing with the file's pieces), yet must
reload when the difference is another process's commit: a write acknowledged
elsewhere is read back.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import instant.store as store_mod
from instant.store import Store
from merge.namespace import Run

SIZE = 1 << 20


def no_base(offset: int, count: int) -> list[Run]:
    return []


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Objects whose map ``_load`` read from the database, in order."""
    seen: list[int] = []
    real = store_mod._load

    def counting(conn, obj):  # type: ignore[no-untyped-def]
        seen.append(obj)
        return real(conn, obj)

    monkeypatch.setattr(store_mod, "_load", counting)
    return seen


def in_publish_window(store: Store, probe) -> list:  # type: ignore[no-untyped-def]
    """Run ``probe()`` once, between the next commit and its publication; its results."""
    real = store._publish
    out: list = []

    def publish(changes):  # type: ignore[no-untyped-def]
        if not out:
            out.append(probe())
        real(changes)

    store._publish = publish  # type: ignore[method-assign]
    return out


def test_own_commit_in_flight_is_answered_from_the_cache(tmp_path: Path, loads: list[int]) -> None:
    with Store(tmp_path / "s") as s:
        s.write(1, 0, b"a" * 4096, SIZE)
        assert s.state(1) is not None
        loads.clear()
        seen = in_publish_window(s, lambda: s.size(1, SIZE))
        s.write(1, SIZE, b"b" * 4096, SIZE)  # extends the file: 1 MiB + 4 KiB
        assert seen == [SIZE]  # the write is not acknowledged yet: the old size is right
        assert s.size(1, SIZE) == SIZE + 4096
        assert loads == []  # neither the read in the window nor the one after reloaded


def test_another_process_commit_in_between_is_reloaded(tmp_path: Path, loads: list[int]) -> None:
    with Store(tmp_path / "s") as a, Store(tmp_path / "s") as b:
        a.write(1, 0, b"a" * 4096, SIZE)
        assert a.size(1, SIZE) == SIZE
        b.write(1, SIZE, b"b" * 4096, SIZE)  # acknowledged by the other process
        loads.clear()

        def probe() -> tuple[int, int]:
            before = len(loads)
            return a.size(1, SIZE), len(loads) - before

        seen = in_publish_window(a, probe)
        a.write(1, 2 * SIZE, b"c" * 4096, SIZE)
        # b's write is there although a's publish is pending (a's own may be too).
        ((size, reloaded),) = seen
        assert size in (SIZE + 4096, 2 * SIZE + 4096) and reloaded == 1
        assert a.size(1, SIZE) == 2 * SIZE + 4096
        runs = a.runs(1, SIZE, 4096, no_base, SIZE)
        assert [r.length for r in runs] == [4096] and runs[0].fd >= 0


def test_small_writes_land_in_a_zeroed_stretch_invisible_past_the_end(tmp_path: Path) -> None:
    """The log is zeroed ahead of small writes; those zeros are never read, even after reopening."""
    with Store(tmp_path / "s") as s:
        s.write(1, 8192, b"x" * 4096, SIZE)
        s.write(2, 0, b"y" * (128 * 1024), SIZE)  # a large write: no zeros ahead of it
        (log,) = (tmp_path / "s").glob("log-*.dat")
        head = store_mod.HEAD  # each write's record: a header, then the data
        assert s.usage().logged == 8192 + 128 * 1024  # the large one's data on a page
        assert log.stat().st_size == 4096 + head + store_mod.ZERO_AHEAD
        s.write(1, 0, b"z" * 4096, SIZE)  # inside the stretch: the file does not grow
        assert log.stat().st_size == 4096 + head + store_mod.ZERO_AHEAD
    with Store(tmp_path / "s") as s:
        assert s.size(1, SIZE) == SIZE and s.usage().logged == 8192 + 128 * 1024 + 4096 + head
        runs = s.runs(1, 0, 3 * 4096, no_base, SIZE)
        got = b"".join(
            os.pread(r.fd, r.length, r.pos) if r.fd >= 0 else bytes(r.length) for r in runs
        )
        assert got == b"z" * 4096 + bytes(4096) + b"x" * 4096
