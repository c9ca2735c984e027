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
import random
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


def _bytes(store: Store, offset: int, count: int, base_size: int) -> bytes:
    """What a READ of ``[offset, offset+count)`` returns (the base: no bytes, zeros)."""
    out = bytearray()
    for r in store.runs(1, offset, count, no_base, base_size):
        out += bytes(r.length) if r.fd < 0 else os.pread(r.fd, r.length, r.pos)
    return bytes(out)


def test_a_large_file_changed_by_another_process_is_read_by_windows(
    tmp_path: Path, loads: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once its map is large (``PARTIAL_MIN`` pieces), a file the other process keeps
    changing is never reloaded whole: its read entry is partial, holding its row
    and the pieces over the bytes the reads asked for since the other's last
    change, and gives what the writer's own map gives."""
    monkeypatch.setattr(store_mod, "PARTIAL_MIN", 16)
    rnd = random.Random(5)
    base = 256 * 4096
    with Store(tmp_path / "s") as a, Store(tmp_path / "s") as b:
        for i in range(40):  # pieces apart: 40 of them
            a.write(
                1, rnd.randrange(256) * 4096 + rnd.choice((0, 100)), bytes([i + 1]) * 3000, base
            )
        assert _bytes(b, 0, base, base) == _bytes(a, 0, base, base)  # b loads it whole, once
        loads.clear()
        for i in range(60):
            off = rnd.randrange(base + 8192)
            a.write(1, off, bytes([100 + i % 100]) * rnd.randrange(1, 9000), base)
            lo, n = rnd.randrange(base + 16384), rnd.randrange(1, 20000)
            assert _bytes(b, lo, n, base) == _bytes(a, lo, n, base), (lo, n)
            assert b.size(1, base) == a.size(1, base)
        with a.transaction() as tx:  # a truncate, as SETATTR makes it
            tx.truncate(1, base // 2, base)
        assert _bytes(b, 0, base, base) == _bytes(a, 0, base, base)
        assert loads == [] and b._rstates[1].known is not None
        assert 1 in a._rstates  # the writer follows its own commits in its map


def test_a_window_holds_every_piece_over_its_bytes(tmp_path: Path) -> None:
    """``_load_window`` against the whole map, over windows at and around every
    piece's edges: the same runs."""
    rnd = random.Random(9)
    with Store(tmp_path / "s") as s:
        for i in range(120):
            s.write(
                1, rnd.randrange(1 << 16), bytes([i % 250 + 1]) * rnd.randrange(1, 700), 1 << 16
            )
        with s.read() as conn:
            whole = store_mod._load(conn, 1).state
            assert whole is not None
            edges = sorted({e + d for p in whole.map for e in (p.start, p.end) for d in (-1, 0, 1)})
            for lo in edges[::3]:
                for n in (0, 1, 700, 5000):
                    part = store_mod._load_window(conn, 1, lo, lo + n).state
                    assert part is not None and part.size == whole.size
                    got = part.runs(lo, n, no_base, lambda log: log)
                    assert got == whole.runs(lo, n, no_base, lambda log: log), (lo, n)
