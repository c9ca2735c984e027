"""instant.store: two processes writing one large file (the notes, "Writing a large file").

Two stores on one session directory stand for two worker processes serving
one client's ``nconnect`` connections.  With ``PARTIAL_MIN`` made small, every
file is "large": a store whose file the other changed keeps its writer's
entry partial, loading the pieces each change needs (``_fill``).  Checked:

* random writes, truncates and the cleaning, each by either store in turn,
  read as a byte model from both stores, and after reopening (hypothesis);
* neither store loads a large file's map whole again, whoever changes it,
  and a store opened on a large file (after a restart) writes and reads
  without it;
* a read while this process's commit is being published is answered from
  its own window, keeping nothing the commit's edits would then add twice;
* a piece the entry holds is never loaded a second time over this process's
  own edit of it (the ``known`` stretches), within a group and across groups:
  after every change a current entry holds exactly the database's pieces
  over its known stretches (:func:`check_entries`).
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from instant import db
from instant import store as store_mod
from instant.rangemap import Piece
from instant.store import Store
from merge.namespace import ZERO_FD, StorageIOError
from tests.unit import test_instant_store_async, test_instant_store_cache
from tests.unit.test_instant_store import BASE, apply, base_runs, op_lists, read, run_op
from tests.unit.test_instant_store_cache import in_publish_window
from tests.unit.test_instant_store_clean import _clean

base_fd = test_instant_store_async.base_fd  # the fixtures
loads = test_instant_store_cache.loads


def _group(s: Store, obj: int, writes: list[list]) -> None:  # type: ignore[type-arg]
    """``writes`` (``["w", off, n, fill]``) queued together, the syncer woken once
    after the last: one group (one transaction) makes them all, in their order."""
    told: list[object] = []
    ended = threading.Event()
    wakes: list = []  # type: ignore[type-arg]

    def done(outcome: object) -> None:
        told.append(outcome)
        if len(told) == len(writes):
            ended.set()

    def later(wake) -> bool:  # type: ignore[no-untyped-def]
        wakes.append(wake)
        return True

    for _, off, n, fill in writes:
        s.write_async(obj, off, bytes([fill]) * n, len(BASE), done=done, wake_later=later)
    wakes[-1]()
    assert ended.wait(30) and not [e for e in told if isinstance(e, Exception)], told


def check_entries(s: Store) -> None:
    """Each writer's and reader's entry that is current holds the database's pieces:
    all of them, or (partial) those that meet its known stretches; none twice, none
    stale."""
    conn = db.connect(s.dir)
    try:
        for obj, ent in [*s._wstates.items(), *s._rstates.items()]:
            row = conn.execute("SELECT gen FROM objects WHERE id=?", (obj,)).fetchone()
            if row is None or row[0] != ent.gen or ent.state is None:
                continue  # another process changed it since: not used again as it is
            sql = "SELECT start, length, log, pos FROM pieces WHERE obj=? ORDER BY start"
            pieces = [Piece(*r) for r in conn.execute(sql, (obj,))]
            if ent.known is not None:
                pieces = [p for p in pieces if ent.known.overlapping(p.start, p.end)]
            assert list(ent.state.map) == pieces, obj
    finally:
        conn.close()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    op_lists(st.integers(1, 9000), min_size=1, max_size=40),
    st.lists(st.booleans(), min_size=40, max_size=40),
    st.tuples(
        st.sampled_from([1, 3, 8]),
        st.sampled_from([(0, 1), (1, 2), (2, 5), (10**9, 1)]),
        st.sampled_from([4, 10**9]),
    ),
)
def test_two_stores_writing_in_turns_read_as_the_model(
    tmp_path_factory, base_fd: int, ops: list, who: list[bool], bounds: tuple
) -> None:  # type: ignore[no-untyped-def]
    """``bounds``: ``PARTIAL_MIN``, when a kept partial writer's entry is made
    whole again (``SWEEP_AFTER``, ``SWEEP_PIECES``): at every group, after a group
    or two, or never; and the pieces an entry may hold (``HELD_MAX``: past it,
    remade holding none)."""
    ranged, sweep, held = bounds
    d = tmp_path_factory.mktemp("s")
    model = bytearray(BASE)
    real = store_mod.PARTIAL_MIN, store_mod.SWEEP_AFTER, store_mod.SWEEP_PIECES
    real_held = store_mod.HELD_MAX
    # hypothesis runs the body many times: no monkeypatch
    store_mod.PARTIAL_MIN, store_mod.HELD_MAX = ranged, held
    store_mod.SWEEP_AFTER, store_mod.SWEEP_PIECES = sweep
    try:
        with Store(d, rotate=16 * 1024, clean=False) as a, Store(d, clean=False) as b:
            i = 0
            while i < len(ops):
                s, other = (a, b) if who[i] else (b, a)
                op = ops[i]
                if op[0] == "w":  # with the writes after it by the same store: one group
                    j = i + 1
                    while j < min(i + 4, len(ops)) and ops[j][0] == "w" and who[j] == who[i]:
                        j += 1
                    _group(s, 1, ops[i:j])
                    for w in ops[i:j]:
                        apply(model, w)
                    i = j
                else:
                    run_op(s, 1, op)
                    apply(model, op)
                    i += 1
                check_entries(s)
                if op[3] % 3 == 0:  # a read after its own change: its entry followed it
                    assert read(s, 1, base_fd, op[1], 9000) == bytes(model[op[1] : op[1] + 9000])
                    check_entries(s)
                if op[0] == "w" and op[3] % 7 == 0:
                    _clean(other)  # moves the other store's edits: its map changes under s
                    check_entries(other)
                if op[0] == "w" and op[3] % 5 == 0:
                    assert read(other, 1, base_fd) == bytes(model)
            assert read(a, 1, base_fd) == bytes(model)
            assert read(b, 1, base_fd) == bytes(model)
        with Store(d, clean=False) as s:
            assert read(s, 1, base_fd) == bytes(model)
    finally:
        store_mod.PARTIAL_MIN, store_mod.SWEEP_AFTER, store_mod.SWEEP_PIECES = real
        store_mod.HELD_MAX = real_held


def test_a_large_file_written_in_turns_is_never_loaded_whole(
    tmp_path: Path, base_fd: int, loads: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a file's map is large, writes by two stores in turns load only the
    pieces each one meets; nobody loads the map whole, and the bytes are right."""
    monkeypatch.setattr(store_mod, "PARTIAL_MIN", 16)
    rnd = random.Random(3)
    model = bytearray(BASE)
    with Store(tmp_path / "s", clean=False) as a, Store(tmp_path / "s", clean=False) as b:
        for i in range(40):  # 40 pieces apart, all by a: its map followed its own commits
            op = ["w", rnd.randrange(15) * 4096 + rnd.choice((0, 100)), 3000, i + 1]
            run_op(a, 1, op)
            apply(model, op)
        assert len(a._wstates[1].state.map) >= 16
        loads.clear()
        for i in range(200):
            s = (a, b)[i % 2]
            op = ["w", rnd.randrange(70_000), rnd.randrange(1, 9000), i % 250 + 1]
            if i % 37 == 36:
                op = ["t", rnd.randrange(70_000), 0, 0]
            run_op(s, 1, op)
            apply(model, op)
            check_entries(s)
        assert loads == []
        assert a._wstates[1].known is not None and b._wstates[1].known is not None
        assert read(a, 1, base_fd) == bytes(model) == read(b, 1, base_fd)


@pytest.mark.parametrize("how", ["the other store wrote", "restarted"])
def test_a_kept_partial_entry_is_made_whole_again(
    tmp_path: Path, base_fd: int, loads: list[int], monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """One writer again (after the other process's change, or a restart): once
    ``SWEEP_AFTER`` groups in a row found its partial entry current, each group
    loads ``SWEEP_PIECES`` more pieces, never the whole map at once, until the
    entry is whole (no fill a write from then on: ~50 µs of CPU a 4 KiB WRITE).
    So is a partial read entry that follows this process's commits."""
    monkeypatch.setattr(store_mod, "PARTIAL_MIN", 8)
    monkeypatch.setattr(store_mod, "SWEEP_AFTER", 3)
    monkeypatch.setattr(store_mod, "SWEEP_PIECES", 12)
    d = tmp_path / "s"
    model = _closed_session(d, 40, 1500)  # 40 pieces, and up to 6 more a group
    rnd = random.Random(5)
    with Store(d, clean=False) as a, Store(d, clean=False) as b:
        if how == "the other store wrote":
            run_op(a, 1, ["w", 3, 4, 1])
            apply(model, ["w", 3, 4, 1])
            run_op(b, 1, ["w", 7, 4, 2])
            apply(model, ["w", 7, 4, 2])
        loads.clear()
        assert a.size(1, len(BASE)) == len(BASE)  # a partial read entry, following a's commits
        assert a._rstates[1].known is not None
        whole_after = None
        for g in range(12):
            ops = [["w", rnd.randrange(62_000), rnd.randrange(1, 900), g * 3 + k + 3]
                   for k in range(3)]  # fmt: skip
            _group(a, 1, ops)
            for op in ops:
                apply(model, op)
            check_entries(a)
            ent = a._wstates[1]
            if ent.known is None and whole_after is None:
                whole_after = g
            before = len(ent.state.map)
        assert loads == []  # never the whole map at once
        # kept from the second group on (the first made the entry), swept from the
        # SWEEP_AFTER-th kept one on: 40 pieces and more, at 12 a group
        assert whole_after is not None and 3 <= whole_after < 12
        assert a._rstates[1].known is None  # swept on publication
        fills: list[int] = []
        real_fill = store_mod._fill
        monkeypatch.setattr(
            store_mod, "_fill", lambda *a: fills.append(1) if a[2].known else real_fill(*a)
        )
        _group(a, 1, [["w", 100, 10, 99]])
        apply(model, ["w", 100, 10, 99])
        assert fills == [] and len(a._wstates[1].state.map) >= before
        assert read(a, 1, base_fd) == bytes(model) == read(b, 1, base_fd)
        # Writing in turns again: remade partial at every group, never kept, never swept.
        for i in range(8):
            op = ["w", rnd.randrange(62_000), 50, 200 + i]
            _group((b, a)[i % 2], 1, [op])
            apply(model, op)
        assert a._wstates[1].known is not None and a._wstates[1].kept == 0
        assert b._wstates[1].known is not None and b._wstates[1].kept == 0
        assert read(a, 1, base_fd) == bytes(model) == read(b, 1, base_fd)
    with Store(d, clean=False) as s:
        assert read(s, 1, base_fd) == bytes(model)


def test_a_store_opened_on_a_large_file_writes_without_loading_it(
    tmp_path: Path, base_fd: int, loads: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a restart: the first write to a file of many pieces takes its row and
    the pieces it meets, not the whole map (890,000 pieces: ~2.5 s with every
    write of the process waiting)."""
    monkeypatch.setattr(store_mod, "PARTIAL_MIN", 16)
    d = tmp_path / "s"
    model = _closed_session(d, 30, 2000)
    with Store(d, clean=False) as s:
        run_op(s, 2, ["w", 0, 10, 9])  # a small file beside it
    loads.clear()
    with Store(d, clean=False) as s:
        for op in (["w", 1500, 1000, 77], ["w", 59_500, 9000, 78], ["t", 50_000, 0, 0]):
            run_op(s, 1, op)
            apply(model, op)
        run_op(s, 2, ["w", 5, 10, 8])
        assert loads == [2]  # the small one is loaded whole, as before
        ent = s._wstates[1]
        assert ent.known is not None and ent.state is not None
        assert len(ent.state.map) < 30  # only the pieces met: around 1,500, past 50,000
        assert read(s, 1, base_fd) == bytes(model)
    with Store(d, clean=False) as s:
        assert read(s, 1, base_fd) == bytes(model)


def test_a_piece_this_process_cut_is_not_loaded_again(
    tmp_path: Path, base_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database's piece under an edit this process made in an earlier group
    meets a known stretch: a later change beside it does not load it over the edit."""
    monkeypatch.setattr(store_mod, "PARTIAL_MIN", 4)
    model = bytearray(BASE)
    d = tmp_path / "s"
    with Store(d, clean=False) as a, Store(d, clean=False) as b:
        for i in range(6):
            op = ["w", i * 10_000, 8000, i + 1]
            run_op(a, 1, op)
            apply(model, op)
        run_op(b, 1, ["w", 60_000, 10, 50])  # a's entry of the file is partial from now on
        apply(model, ["w", 60_000, 10, 50])
        for op in (["w", 2000, 100, 60], ["w", 7000, 2000, 61], ["w", 1000, 10, 62]):
            run_op(a, 1, op)  # each meets the piece [0, 8000) the first one cut
            apply(model, op)
        ent = a._wstates[1]
        assert ent.known is not None and ent.state is not None
        got = {p.start: p for p in ent.state.map}
        assert 0 in got and got[0].length == 1000  # the piece as cut, not as loaded
        assert all(isinstance(p, Piece) for p in got.values())
        assert read(a, 1, base_fd) == bytes(model) == read(b, 1, base_fd)


def test_a_store_opened_on_a_large_file_reads_without_loading_it(
    tmp_path: Path, base_fd: int, loads: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a restart: READs and GETATTRs of a file of many pieces take its row and
    the pieces they meet, kept for the next ones, not the whole map under the
    read lock (at 890,000 pieces ~2.5 s, every reply of the process waiting)."""
    monkeypatch.setattr(store_mod, "PARTIAL_MIN", 16)
    d = tmp_path / "s"
    model = _closed_session(d, 30, 2000)
    loads.clear()
    with Store(d, clean=False) as s:
        assert s.size(1, len(BASE)) == len(BASE)
        assert read(s, 1, base_fd, 3000, 5000) == bytes(model[3000:8000])
        ent = s._rstates[1]
        assert ent.known is not None and ent.state is not None
        assert 0 < len(ent.state.map) < 30
        for op in (["w", 3500, 10, 99], ["w", 40_100, 300, 98]):
            run_op(s, 1, op)  # its own commits, in and out of what it holds: followed
            apply(model, op)
            assert s._rstates[1] is ent
            check_entries(s)
        assert read(s, 1, base_fd, 39_000, 3000) == bytes(model[39_000:42_000])
        check_entries(s)  # the piece the commit added is not loaded a second time
        assert read(s, 1, base_fd) == bytes(model)
        check_entries(s)
        assert loads == []


def test_a_read_stream_inside_a_known_stretch_looks_for_no_gap(
    tmp_path: Path, base_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partial read entry answers a window inside the known stretch that held the
    last one without looking for gaps (``near``: a READ stream over a part of the
    disk read once already); a window past it still fills, with the right bytes."""
    monkeypatch.setattr(store_mod, "PARTIAL_MIN", 16)
    d = tmp_path / "s"
    model = _closed_session(d, 30, 2000)
    looks: list[int] = []
    real = store_mod._gaps
    monkeypatch.setattr(store_mod, "_gaps", lambda *a: looks.append(1) or real(*a))
    with Store(d, clean=False) as s:
        assert read(s, 1, base_fd, 0, 30_000) == bytes(model[:30_000])  # known from now on
        ent = s._rstates[1]
        assert ent.known is not None
        looks.clear()
        for at in range(0, 29_000, 1000):
            assert read(s, 1, base_fd, at, 1000) == bytes(model[at : at + 1000])
        assert len(looks) <= 1 and ent.near[0] <= 0 and ent.near[1] >= 30_000
        assert read(s, 1, base_fd, 29_000, 20_000) == bytes(model[29_000:49_000])  # fills past it
        assert ent.known.overlapping(0, 49_000)[0].end >= 49_000
        check_entries(s)
        assert read(s, 1, base_fd) == bytes(model)


@pytest.mark.parametrize("checked_before", [False, True])
def test_a_read_while_a_commit_is_published_keeps_nothing(
    tmp_path: Path, base_fd: int, monkeypatch: pytest.MonkeyPatch, checked_before: bool
) -> None:
    """Between this process's COMMIT and its publication, a READ of bytes its partial
    entry does not hold is answered from a window of its own: filled into the entry,
    the commit's new pieces would be added a second time when published.  Also when
    the caller's ``version`` was read before the commit (``checked_before``): the
    entry, checked at that version, is not filled from the newer database."""
    monkeypatch.setattr(store_mod, "PARTIAL_MIN", 4)
    d = tmp_path / "s"
    model = _closed_session(d, 8, 8000)
    with Store(d, clean=False) as s:
        run_op(s, 2, ["w", 0, 10, 5])  # its log opened (a commit, published): not the one
        v = s.version() if checked_before else None
        assert s.size(1, len(BASE), v) == len(BASE)  # a partial entry, holding no piece
        op = ["w", 41_000, 500, 77]

        def late_read() -> bytes:
            out = bytearray()
            for r in s.runs(1, 40_000, 9000, base_runs(base_fd), len(BASE), version=v):
                out += bytes(r.length) if r.fd == ZERO_FD else os.pread(r.fd, r.length, r.pos)
            return bytes(out)

        seen = in_publish_window(s, late_read)
        run_op(s, 1, op)
        (during,) = seen
        assert during in (bytes(model[40_000:49_000]), bytes(apply_to(model, op)[40_000:49_000]))
        apply(model, op)
        check_entries(s)
        assert read(s, 1, base_fd) == bytes(model)
        check_entries(s)


def _closed_session(d: Path, pieces: int, apart: int) -> bytearray:
    """A session whose file 1 has ``pieces`` pieces of 1,000 bytes, ``apart`` bytes
    apart, written by a store closed since (the next one opens it as after a
    restart); the model."""
    model = bytearray(BASE)
    with Store(d, clean=False) as s:
        for i in range(pieces):
            op = ["w", i * apart, 1000, i + 1]
            run_op(s, 1, op)
            apply(model, op)
    return model


def apply_to(model: bytearray, op: list) -> bytearray:  # type: ignore[type-arg]
    after = bytearray(model)
    apply(after, op)
    return after


@pytest.mark.parametrize("cached", ["absent", "small"])
def test_a_small_entry_the_other_grew_large_is_not_loaded_whole(
    tmp_path: Path, base_fd: int, loads: list[int], monkeypatch: pytest.MonkeyPatch, cached: str
) -> None:
    """Whether a file is large is the database's answer when the entry this process
    has is not: a file it saw with no overlay or a few pieces, grown past
    ``PARTIAL_MIN`` by another process, is read and written partially."""
    monkeypatch.setattr(store_mod, "PARTIAL_MIN", 16)
    model = bytearray(BASE)
    with Store(tmp_path / "s", clean=False) as a, Store(tmp_path / "s", clean=False) as b:
        if cached == "small":
            run_op(a, 1, ["w", 0, 10, 3])
            apply(model, ["w", 0, 10, 3])
        assert a.size(1, len(BASE)) == len(BASE)
        for i in range(40):
            op = ["w", i * 1500 + 20, 100, i + 7]
            run_op(b, 1, op)
            apply(model, op)
        loads.clear()
        assert a.size(1, len(BASE)) == len(BASE)
        run_op(a, 1, ["w", 5, 1, 9])
        apply(model, ["w", 5, 1, 9])
        assert loads == []
        assert read(a, 1, base_fd) == bytes(model) == read(b, 1, base_fd)
        check_entries(a)


def test_a_fill_that_fails_keeps_nothing(
    tmp_path: Path, base_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read whose fill fails half way (an I/O error on its second query) leaves no
    stretch known without its pieces: the next read gives the written bytes."""
    monkeypatch.setattr(store_mod, "PARTIAL_MIN", 4)
    d = tmp_path / "s"
    model = _closed_session(d, 8, 8000)
    with Store(d, clean=False) as s:
        assert read(s, 1, base_fd, 24_000, 1000) == bytes(model[24_000:25_000])
        real, calls = store_mod._over, [0]

        def failing(*a):  # type: ignore[no-untyped-def]
            calls[0] += 1
            if calls[0] == 2:
                raise sqlite3.OperationalError("disk I/O error")
            return real(*a)

        monkeypatch.setattr(store_mod, "_over", failing)
        with pytest.raises(StorageIOError):  # gaps [0, 24000) and [25000, 40000)
            read(s, 1, base_fd, 0, 40_000)
        monkeypatch.setattr(store_mod, "_over", real)
        assert read(s, 1, base_fd) == bytes(model)
        check_entries(s)
