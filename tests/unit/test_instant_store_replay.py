"""instant.store: the data log as the map's log (groups committed without a WAL sync, replayed).

A power loss is simulated by putting back the database files as they were at
the last commit that synced the WAL (every later commit of the log's groups was
lazy: its WAL frames may never have reached the disk), keeping the data log
(every acknowledged write's record was synced before its reply).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from instant import db
from instant.store import HEAD, Hook, Store, Tx
from tests.unit import test_instant_store_async
from tests.unit.test_instant_store import BASE, BLOCK, ROOT, apply, op_lists, read, run_op

base_fd = test_instant_store_async.base_fd  # the fixture

FILES = (db.DB_NAME, f"{db.DB_NAME}-wal")


def snapshot(d: Path, to: Path) -> None:
    """The database as durable now (taken while no commit runs)."""
    shutil.rmtree(to, ignore_errors=True)
    to.mkdir()
    for name in FILES:
        if (d / name).exists():
            shutil.copy(d / name, to / name)


def power_loss(d: Path, snap: Path) -> None:
    """The database back as at ``snap`` (the lazy commits after it lost); the logs kept."""
    for name in (*FILES, f"{db.DB_NAME}-shm"):
        (d / name).unlink(missing_ok=True)
    for name in FILES:
        if (snap / name).exists():
            shutil.copy(snap / name, d / name)


def log_of(d: Path) -> Path:
    (log,) = d.glob("log-*.dat")
    return log


# 70,000 bytes: a large write, whose group syncs the map
ops = op_lists(st.one_of(st.integers(1, 9000), st.just(70_000)), min_size=1, max_size=12)


def holding(point: str, thread: str) -> tuple[Hook, threading.Event, threading.Event]:
    """A store hook that holds the thread named ``thread`` at ``point`` (``held``
    set) until ``go`` is set."""
    held, go = threading.Event(), threading.Event()

    def hook(p: str) -> None:
        if p == point and threading.current_thread().name == thread:
            held.set()
            go.wait(10)

    return hook, held, go


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops)
def test_every_acknowledged_write_is_there_after_the_lazy_commits_are_lost(
    tmp_path: Path, base_fd: int, script: list
) -> None:  # type: ignore[type-arg]
    d, snap = tmp_path / "s", tmp_path / "snap"
    shutil.rmtree(d, ignore_errors=True)
    model = bytearray(BASE)
    with Store(d) as s:
        snapshot(d, snap)
        for op in script:
            syncs = s.stats.map_syncs
            run_op(s, 1, op)
            apply(model, op)
            if op[0] == "t" or s.stats.map_syncs != syncs:  # a durable commit: all before it too
                snapshot(d, snap)
    power_loss(d, snap)
    with Store(d) as s:
        assert read(s, 1, base_fd) == bytes(model)
    with Store(d) as s:  # replayed once: the log's end moved past what was redone
        assert s.stats.replayed == 0
        assert read(s, 1, base_fd) == bytes(model)


def test_a_log_s_groups_after_its_first_skip_the_wal_sync(tmp_path: Path, base_fd: int) -> None:
    """Lazy while one log writes; another log's group syncs (and takes the lazy turn)."""
    d = tmp_path / "s"
    with Store(d) as a, Store(d) as b:
        for i in range(4):
            a.write(1, i * BLOCK, b"a" * BLOCK, len(BASE))
        assert (a.stats.commits, a.stats.map_syncs) == (4, 1)
        b.write(1, 0, b"b" * BLOCK, len(BASE))
        b.write(1, BLOCK, b"b" * BLOCK, len(BASE))
        assert b.stats.map_syncs == 1
        a.write(1, 0, b"c" * BLOCK, len(BASE))  # a's lazy commits would now follow b's
        assert a.stats.map_syncs == 2
        assert read(a, 1, base_fd, 0, 2 * BLOCK) == b"c" * BLOCK + b"b" * BLOCK


def _lazy_writes(d: Path, snap: Path) -> list[bytes]:
    """Five 4 KiB writes to file 1: the first syncs (snapshot), four lazy; closed."""
    datas = [bytes([i + 1]) * BLOCK for i in range(5)]
    with Store(d) as s:
        s.write(1, 0, datas[0], len(BASE))
        snapshot(d, snap)
        for i, data in enumerate(datas[1:], 1):
            s.write(1, i * BLOCK, data, len(BASE))
        assert s.stats.map_syncs == 1
    return datas


def test_a_torn_or_corrupt_record_ends_the_replay(tmp_path: Path, base_fd: int) -> None:
    """The replay redoes whole records only, in order, none past the first bad one."""
    d, snap = tmp_path / "s", tmp_path / "snap"
    datas = _lazy_writes(d, snap)
    log = log_of(d)
    rec = HEAD + BLOCK
    with open(log, "r+b") as f:  # the 4th write's data changed: its checksum fails
        f.seek(3 * rec + HEAD + 100)
        f.write(b"\xff")
    power_loss(d, snap)
    with Store(d) as s:
        assert s.stats.replayed == 2
        assert (
            read(s, 1, base_fd, 0, 5 * BLOCK) == b"".join(datas[:3]) + BASE[3 * BLOCK : 5 * BLOCK]
        )
    d2, snap2 = tmp_path / "s2", tmp_path / "snap2"
    datas = _lazy_writes(d2, snap2)
    os.truncate(log_of(d2), 4 * rec + HEAD + 10)  # the last write torn
    power_loss(d2, snap2)
    with Store(d2) as s:
        assert s.stats.replayed == 3
        assert (
            read(s, 1, base_fd, 0, 5 * BLOCK) == b"".join(datas[:4]) + BASE[4 * BLOCK : 5 * BLOCK]
        )


def test_a_header_not_at_its_place_is_not_replayed(tmp_path: Path, base_fd: int) -> None:
    """A record copied elsewhere in the log (its position is in its checksum) ends the replay."""
    d, snap = tmp_path / "s", tmp_path / "snap"
    datas = _lazy_writes(d, snap)
    rec = HEAD + BLOCK
    with open(log_of(d), "r+b") as f:
        f.seek(4 * rec)
        last = f.read(rec)
        f.seek(rec)
        f.write(last)  # the 5th record in the 2nd's place
    power_loss(d, snap)
    with Store(d) as s:
        assert s.stats.replayed == 0
        assert read(s, 1, base_fd, 0, 2 * BLOCK) == datas[0] + BASE[BLOCK : 2 * BLOCK]


def test_a_replay_interrupted_is_redone_whole(tmp_path: Path, base_fd: int) -> None:
    d, snap = tmp_path / "s", tmp_path / "snap"
    datas = _lazy_writes(d, snap)
    power_loss(d, snap)
    seen: list[str] = []

    def hook(point: str) -> None:
        seen.append(point)
        if seen.count("replay") == 3:
            raise KeyboardInterrupt  # the process killed in the middle of the replay

    with pytest.raises(KeyboardInterrupt):
        Store(d, hook=hook)
    with Store(d) as s:
        assert s.stats.replayed == 4
        assert read(s, 1, base_fd, 0, 5 * BLOCK) == b"".join(datas)


_REPLAYER = """
import os, signal, sys
sys.path.insert(0, {root!r})
from instant.store import Store
seen = []
def hook(point):
    seen.append(point)
    if seen.count("replay") == 2:
        os.kill(os.getpid(), signal.SIGKILL)
Store(sys.argv[1], hook=hook)
"""


def test_a_replay_killed_halfway_is_redone_whole(tmp_path: Path, base_fd: int) -> None:
    d, snap = tmp_path / "s", tmp_path / "snap"
    datas = _lazy_writes(d, snap)
    power_loss(d, snap)
    child = _REPLAYER.format(root=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", child, str(d)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with Store(d) as s:
        assert s.stats.replayed == 4
        assert read(s, 1, base_fd, 0, 5 * BLOCK) == b"".join(datas)


def test_a_live_log_is_never_replayed(tmp_path: Path, base_fd: int) -> None:
    """A record its process has logged but not committed stays its own."""
    d = tmp_path / "s"
    hook, held, go = holding("after-data", "writer")
    with Store(d, hook=hook) as a:
        a.write(1, 0, b"a" * BLOCK, len(BASE))
        a.write(1, BLOCK, b"a" * BLOCK, len(BASE))  # lazy: a's log is the one replayed
        t = threading.Thread(target=a.write, args=(1, 0, b"z" * BLOCK, len(BASE)), name="writer")
        t.start()
        assert held.wait(10)
        with Store(d) as b:  # opened while a's third write is in its log only
            assert b.stats.replayed == 0
            assert read(b, 1, base_fd, 0, BLOCK) == b"a" * BLOCK
        go.set()
        t.join()
        assert read(a, 1, base_fd, 0, 2 * BLOCK) == b"z" * BLOCK + b"a" * BLOCK


def test_a_write_s_stamp_is_replayed_with_it(tmp_path: Path) -> None:
    d, snap = tmp_path / "s", tmp_path / "snap"

    def stamp(tx: Tx, obj: int, t: int) -> None:
        tx.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"t{obj}", t))

    with Store(d, stamp=stamp) as s:
        s.write(1, 0, b"a" * BLOCK, len(BASE), stamp=10)
        snapshot(d, snap)
        s.write(1, 0, b"b" * BLOCK, len(BASE), stamp=20)
        s.write(2, 0, b"c" * BLOCK, len(BASE), stamp=30)
    power_loss(d, snap)
    with Store(d, stamp=stamp) as s, s.read() as conn:
        assert s.stats.replayed == 2
        got = dict(conn.execute("SELECT key, value FROM meta WHERE key LIKE 't%'").fetchall())
        assert got == {"t1": 20, "t2": 30}


def test_a_group_past_a_record_not_yet_written_syncs_the_map(tmp_path: Path, base_fd: int) -> None:
    """The replay stops at a gap in the log: a group after one must not depend on it."""
    d, snap = tmp_path / "s", tmp_path / "snap"
    hook, held, go = holding("before-data", "slow")
    with Store(d, hook=hook) as s:
        s.write(1, 0, b"a" * BLOCK, len(BASE))
        s.write(1, BLOCK, b"b" * BLOCK, len(BASE))  # lazy
        slow = threading.Thread(
            target=s.write, args=(1, 2 * BLOCK, b"c" * BLOCK, len(BASE)), name="slow"
        )
        slow.start()
        assert held.wait(10)  # its place in the log taken, nothing written there yet
        syncs = s.stats.map_syncs
        s.write(1, 3 * BLOCK, b"d" * BLOCK, len(BASE))
        assert s.stats.map_syncs == syncs + 1
        snapshot(d, snap)
        go.set()
        slow.join()
    power_loss(d, snap)
    with Store(d) as s:
        got = read(s, 1, base_fd, 0, 4 * BLOCK)
        assert got[: 2 * BLOCK] == b"a" * BLOCK + b"b" * BLOCK
        assert got[3 * BLOCK :] == b"d" * BLOCK
