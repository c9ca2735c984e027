"""instant.store: the cleaning (sealed logs emptied and removed) keeps every byte.

* ``RangeMap.relocate`` against a model of where each byte lives: only bytes
  still at the old place move, and its edits replayed on a copy give the same map;
* a store cleaned after random writes and truncates reads as the model, before
  and after reopening, and its logs shrink to about what is mapped;
* a write, a truncate or a remove committed between a move's copy and its
  commit wins over the move;
* a process killed at every step of a move, or between a log's row and its
  file going, loses nothing and leaves no file behind for long;
* another process reading through a cleaning reads the same bytes, and closes
  its descriptor of the removed log after the grace;
* a quota far smaller than the bytes written holds a working set rewritten
  over and over, the cleaning giving the overwritten bytes back.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from instant import db
from instant import store as store_mod
from instant.errors import NoSpace
from instant.rangemap import Piece, RangeMap
from instant.store import Store
from tests.unit import test_instant_store_async
from tests.unit.test_instant_rangemap import check_chunks, chunks_of, loads
from tests.unit.test_instant_store import BASE, ROOT, apply, op_lists, read, run_op

base_fd = test_instant_store_async.base_fd  # the fixture

ROTATE = 64 * 1024
HOOKS = ("before-data", "after-data", "after-sync", "after-commit")


# --- RangeMap.relocate against a model ------------------------------------------------

SPAN = 200


def _bytes_of(m: RangeMap) -> dict[int, tuple[int, int]]:
    """Byte → (log, pos) it is read from."""
    return {b: (p.log, p.pos + b - p.start) for p in m for b in range(p.start, p.end)}


_put = st.tuples(
    st.just("put"), st.integers(0, SPAN - 1), st.integers(1, 40), st.integers(1, 3),
    st.integers(0, 1000),
)  # fmt: skip
_cut = st.tuples(st.just("cut"), st.integers(0, SPAN), st.just(0), st.just(0), st.just(0))
_move = st.tuples(
    st.just("move"), st.integers(0, SPAN - 1), st.integers(1, 60), st.integers(1, 3),
    st.integers(0, 1000),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_put, _cut, _move), max_size=30), st.booleans(), loads)
def test_relocate_moves_only_the_bytes_still_at_the_old_place(
    ops: list, aimed: bool, load: int
) -> None:
    with chunks_of(load):
        _relocate_moves_only_the_bytes_still_at_the_old_place(ops, aimed)


def _relocate_moves_only_the_bytes_still_at_the_old_place(ops: list, aimed: bool) -> None:
    m = RangeMap()
    model: dict[int, tuple[int, int]] = {}
    new_pos = 10_000
    for kind, start, n, log, pos in ops:
        if kind == "put":
            m.put(Piece(start, n, log, pos))
            model.update({start + i: (log, pos + i) for i in range(n)})
        elif kind == "cut":
            m.cut(start)
            model = {b: v for b, v in model.items() if b < start}
        else:
            old = model.get(start, (log, pos)) if aimed else (log, pos)
            before = RangeMap(list(m))
            edits = m.relocate(start, n, old, (9, new_pos))
            for b in range(start, start + n):
                if model.get(b) == (old[0], old[1] + b - start):
                    model[b] = (9, new_pos + b - start)
            new_pos += 100
            before.apply(edits)  # the cache following the commit: the same map
            assert list(before) == list(m)
        assert _bytes_of(m) == model
        check_chunks(m)


# --- a store cleaned ----------------------------------------------------------------


def _clean(s: Store) -> int:
    conn = db.connect(s.dir)
    try:
        return s.clean(conn)
    finally:
        conn.close()


def _victim_ids(d: Path, s: Store) -> list[int]:
    conn = db.connect(d)
    try:
        return [log_id for log_id, _ in s._victims(conn)[0]]
    finally:
        conn.close()


def _logs(d: Path) -> list[Path]:
    return sorted(d.glob("log-*.dat"))


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(op_lists(st.integers(1, 9000), min_size=1, max_size=40))
def test_a_cleaned_store_reads_as_the_model(tmp_path_factory, base_fd: int, ops: list) -> None:  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("s")
    model = bytearray(BASE)
    with Store(d, rotate=16 * 1024, clean=False) as s:
        for op in ops:
            run_op(s, 1, op)
            apply(model, op)
            if op[0] == "w" and op[3] % 5 == 0:
                _clean(s)  # between writes too: moves over pieces later rewritten
        # The passes a cleaner makes (one every CLEAN_INTERVAL): a pass's moves may
        # seal this process's log, which the next pass empties if it is mostly
        # overwritten (found by hypothesis: six overwrites around a 16 KiB seal).
        for _ in range(5):
            if not _clean(s):
                break
        assert read(s, 1, base_fd) == bytes(model)
        # every sealed log left is more than half mapped: nothing left to empty
        conn = db.connect(d)
        assert s._victims(conn)[0] == []
        sealed = conn.execute("SELECT SUM(end) FROM logs WHERE id != ?", (s._log_id,)).fetchone()
        mapped = conn.execute("SELECT SUM(length) FROM pieces WHERE log != ?", (s._log_id,))
        assert (sealed[0] or 0) <= 2 * (mapped.fetchone()[0] or 0)
        conn.close()
    with Store(d, clean=False) as s:
        assert read(s, 1, base_fd) == bytes(model)


def test_cleaning_gives_the_overwritten_bytes_back(tmp_path: Path, base_fd: int) -> None:
    d = tmp_path / "s"
    rnd = random.Random(7)
    model = bytearray(BASE)
    with Store(d, rotate=ROTATE, clean=False) as s:
        for _ in range(600):  # a 48 KiB working set rewritten ~50 times over
            off = rnd.randrange(0, 12) * 4096
            fill = rnd.randrange(1, 256)
            s.write(1, off, bytes([fill]) * 4096, len(BASE))
            apply(model, ["w", off, 4096, fill])
        before = s.usage()
        sealed = len(_logs(d)) - 1
        assert _clean(s) == sealed > 30
        after = s.usage()
        assert read(s, 1, base_fd) == bytes(model)
        print(f"logged {before.logged} -> {after.logged} bytes, {after.live} mapped")
        assert before.logged > 2_000_000 and after.logged < 2 * ROTATE + after.live
        assert s.stats.cleaned == sealed and 0 < s.stats.moved <= 12 * 4096 * 2
        assert len(_logs(d)) == 1  # the files went with the rows
        # what instant list shows as written: the logs' bytes plus those given back
        (given,) = s.read_one("SELECT value FROM meta WHERE key=?", (db.GIVEN_BACK,)) or (0,)
        assert after.logged + given == before.logged  # 4 KiB moves: the estimate is exact
    with Store(d, clean=False) as s:
        assert read(s, 1, base_fd) == bytes(model)


def test_the_cleaner_thread_keeps_a_small_quota_enough(
    tmp_path: Path, base_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Quota 512 KiB, 10 MiB of 4 KiB writes over a 128 KiB working set: without
    cleaning a write past the first 512 KiB is refused for good; with it every one
    lands (told NOSPC while the cleaner catches up, the writer retries, as a
    client does)."""
    monkeypatch.setattr(store_mod, "CLEAN_INTERVAL", 0.05)
    d = tmp_path / "s"
    rnd = random.Random(3)
    model = bytearray(BASE)
    refused = 0
    with Store(d, quota=512 << 10, rotate=ROTATE) as s:
        for _ in range(2_500):
            off = rnd.randrange(0, 32) * 4096
            fill = rnd.randrange(1, 256)
            for _attempt in range(200):
                try:
                    s.write(1, off, bytes([fill]) * 4096, len(BASE))
                    break
                except NoSpace:
                    refused += 1
                    threading.Event().wait(0.01)
            else:
                pytest.fail("the cleaning never made room")
            apply(model, ["w", off, 4096, fill])
        assert read(s, 1, base_fd) == bytes(model)
        assert s.usage().logged <= 512 << 10
        print(f"{s.stats.cleaned} logs emptied, {s.stats.moved} bytes moved, {refused} NOSPC")
        assert s.stats.cleaned > 50


# --- races -----------------------------------------------------------------------------


def _race(tmp_path: Path, base_fd: int, change) -> tuple[bytes, bytes]:  # type: ignore[no-untyped-def]
    """A sealed log with one mapped piece; ``change(s)`` runs (on another thread,
    committed) after the cleaner copied the piece and before its move commits.
    What the file reads then, and what it read before ``change``."""
    d = tmp_path / "s"
    holding = threading.Event()
    ready = threading.Event()

    def hook(point: str) -> None:
        if point == "after-data" and threading.current_thread().name == "cleaner":
            holding.set()
            assert ready.wait(10)

    s = Store(d, rotate=ROTATE, clean=False, hook=hook)
    try:
        s.write(1, 8192, b"K" * 4096, len(BASE))  # the piece the move copies
        for i in range(20):  # sealed: a later write starts a new log
            s.write(1, 40_000, bytes([i + 1]) * 4096, len(BASE))
        assert len(_logs(d)) >= 2
        first = read(s, 1, base_fd)
        t = threading.Thread(target=_clean, args=(s,), name="cleaner")
        t.start()
        assert holding.wait(10)
        change(s)
        ready.set()
        t.join(10)
        assert not t.is_alive()
        return read(s, 1, base_fd), first
    finally:
        s.close()


def test_a_write_committed_during_a_move_wins(tmp_path: Path, base_fd: int) -> None:
    got, _ = _race(tmp_path, base_fd, lambda s: s.write(1, 10_000, b"W" * 100, len(BASE)))
    assert got[8192:10_000] == b"K" * 1808
    assert got[10_000:10_100] == b"W" * 100
    assert got[10_100:12_288] == b"K" * 2188


def test_a_truncate_committed_during_a_move_wins(tmp_path: Path, base_fd: int) -> None:
    def cut(s: Store) -> None:
        with s.transaction() as tx:
            tx.truncate(1, 9000, len(BASE))
        with s.transaction() as tx:
            tx.truncate(1, 20_000, len(BASE))

    got, _ = _race(tmp_path, base_fd, cut)
    assert got[8192:9000] == b"K" * 808
    assert got[9000:20_000] == bytes(11_000)  # cut away: zeros, never the old bytes


def test_a_remove_committed_during_a_move_wins(tmp_path: Path, base_fd: int) -> None:
    def drop(s: Store) -> None:
        with s.transaction() as tx:
            tx.drop(1)

    got, _ = _race(tmp_path, base_fd, drop)
    assert got == BASE  # no overlay made again by the move
    with Store(tmp_path / "s", clean=False) as s:
        assert s.read_one("SELECT COUNT(*) FROM objects", ()) == (0,)


# --- crashes ---------------------------------------------------------------------------

_CLEANER = """
import os, signal, sys, json, threading
sys.path.insert(0, {root!r})
from instant import db, store
from instant.store import Store

point, kill_at, d, script = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
seen = {{"on": False, "n": 0}}
def hook(p):  # every write is acknowledged before the cleaning: what follows is its moves
    if not seen["on"] or p != point:
        return
    if seen["n"] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    seen["n"] += 1
s = Store(d, hook=hook, rotate={rotate}, clean=False)
for off, n, fill in script:
    s.write(1, off, bytes([fill]) * n, {size})
print("written", flush=True)
seen["on"] = True
if point == "unlink":
    store.os.unlink = lambda path: os.kill(os.getpid(), signal.SIGKILL)
t = threading.Thread(target=lambda: s.clean(db.connect(s.dir)), name="cleaner")
t.start(); t.join()
print("cleaned", s.stats.cleaned, flush=True)
"""


def _script() -> list[list[int]]:
    rnd = random.Random(11)
    return [[rnd.randrange(0, 30) * 2048, rnd.randrange(1, 9000), i % 250 + 1] for i in range(120)]


@pytest.mark.parametrize(
    ("point", "kill_at"),
    [
        *((p, k) for p in HOOKS for k in (0, 3)),
        ("unlink", 0),
    ],
)
def test_killed_while_cleaning_loses_nothing(
    tmp_path: Path, base_fd: int, point: str, kill_at: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "s"
    script = _script()
    child = _CLEANER.format(root=str(ROOT), size=len(BASE), rotate=ROTATE)
    proc = subprocess.run(
        [sys.executable, "-c", child, point, str(kill_at), str(d), json.dumps(script)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    assert proc.stdout.split() == ["written"]  # every write acknowledged, then killed cleaning
    model = bytearray(BASE)
    for op in script:
        apply(model, ["w", *op])
    monkeypatch.setattr(store_mod, "ORPHAN_AGE", 0.0)
    with Store(d, clean=False) as s:
        assert read(s, 1, base_fd) == bytes(model)
        _clean(s)  # the next pass finishes the job, an orphan file too
        assert read(s, 1, base_fd) == bytes(model)
        named = {r[0] for r in s._r.execute("SELECT name FROM logs")}
    assert {p.name for p in _logs(d)} == named
    with Store(d, clean=False) as s:
        assert read(s, 1, base_fd) == bytes(model)


# --- another process ----------------------------------------------------------------


def test_another_process_reads_through_a_cleaning_and_lets_the_log_go(
    tmp_path: Path, base_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "s"
    model = bytearray(BASE)
    with Store(d, rotate=ROTATE, clean=False) as w, Store(d, clean=False) as r:
        for i in range(40):
            off = (i % 6) * 4096
            w.write(1, off, bytes([i + 1]) * 4096, len(BASE))
            apply(model, ["w", off, 4096, i + 1])
            if i in (5, 20):
                assert read(r, 1, base_fd) == bytes(model)  # the reader opens logs sealed later
        held = set(r._fds)
        assert _clean(w) >= 1
        assert read(r, 1, base_fd) == bytes(model)
        _clean(r)  # within the grace: the removed logs' descriptors stay
        assert set(r._fds) >= held
        monkeypatch.setattr(store_mod, "RETIRE_GRACE", 0.0)
        r._retiring.clear()
        _clean(r)
        gone = {i for i in held if r.read_one("SELECT 1 FROM logs WHERE id=?", (i,)) is None}
        assert gone and not gone & set(r._fds)
        assert read(r, 1, base_fd) == bytes(model)
        # a new log never takes a removed log's id
        w.write(1, 0, b"n" * 10, len(BASE))
        assert w._log_id not in gone and w._log_id > max(gone)


def test_a_live_writers_log_is_never_emptied(tmp_path: Path, base_fd: int) -> None:
    """Another process's current log, however overwritten, is locked by it."""
    d = tmp_path / "s"
    with Store(d, clean=False) as a, Store(d, clean=False) as b:
        for i in range(50):
            a.write(1, 0, bytes([i + 1]) * 4096, len(BASE))
        b.write(2, 0, b"b", len(BASE))
        assert _clean(b) == 0
        assert a.read_one("SELECT COUNT(*) FROM logs", ()) == (2,)
        assert read(a, 1, base_fd, 0, 4096) == bytes([50]) * 4096


def test_a_map_read_before_the_cleaning_is_read_again(tmp_path: Path, base_fd: int) -> None:
    """A READ whose map (and version) predate the moves, asking for a removed
    log's descriptor it never opened: the map is read again, the bytes right."""
    d = tmp_path / "s"
    with Store(d, rotate=ROTATE, clean=False) as w, Store(d, clean=False) as r:
        w.write(1, 0, b"A" * 4096, len(BASE))  # stays mapped in the first log
        for i in range(20):
            w.write(1, 8192, bytes([i + 1]) * 4096, len(BASE))  # the first log mostly dead
        version = r.version()
        assert read(r, 1, base_fd, 8192, 4096) == bytes([20]) * 4096  # map cached, log 1 not opened
        assert _clean(w) >= 1
        runs = r.runs(1, 0, 4096, lambda o, c: [], len(BASE), version=version)
        assert b"".join(os.pread(x.fd, x.length, x.pos) for x in runs) == b"A" * 4096


def test_room_the_cleaning_made_is_seen_at_once(tmp_path: Path) -> None:
    """The quick quota check counts the logs as of this process's last group: a
    log removed since (by any process's cleaner) is room for the next write."""
    with Store(tmp_path / "s", quota=256 << 10, rotate=ROTATE, clean=False) as s:
        for n in range(1000):
            try:
                s.write(1, 0, bytes([n % 250 + 1]) * 4096, len(BASE))
            except NoSpace:
                break
        else:
            pytest.fail("the quota was never reached")
        assert _clean(s) >= 1
        s.write(1, 0, b"x" * 4096, len(BASE))
        assert s.usage().logged < 256 << 10


def _fill_until_refused(stores: list[Store], obj: int) -> int:
    """4 KiB writes to ``obj``, the stores in turn, until each was refused once."""
    refused: set[int] = set()
    n = 0
    while len(refused) < len(stores):
        for i, s in enumerate(stores):
            try:
                s.write(obj, n * 4096, bytes([n % 250 + 1]) * 4096, len(BASE))
            except NoSpace:
                refused.add(i)
            n += 1
            assert n < 10_000, "the quota was never reached"
    return n


@pytest.mark.parametrize("refused", [True, False])
def test_live_logs_holding_the_quota_dead_are_sealed_and_emptied(
    tmp_path: Path, base_fd: int, refused: bool
) -> None:
    """Four processes' live logs, each under the sealing size, together at the
    quota, then every byte in them removed: each cleaner seals its own log (it
    was refused a write, at its quick check or at its group's exact one; or it
    holds bytes, is idle and the logs hold half the quota), the logs are
    emptied and a write lands again.  Found by a probe of
    four worker processes and an 8 MiB quota: NOSPC for good, until a restart
    (a log was sealed only at a write past the sealing size, which the quota
    refused first).  ``refused``: whether the cleaners' passes come right after
    the refusals or only after an idle pass."""
    d = tmp_path / "s"
    quota = 1 << 20
    stores = [Store(d, quota=quota, rotate=quota, clean=False) for _ in range(4)]
    try:
        _fill_until_refused(stores, 1)
        assert all(s._log_end < quota for s in stores)  # none sealed by its size
        with stores[0].transaction() as tx:
            tx.drop(1)  # the file removed: every logged byte dead
        if not refused:
            for s in stores:
                s._seal_asked = False
                _clean(s)  # a pass: they were written since the last
        for s in stores:
            _clean(s)  # seals its own log (refused, or idle and pressed)
        for s in stores:
            _clean(s)  # the others' logs, sealed since its pass
        logged = stores[0].usage().logged
        # Refused: every log sealed and emptied.  Idle: sealed while the logs hold
        # half the quota or more, so at most one dead log under that is left.
        assert logged < (quota // 16 if refused else quota // 2), logged
        stores[1].write(2, 0, b"room" * 1024, len(BASE))
        assert read(stores[2], 2, base_fd, 0, 4096) == b"room" * 1024
        assert len(_logs(d)) <= 5  # one live log a process, at most, and the one written
    finally:
        for s in stores:
            s.close()


def test_a_busy_processs_log_is_not_sealed_for_being_full(tmp_path: Path) -> None:
    """Half the quota logged, but written since the last pass and never refused:
    the log is kept (a seal a pass would make a log file a pass)."""
    with Store(tmp_path / "s", quota=1 << 20, rotate=1 << 20, clean=False) as s:
        for i in range(150):  # ~600 KiB: over half the quota, under it
            s.write(1, i * 4096, b"w" * 4096, len(BASE))
        log_id = s._log_id
        for i in range(3):
            s.write(1, i * 4096, b"v" * 4096, len(BASE))
            _clean(s)
            assert s._log_id == log_id
        _clean(s)  # idle now, and pressed: sealed
        assert s._log_id != log_id
        _clean(s)
        assert s._log_end == 0  # once: a new log holds nothing, so no second seal


def test_an_idle_session_is_not_scanned_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The maps are scanned for victims only after a commit since the last scan."""
    with Store(tmp_path / "s", clean=False) as s:
        s.write(1, 0, b"a" * 4096, len(BASE))
        scans: list[int] = []
        victims = s._victims
        monkeypatch.setattr(s, "_victims", lambda c: scans.append(1) or victims(c))
        conn = db.connect(s.dir)
        try:
            s.clean(conn)
            s.clean(conn)
            assert len(scans) == 1
            s.write(1, 0, b"b" * 4096, len(BASE))
            s.clean(conn)
            assert len(scans) == 2
        finally:
            conn.close()


# --- found by review: each fails on the code before its fix --------------------------


def test_a_sealing_never_waits_for_a_move_whose_wake_up_is_put_off(tmp_path: Path) -> None:
    """Writers sealing 4 MiB logs while the cleaner's moves (whose syncer wake-up
    waits for the end of their batch) are queued: the sealing wakes the syncer
    itself (it waited 30 s for them, holding every write of the process)."""
    s = Store(tmp_path / "s", quota=64 << 20)  # logs sealed at 4 MiB; the cleaner on
    stop = time.monotonic() + 4
    worst = [0.0]

    def writer(n: int, seed: int) -> None:
        rnd = random.Random(seed)
        while time.monotonic() < stop:
            at = time.monotonic()
            s.write(1, rnd.randrange(0, (12 << 20) // n) * n, b"x" * n, 12 << 20)
            worst[0] = max(worst[0], time.monotonic() - at)

    try:
        ts = [threading.Thread(target=writer, args=(4096, i)) for i in range(4)]
        ts.append(threading.Thread(target=writer, args=(131072, 9)))
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        assert s.stats.rotations > 3 and s.stats.cleaned > 0
        assert worst[0] < 5, f"a write waited {worst[0]:.1f} s"
    finally:
        s.close()


def test_close_racing_a_sealing_does_not_deadlock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write sealing the log holds the log's lock and takes the write lock;
    close() took them the other way round."""
    s = Store(tmp_path / "s", rotate=ROTATE, clean=False)
    i = 0
    while s._log_end < s._rotate_at:
        i += 1
        s.write(1, 0, bytes([i % 250 + 1]) * 4096, 0)
    fsync_dir = store_mod._fsync_dir

    def slow(path: Path) -> None:
        if threading.current_thread().name == "writer":
            time.sleep(0.3)  # the sealing's new log, made while close() comes
        fsync_dir(path)

    monkeypatch.setattr(store_mod, "_fsync_dir", slow)
    told: list[object] = []

    def write() -> None:
        try:
            told.append(s.write(1, 0, b"x" * 4096, 0))
        except Exception as e:
            told.append(e)

    w = threading.Thread(target=write, name="writer")
    w.start()
    time.sleep(0.1)
    closer = threading.Thread(target=s.close, daemon=True)
    closer.start()
    closer.join(10)
    w.join(10)
    assert not closer.is_alive(), "close() deadlocked with the sealing"
    assert told


def test_another_processs_sealed_log_is_left_to_its_writer_for_a_while(
    tmp_path: Path, base_fd: int
) -> None:
    """A sealed log is emptied by the process that wrote it (its moves are its own
    commits, which its map of the file follows); another process's cleaner waits
    ``foreign_wait`` passes first, a commit since or not (its writer may have died),
    and not at all once the logs hold half the quota (space first)."""
    d = tmp_path / "s"
    rnd = random.Random(3)
    model = bytearray(BASE)

    def rewrite(w: Store, n: int) -> int:
        """``n`` overwrites of a 48 KiB working set: the sealed logs worth emptying."""
        for _ in range(n):
            off, fill = rnd.randrange(0, 12) * 4096, rnd.randrange(1, 256)
            w.write(1, off, bytes([fill]) * 4096, len(BASE))
            apply(model, ["w", off, 4096, fill])
        return len(_victim_ids(d, w))

    with Store(d, rotate=ROTATE, clean=False) as w:
        victims = rewrite(w, 200)
        assert victims > 5
        logs = _logs(d)
        with Store(d, clean=False, foreign_wait=2) as other:
            assert [_clean(other) for _ in range(2)] == [0, 0]  # its writer's to empty
            assert _logs(d) == logs
            assert _clean(other) == victims  # the wait is over: emptied by another
        assert read(w, 1, base_fd) == bytes(model)
        victims = rewrite(w, 200)
        # its own at once; the log of the other's moves (closed: sealed) is not its own
        own = len(w._own_sealed & set(_victim_ids(d, w)))
        assert victims - 1 == own > 5
        assert _clean(w) == own
        assert read(w, 1, base_fd) == bytes(model)
    quota = 64 * ROTATE
    with Store(d, rotate=ROTATE, clean=False, quota=quota) as w:
        victims = 0
        while w.usage().logged * 2 < quota:
            victims = rewrite(w, 20)
        assert victims > 5
        with Store(d, clean=False, quota=quota, foreign_wait=2) as other:
            assert _clean(other) == victims  # pressed: no wait
        assert read(w, 1, base_fd) == bytes(model)


def test_a_map_that_names_two_removed_logs_is_read_again_till_it_names_none(
    tmp_path: Path,
) -> None:
    """Two cleaners (two worker processes) remove two logs a cached map names, the
    second between the first retry's reload and its descriptor: read again."""
    d = tmp_path / "s"
    with Store(d, rotate=ROTATE, clean=False) as w:

        def seal() -> int:
            first, n = w._log_id, 0
            while w._log_id == first:
                n += 1
                w.write(9, 0, bytes([n % 250 + 1]) * 4096, 0)
            return first

        w.write(1, 0, b"X" * 4096, 0)
        x = seal()
        w.write(1, 8192, b"Y" * 4096, 0)
        y = seal()
        w.write(1, 16384, b"Z" * 4096, 0)
        with Store(d, clean=False) as r:
            version = r.version()
            r.runs(1, 16384, 4096, lambda o, c: [], 0, version=version)  # map cached
            names = dict(w._r.execute("SELECT id, name FROM logs").fetchall())
            hold = os.open(d / names[y], os.O_RDONLY)
            fcntl.flock(hold, fcntl.LOCK_EX)  # another cleaner's: x alone goes now
            with Store(d, clean=False, foreign_wait=0) as a:
                _clean(a)
            os.close(hold)
            fd_of = r._fd_of
            late = []

            def racing(log: int) -> int:
                if log == y and log not in r._fds and not late:
                    with Store(d, clean=False, foreign_wait=0) as b:
                        late.append(_clean(b))  # y goes between the reload and this
                return fd_of(log)

            r._fd_of = racing  # type: ignore[method-assign]
            runs = r.runs(1, 0, 20480, lambda o, c: [], 0, version=version)
            got = b"".join(
                bytes(x.length) if x.fd < 0 else os.pread(x.fd, x.length, x.pos) for x in runs
            )
            assert late == [1]
            assert got == b"X" * 4096 + bytes(4096) + b"Y" * 4096 + bytes(4096) + b"Z" * 4096
    with Store(d, clean=False) as s:
        assert s.read_one("SELECT COUNT(*) FROM logs WHERE id IN (?, ?)", (x, y)) == (0,)


def test_a_live_log_a_stale_look_saw_gone_keeps_its_grace(tmp_path: Path, base_fd: int) -> None:
    """A look at the logs made before a log was registered (and opened by a READ)
    marked it gone: the next pass that sees it clears the mark, so its descriptor
    gets the whole grace when it really goes (it was closed at once, under a READ)."""
    d = tmp_path / "s"
    with Store(d, clean=False) as w, Store(d, clean=False) as r:
        w.write(1, 0, b"A" * 4096, len(BASE))
        assert read(r, 1, base_fd, 0, 4096) == b"A" * 4096
        (live,) = r._fds
        r._retiring[live] = time.monotonic() - 1  # the stale look's mark, its grace over
        conn = db.connect(d)
        try:
            r._retire(conn)
        finally:
            conn.close()
        assert live in r._fds and live not in r._retiring
