"""instant.store: no cached entry holds more than ``HELD_MAX`` pieces (the notes,
"Bounded memory").

A VM's scattered small writes leave a piece each; a process kept every piece
of every file it wrote or read, for good (~175 bytes each).  With the bound
made small here, checked:

* one process writing scattered pieces: its writer's entry never holds more
  than the bound plus what one group adds, and every byte reads as the model;
* a second process reading the file window by window, and the writer's own
  read entry following its commits: each stays within the bound plus one
  window's (or one group's) pieces, and reads as the model;
* after every step each current entry holds exactly the database's pieces over
  its known stretches (``check_entries``): a remade entry is never missing one;
* the sweeps that make a partial entry whole stop at the bound.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from instant import store as store_mod
from instant.store import Store
from tests.unit import test_instant_store_async
from tests.unit.test_instant_store import BASE, apply, read
from tests.unit.test_instant_store_shared_writes import _group, check_entries

base_fd = test_instant_store_async.base_fd  # the fixture

HELD = 24
GROUP = 3


@pytest.fixture
def small_bound(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(store_mod, "HELD_MAX", HELD)
    monkeypatch.setattr(store_mod, "PARTIAL_MIN", 8)
    monkeypatch.setattr(store_mod, "SWEEP_AFTER", 1)
    monkeypatch.setattr(store_mod, "SWEEP_PIECES", 4)
    yield


def _scattered(rng: random.Random, n: int) -> list[list]:  # type: ignore[type-arg]
    """``n`` writes of 100 bytes at distinct places 512 bytes apart: a piece each."""
    slots = rng.sample(range(len(BASE) // 512), n)
    return [["w", s * 512 + 7, 100, rng.randrange(1, 256)] for s in slots]


def _held(ent: store_mod._Entry | None) -> int:
    return 0 if ent is None or ent.state is None else len(ent.state.map)


def test_a_writer_entry_stays_within_the_bound(tmp_path, base_fd: int, small_bound: None) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(7)
    model = bytearray(BASE)
    writes = _scattered(rng, 100)
    most = 0
    with Store(tmp_path / "s", clean=False) as s:
        for i in range(0, len(writes), GROUP):
            group = writes[i : i + GROUP]
            _group(s, 1, group)
            for w in group:
                apply(model, w)
            most = max(most, _held(s._wstates.get(1)))
            check_entries(s)
            if i % 5 == 0:
                off = rng.randrange(len(BASE))
                assert read(s, 1, base_fd, off, 3000) == bytes(model[off : off + 3000])
                check_entries(s)
        assert read(s, 1, base_fd) == bytes(model)
        pieces = s.read_one("SELECT COUNT(*) FROM pieces WHERE obj=?", (1,))
        assert pieces is not None and pieces[0] == 100  # the map is 4 times the bound
    # A group adds its writes' pieces (and fills their windows: at most 2 each) to an
    # entry remade at its start: never the whole map.
    assert HELD < most <= HELD + 3 * GROUP, most
    with Store(tmp_path / "s", clean=False) as again:
        assert read(again, 1, base_fd) == bytes(model)


def test_a_reader_entry_stays_within_the_bound(tmp_path, base_fd: int, small_bound: None) -> None:  # type: ignore[no-untyped-def]
    """The reader: another process (a second store) reading the file in windows,
    and the writer's own read entry following its commits."""
    rng = random.Random(11)
    model = bytearray(BASE)
    window = 2048  # 4 slots of 512: at most 5 pieces a window
    with Store(tmp_path / "s", clean=False) as w, Store(tmp_path / "s", clean=False) as r:
        for i, op in enumerate(_scattered(rng, 90)):
            _group(w, 1, [op])
            apply(model, op)
            assert read(w, 1, base_fd, op[1], 200) == bytes(model[op[1] : op[1] + 200])
            assert _held(w._rstates.get(1)) <= HELD + GROUP, i
            for off in range(0, len(BASE), window):
                assert read(r, 1, base_fd, off, window) == bytes(model[off : off + window])
                assert _held(r._rstates.get(1)) <= HELD + 5, (i, off)
            check_entries(w)
            check_entries(r)
        assert read(r, 1, base_fd) == bytes(model)


def test_a_sweep_stops_at_the_bound(tmp_path, base_fd: int, small_bound: None) -> None:  # type: ignore[no-untyped-def]
    """A kept partial writer's entry (after a restart) is swept a step each group,
    never past the bound: it stays partial, and answers as the model."""
    rng = random.Random(5)
    model = bytearray(BASE)
    with Store(tmp_path / "s", clean=False) as s:
        for op in _scattered(rng, 60):
            _group(s, 1, [op])
            apply(model, op)
    with Store(tmp_path / "s", clean=False) as s:  # a restart: the map is large, partial
        for op in _scattered(rng, 20):
            _group(s, 1, [op])
            apply(model, op)
            ent = s._wstates[1]
            assert ent.known is not None  # never made whole: the map is past the bound
            assert _held(ent) <= HELD + GROUP
            check_entries(s)
        assert read(s, 1, base_fd) == bytes(model)


def test_without_the_bound_the_same_writes_hold_every_piece(tmp_path, base_fd: int) -> None:  # type: ignore[no-untyped-def]
    """What the bound changes (and that the tests above would see it missing): with
    the default bound the one writer's entry holds the whole map."""
    writes = _scattered(random.Random(7), 100)
    with Store(tmp_path / "s", clean=False) as s:
        for i in range(0, len(writes), GROUP):
            _group(s, 1, writes[i : i + GROUP])
        assert _held(s._wstates.get(1)) == s.read_one("SELECT COUNT(*) FROM pieces", ())[0]  # type: ignore[index]
