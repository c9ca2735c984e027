"""instant.store: the data log as the map's log (groups committed without a WAL sync, replayed).

A power loss is simulated by putting back the database files as they were at
the last commit that synced the WAL (every later commit of the log's groups was
lazy: its WAL frames may never have reached the disk), keeping the data log
(every acknowledged write's record was synced before its reply).
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from instant import db
from instant.errors import NoSpace
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


def test_a_write_refused_by_the_exact_quota_check_is_never_replayed(
    tmp_path: Path, base_fd: int
) -> None:
    """Its group syncs the WAL (the log's end durably past the refused record)."""
    d, snap = tmp_path / "s", tmp_path / "snap"
    with Store(d, quota=1 << 20) as s:
        s.write(1, 0, b"a" * BLOCK, len(BASE))
        snapshot(d, snap)
        s.write(1, BLOCK, b"b" * BLOCK, len(BASE))  # lazy
        s.quota = 2 * (BLOCK + HEAD) + 100
        s._used_hint = 0  # stale, as after another process's commits: the quick check passes
        syncs = s.stats.map_syncs
        with pytest.raises(NoSpace):
            s.write(1, 2 * BLOCK, b"X" * BLOCK, len(BASE))
        if s.stats.map_syncs != syncs:  # a durable commit: all before it too
            snapshot(d, snap)
    power_loss(d, snap)
    with Store(d) as s:
        assert (
            read(s, 1, base_fd, 0, 3 * BLOCK)
            == b"a" * BLOCK + b"b" * BLOCK + BASE[2 * BLOCK : 3 * BLOCK]
        )


def test_a_refused_write_s_bytes_count_in_the_quick_check(tmp_path: Path) -> None:
    """They are in the log (``logged``): the next write is refused before it logs."""
    with Store(tmp_path / "s", quota=1 << 20) as s:
        s.write(1, 0, b"a" * BLOCK, len(BASE))
        s.quota = 2 * (BLOCK + HEAD) + 100
        s._used_hint = 0
        with pytest.raises(NoSpace):
            s.write(1, BLOCK, b"X" * (BLOCK + 200), len(BASE))
        hint = s._used_hint
        with s.read() as conn:
            (logged,) = conn.execute("SELECT SUM(end) FROM logs").fetchone()
        assert hint == logged == 2 * HEAD + 2 * BLOCK + 200
        end = s._log_end
        with pytest.raises(NoSpace):
            s.write(1, BLOCK, b"y" * 50, len(BASE))
        assert s._log_end == end  # refused by the quick check, nothing logged


_HELD = """
import sys, threading, time
sys.path.insert(0, {root!r})
from instant.store import Store
armed = False
def hook(p):
    if p == "after-sync" and threading.current_thread().name == "store-syncer" and armed:
        print("held", flush=True)
        time.sleep(1000)
s = Store(sys.argv[1], hook=hook)
s.write(1, 0, b"a" * 4096, {size})
s.write(1, 4096, b"b" * 4096, {size})  # lazy: wal_log names this log
armed = True
s.write(1, 8192, b"Z" * 4096, {size})  # synced, never committed nor acknowledged
"""


def _killed_with_a_record_past_its_end(d: Path) -> None:
    """A process whose third write is synced in its log, not committed, when SIGKILLed."""
    child = _HELD.format(root=str(ROOT), size=len(BASE))
    proc = subprocess.Popen(
        [sys.executable, "-c", child, str(d)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.parametrize("change", ["truncate", "remove"])
def test_a_dead_log_s_record_is_not_redone_over_a_later_change(
    tmp_path: Path, base_fd: int, change: str
) -> None:
    """SIGKILLed with a record past its log's end; a live store then changes the
    file (durably): a store opened later must not redo the dead write over it."""
    d = tmp_path / "s"
    with Store(d) as b:
        _killed_with_a_record_past_its_end(d)
        with b.transaction() as tx:
            if change == "truncate":
                tx.truncate(1, 0, len(BASE))
            else:
                tx.drop(1)
        with Store(d) as c:
            assert c.stats.replayed == 0
            st = c.state(1)
            assert (st and st.size) == (0 if change == "truncate" else None)
        st = b.state(1)
        assert (st and st.size) == (0 if change == "truncate" else None)


def test_a_dead_log_s_record_is_not_redone_over_an_unlocked_store_s_write(
    tmp_path: Path, base_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store whose log could not be locked never takes the replay turn; its
    groups (acknowledged) end the dead log's turn all the same."""
    d = tmp_path / "s"
    with Store(d) as b:
        _killed_with_a_record_past_its_end(d)

        def nolock(fd: int, op: int) -> None:
            raise OSError(errno.ENOLCK, "No locks available")

        with monkeypatch.context() as m:
            m.setattr(fcntl, "flock", nolock)
            b.write(1, 2 * BLOCK, b"B" * BLOCK, len(BASE))
        assert not b._locked
        with Store(d) as c:
            assert c.stats.replayed == 0
            assert read(c, 1, base_fd, 0, 3 * BLOCK) == b"a" * BLOCK + b"b" * BLOCK + b"B" * BLOCK


def test_an_older_version_s_change_ends_the_replay_turn(tmp_path: Path, base_fd: int) -> None:
    """The turn ends in the database (triggers), whatever code commits: here a
    change as code before the replay made it (objects' gen bumped, no wal_log)."""
    d = tmp_path / "s"
    _killed_with_a_record_past_its_end(d)
    conn = sqlite3.connect(d / db.DB_NAME, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM pieces WHERE obj=1")
        conn.execute("UPDATE objects SET size=0, base_limit=0, gen=gen+1 WHERE id=1")
        conn.execute("COMMIT")
    finally:
        conn.close()
    with Store(d) as c:
        assert c.stats.replayed == 0
        assert c.size(1, len(BASE)) == 0


def test_a_dead_log_s_record_is_redone_when_nothing_changed_after_it(
    tmp_path: Path, base_fd: int
) -> None:
    """The other side: with no change since, the record is redone (once), as if
    committed just before the kill (allowed: never acknowledged, step 4)."""
    d = tmp_path / "s"
    _killed_with_a_record_past_its_end(d)
    with Store(d) as c:
        assert c.stats.replayed == 1
        assert read(c, 1, base_fd, 0, 3 * BLOCK) == b"a" * BLOCK + b"b" * BLOCK + b"Z" * BLOCK
        with c.read() as conn:
            assert conn.execute("SELECT value FROM meta WHERE key='wal_log'").fetchone() is None
    with Store(d) as c:
        assert c.stats.replayed == 0


def test_a_closed_store_s_records_past_its_end_are_never_redone(
    tmp_path: Path, base_fd: int
) -> None:
    """A write that raised after its bytes were logged, then close(): its record is
    past the log's committed end; close moves the end past it and ends the turn."""
    d = tmp_path / "s"

    def hook(point: str) -> None:
        if point == "after-data" and threading.current_thread().name == "failing":
            raise OSError(errno.EIO, "simulated")

    with Store(d, hook=hook) as s:
        s.write(1, 0, b"a" * BLOCK, len(BASE))
        s.write(1, BLOCK, b"b" * BLOCK, len(BASE))  # lazy: wal_log names s's log
        errors: list[BaseException] = []

        def failing() -> None:
            try:
                s.write(1, 2 * BLOCK, b"Z" * BLOCK, len(BASE))
            except OSError as e:
                errors.append(e)

        t = threading.Thread(target=failing, name="failing")
        t.start()
        t.join()
        assert errors
    with Store(d) as c, c.read() as conn:
        assert c.stats.replayed == 0
        assert conn.execute("SELECT value FROM meta WHERE key='wal_log'").fetchone() is None
        (end,) = conn.execute("SELECT end FROM logs").fetchone()
        assert end == 3 * (HEAD + BLOCK)
    with Store(d) as c:
        assert (
            read(c, 1, base_fd, 0, 3 * BLOCK)
            == b"a" * BLOCK + b"b" * BLOCK + BASE[2 * BLOCK : 3 * BLOCK]
        )


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO objects(id, size, base_limit) VALUES (9, 0, 0)",
        "UPDATE objects SET gen=gen+1 WHERE id=1",
        "DELETE FROM objects WHERE id=1",
        "INSERT INTO nodes VALUES (9, 9, 1, NULL, 1, 420, 0, 0, 0, 0, 0, NULL, NULL)",
        "UPDATE nodes SET mtime=1 WHERE id=1",
        "DELETE FROM nodes WHERE id=1",
        "INSERT INTO dirents VALUES (1, 'x', 9)",
        "UPDATE dirents SET name='y' WHERE parent=1",
        "DELETE FROM dirents WHERE parent=1",
    ],
)
def test_every_change_of_a_file_or_a_name_ends_the_turn(tmp_path: Path, sql: str) -> None:
    conn = db.connect(tmp_path)
    try:
        conn.execute("INSERT INTO objects(id, size, base_limit) VALUES (1, 0, 0)")
        conn.execute("INSERT INTO nodes VALUES (1, 1, 1, NULL, 1, 420, 0, 0, 0, 0, 0, NULL, NULL)")
        conn.execute("INSERT INTO dirents VALUES (1, 'a', 1)")
        conn.execute("INSERT INTO meta VALUES (?, 7)", (db.WAL_LOG,))
        conn.execute("INSERT INTO logs(name) VALUES ('l')")  # not a change of a file
        conn.execute("UPDATE logs SET end=5")
        assert conn.execute("SELECT value FROM meta WHERE key=?", (db.WAL_LOG,)).fetchone() == (7,)
        conn.execute(sql)
        assert conn.execute("SELECT value FROM meta WHERE key=?", (db.WAL_LOG,)).fetchone() is None
    finally:
        conn.close()


def test_after_a_namespace_change_one_group_syncs_and_takes_the_turn_back(
    tmp_path: Path, base_fd: int
) -> None:
    d = tmp_path / "s"
    with Store(d) as s:
        s.write(1, 0, b"a" * BLOCK, len(BASE))
        s.write(1, BLOCK, b"b" * BLOCK, len(BASE))
        assert s.stats.map_syncs == 1
        with s.transaction() as tx:
            tx.truncate(2, 0, len(BASE))
        s.write(1, 2 * BLOCK, b"c" * BLOCK, len(BASE))
        assert s.stats.map_syncs == 2
        s.write(1, 3 * BLOCK, b"d" * BLOCK, len(BASE))
        assert s.stats.map_syncs == 2
        with s.read() as conn:
            assert conn.execute("SELECT value FROM meta WHERE key='wal_log'").fetchone() == (
                s._log_id,
            )
