"""instant.store: durable writes over a base, group commit, two processes, crash at every step."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from instant.errors import NoSpace
from instant.rangemap import Piece
from instant.store import HEAD, HOOK_POINTS, Store
from merge.namespace import ZERO_FD, Run, StorageIOError

ROOT = Path(__file__).resolve().parents[2]
BLOCK = 4096
BASE = bytes((i * 13 + 5) % 251 + 1 for i in range(64 * 1024))


@pytest.fixture
def base_fd(tmp_path: Path):  # type: ignore[no-untyped-def]
    p = tmp_path / "base"
    p.write_bytes(BASE)
    fd = os.open(p, os.O_RDONLY)
    yield fd
    os.close(fd)


def base_runs(fd: int):  # type: ignore[no-untyped-def]
    def runs(offset: int, count: int) -> list[Run]:
        end = min(offset + count, len(BASE))
        return [Run(fd, offset, end - offset)] if offset < end else []

    return runs


def read(store: Store, obj: int, fd: int, offset: int = 0, count: int = 1 << 30) -> bytes:
    out = bytearray()
    for r in store.runs(obj, offset, count, base_runs(fd), len(BASE)):
        out += bytes(r.length) if r.fd == ZERO_FD else os.pread(r.fd, r.length, r.pos)
    return bytes(out)


def apply(model: bytearray, op: list) -> None:  # type: ignore[type-arg]
    kind, off, n, fill = op
    if kind == "w":
        if off > len(model):
            model.extend(bytes(off - len(model)))
        model[off : off + n] = bytes([fill]) * n
    elif off < len(model):
        del model[off:]
    else:
        model.extend(bytes(off - len(model)))


def run_op(store: Store, obj: int, op: list) -> None:  # type: ignore[type-arg]
    kind, off, n, fill = op
    if kind == "w":
        store.write(obj, off, bytes([fill]) * n, len(BASE))
    else:
        with store.transaction() as tx:
            tx.truncate(obj, off, len(BASE))


_edge = st.sampled_from([0, 1, 511, 512, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK, 60_000, 70_000])


def op_lists(sizes: st.SearchStrategy[int], **lists: int) -> st.SearchStrategy[list]:  # type: ignore[type-arg]
    """Scripts of writes (``sizes`` bytes) and truncates, for :func:`run_op` and :func:`apply`."""
    return st.lists(
        st.one_of(
            st.tuples(
                st.just("w"),
                st.one_of(_edge, st.integers(0, 80_000)),
                sizes,
                st.integers(1, 255),
            ),
            st.tuples(
                st.just("t"), st.one_of(_edge, st.integers(0, 80_000)), st.just(0), st.just(0)
            ),
        ).map(list),
        **lists,
    )


ops = op_lists(st.integers(1, 9000), max_size=20)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops)
def test_store_reads_as_the_model_and_after_reopening(
    tmp_path: Path, base_fd: int, script: list
) -> None:  # type: ignore[type-arg]
    d = tmp_path / f"s{os.urandom(4).hex()}"
    model = bytearray(BASE)
    with Store(d) as s:
        assert read(s, 1, base_fd) == BASE  # never written: the base
        for op in script:
            run_op(s, 1, op)
            apply(model, op)
        assert read(s, 1, base_fd) == model
        for off in (0, 511, 4095, 4096, 60_000, max(0, len(model) - 1)):
            assert read(s, 1, base_fd, off, 5000) == model[off : off + 5000]
    with Store(d) as s:
        assert read(s, 1, base_fd) == model
        assert s.size(1, len(BASE)) == len(model)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops, ops)
def test_one_transaction_of_many_edits_reads_as_the_model(
    tmp_path: Path, base_fd: int, before: list, script: list
) -> None:  # type: ignore[type-arg]
    """A group's edits go to the database net of each other (``_Net``): pieces added
    and replaced within it, truncates among writes, two files; the cache, another
    connection and a reopened store all read the model."""
    d = tmp_path / f"s{os.urandom(4).hex()}"
    models = {1: bytearray(BASE), 2: bytearray(BASE)}
    with Store(d) as s, Store(d) as other:
        for op in before:  # durable pieces for the group to replace
            run_op(s, 1, op)
            apply(models[1], op)
        assert read(other, 1, base_fd) == models[1]  # other caches the map before the group
        s._reserve(0)  # the log is opened (in a transaction of its own)
        with s.transaction() as tx:
            for i, op in enumerate(script):
                obj = 1 + i % 2
                kind, off, n, fill = op
                if kind == "w":
                    pos, _ = s._reserve(n)  # a place of the log: not a record here
                    os.pwrite(s._log_fd, bytes([fill]) * n, pos)
                    tx.write_piece(obj, Piece(off, n, s._log_id, pos), len(BASE))
                else:
                    tx.truncate(obj, off, len(BASE))
                apply(models[obj], op)
        for obj, model in models.items():
            assert read(s, obj, base_fd) == model
            assert read(other, obj, base_fd) == model
    with Store(d) as s:
        for obj, model in models.items():
            assert read(s, obj, base_fd) == model


def test_truncated_and_regrown_reads_zeros_durably(tmp_path: Path, base_fd: int) -> None:
    with Store(tmp_path / "s") as s:
        run_op(s, 1, ["t", 100, 0, 0])
        run_op(s, 1, ["t", 200, 0, 0])
    with Store(tmp_path / "s") as s:
        assert read(s, 1, base_fd) == BASE[:100] + bytes(100)


def test_other_process_changes_invalidate_the_cache(tmp_path: Path, base_fd: int) -> None:
    a, b = Store(tmp_path / "s"), Store(tmp_path / "s")  # two connections: as two processes
    assert read(b, 1, base_fd, 0, 4) == BASE[:4]
    a.write(1, 0, b"abcd", len(BASE))
    assert read(b, 1, base_fd, 0, 6) == b"abcd" + BASE[4:6]
    with a.transaction() as tx:
        tx.truncate(1, 2, len(BASE))
    assert read(b, 1, base_fd) == b"ab"
    a.close()
    b.close()


def test_quota_refuses_a_write_whole_and_at_once(tmp_path: Path, base_fd: int) -> None:
    with Store(tmp_path / "s", quota=3 * BLOCK) as s:
        s.write(1, 0, b"x" * 2 * BLOCK, len(BASE))
        with pytest.raises(NoSpace):
            s.write(1, 0, b"y" * 2 * BLOCK, len(BASE))
        assert read(s, 1, base_fd, 0, 2 * BLOCK) == b"x" * 2 * BLOCK
        assert s.usage().logged == 2 * BLOCK + HEAD  # its record: a header, the data


def test_group_commit_16_writers_share_flushes(tmp_path: Path, base_fd: int) -> None:
    """16 writes in flight: far fewer fdatasyncs and COMMITs (each one WAL fsync) than writes."""
    rounds = 20
    with Store(tmp_path / "s") as s:
        barrier = threading.Barrier(16)

        def writer(i: int) -> None:
            for r in range(rounds):
                barrier.wait()
                s.write(1, (r * 16 + i) * BLOCK, bytes([i + 1]) * BLOCK, len(BASE))

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        st_ = s.stats
        assert st_.writes == 16 * rounds
        print(
            f"16 in flight: {st_.writes} writes, {st_.data_syncs} fdatasyncs, {st_.commits} commits"
        )
        # Without group commit 16 a round; the threads start together each round,
        # but a loaded 2-core machine splits a round into a few groups (82 seen
        # in CI against a bound of 4 a round): at most 6 groups of the 16.
        assert st_.data_syncs <= 6 * rounds and st_.commits <= 6 * rounds
        for r in range(rounds):
            for i in range(16):
                assert read(s, 1, base_fd, (r * 16 + i) * BLOCK, 1) == bytes([i + 1])


class _Interrupted(BaseException):
    """As KeyboardInterrupt or SystemExit: not an Exception."""


def test_a_group_ended_by_a_base_exception_acknowledges_none_of_its_writes(
    tmp_path: Path, base_fd: int
) -> None:
    """The syncer is interrupted after a group's fdatasync, before the committer
    maps it: every writer of the group gets an error, none returns as if its write
    were durable, nothing of it is mapped, and both threads go on with later groups."""
    holding, go, interrupt = threading.Event(), threading.Event(), threading.Event()

    def hook(point: str) -> None:
        if point != "after-sync":
            return
        if holding.is_set():  # the first group's sync: the three queue meanwhile
            holding.clear()
            go.wait(10)
        elif interrupt.is_set():
            interrupt.clear()
            raise _Interrupted

    with Store(tmp_path / "s", hook=hook) as s:
        outcome: dict[int, object] = {}

        def writer(i: int) -> None:
            try:
                s.write(1, i * BLOCK, bytes([i + 1]) * BLOCK, len(BASE))
                outcome[i] = "acknowledged"
            except BaseException as e:  # the interruption too
                outcome[i] = e

        s.write(2, 0, b"o" * BLOCK, len(BASE))  # the log is open: a write only queues
        holding.set()
        held = threading.Thread(target=s.write, args=(2, BLOCK, b"h" * BLOCK, len(BASE)))
        held.start()
        _wait_for(lambda: not holding.is_set())  # the syncer holds the first group
        interrupt.set()
        threads = [threading.Thread(target=writer, args=(i,)) for i in range(3)]
        for n, t in enumerate(threads, 1):
            t.start()
            _wait_for(lambda n=n: len(s._queue) == n)  # all three in one group
        go.set()
        for t in [held, *threads]:
            t.join(10)
        assert not any(t.is_alive() for t in [held, *threads])
        assert all(isinstance(o, StorageIOError) for o in outcome.values()), outcome
        assert len(outcome) == 3
        assert read(s, 1, base_fd, 0, 3 * BLOCK) == BASE[: 3 * BLOCK]  # nothing committed
        assert read(s, 2, base_fd, BLOCK, BLOCK) == b"h" * BLOCK  # the group before: whole
        s.write(1, 0, b"z" * BLOCK, len(BASE))  # the store still works
        assert read(s, 1, base_fd, 0, BLOCK) == b"z" * BLOCK


def test_a_commit_ended_by_a_base_exception_acknowledges_none_of_its_writes(
    tmp_path: Path, base_fd: int
) -> None:
    """The committer is interrupted inside the transaction (rolled back), its writes
    synced: each of them is told an error, none is mapped, and later writes commit."""
    with Store(tmp_path / "s") as s:
        s.write(2, 0, b"o" * BLOCK, len(BASE))
        apply_ = s._apply
        calls = 0

        def interrupted_once(tx: object, batch: list) -> object:  # type: ignore[type-arg]
            nonlocal calls
            calls += 1
            if calls == 1:
                raise _Interrupted
            return apply_(tx, batch)  # type: ignore[arg-type]

        s._apply = interrupted_once  # type: ignore[method-assign]
        with pytest.raises(StorageIOError):
            s.write(1, 0, b"a" * BLOCK, len(BASE))
        assert read(s, 1, base_fd, 0, BLOCK) == BASE[:BLOCK]  # rolled back
        s.write(1, BLOCK, b"b" * BLOCK, len(BASE))
        assert read(s, 1, base_fd, 0, 2 * BLOCK) == BASE[:BLOCK] + b"b" * BLOCK
        assert s._pending_bytes == 0  # the failed group's bytes given up once


def _wait_for(cond: Callable[[], bool]) -> None:
    for _ in range(10_000):
        if cond():
            return
        threading.Event().wait(0.001)
    raise AssertionError("waited 10 s")


def test_a_waiting_writer_interrupted_leaves_its_write_to_the_committer(
    tmp_path: Path, base_fd: int
) -> None:
    """A writer waiting for its group (the main thread, interrupted by a signal) stops
    waiting; its write is still committed, and every later write still returns."""
    go_on = threading.Event()

    def hook(point: str) -> None:
        if point == "after-sync" and threading.current_thread().name == "store-syncer":
            go_on.wait(10)

    def interrupted(signum: int, frame: object) -> None:
        raise _Interrupted

    with Store(tmp_path / "s", hook=hook) as s:
        go_on.set()
        s.write(2, 0, b"o" * BLOCK, len(BASE))  # the log is open, the committer runs
        go_on.clear()
        first = threading.Thread(target=s.write, args=(1, 0, b"a" * BLOCK, len(BASE)))
        first.start()
        while s._queue or s.stats.data_syncs < 2:  # its group taken, the syncer in its sync
            threading.Event().wait(0.001)
        main = threading.main_thread().ident
        assert main == threading.get_ident()

        def interrupt() -> None:
            while not s._queue:  # the main thread's write waits for the next group
                threading.Event().wait(0.001)
            signal.pthread_kill(main, signal.SIGUSR1)
            threading.Event().wait(0.2)
            go_on.set()

        old = signal.signal(signal.SIGUSR1, interrupted)
        try:
            threading.Thread(target=interrupt).start()
            with pytest.raises(_Interrupted):
                s.write(1, BLOCK, b"m" * BLOCK, len(BASE))
        finally:
            signal.signal(signal.SIGUSR1, old)
            go_on.set()
        first.join(10)
        later = threading.Thread(
            target=s.write, args=(1, 2 * BLOCK, b"l" * BLOCK, len(BASE)), daemon=True
        )
        later.start()
        later.join(10)
        assert not later.is_alive(), "a write after the interrupted one never returned"
        assert read(s, 1, base_fd, 0, 3 * BLOCK) == b"a" * BLOCK + b"m" * BLOCK + b"l" * BLOCK


def test_a_4k_write_reads_and_writes_about_4k(tmp_path: Path, base_fd: int) -> None:
    """No copy-up: no read at all, the 4 KiB of data plus the map's few small WAL pages."""
    with Store(tmp_path / "s") as s:
        s.write(1, 0, b"w" * BLOCK, len(BASE))  # the log exists, the map has a piece
        s.write(1, 40 * BLOCK, b"w" * BLOCK, len(BASE))

        def io() -> dict[str, int]:
            lines = Path("/proc/self/io").read_text().split("\n")
            return {k: int(v) for k, v in (ln.split(": ") for ln in lines if ln)}

        before = io()
        s.write(1, 20 * BLOCK + 100, b"z" * BLOCK, len(BASE))
        after = io()
        read_b, written = after["rchar"] - before["rchar"], after["wchar"] - before["wchar"]
        print(f"one 4 KiB write: {read_b} bytes read, {written} bytes written")
        assert read_b <= 2048  # sqlite's WAL index and headers, never the base
        assert BLOCK <= written <= BLOCK + 8 * 1024  # data + at most a few 1 KiB map pages


_CHILD = """
import os, signal, sys, json
sys.path.insert(0, {root!r})
from instant.store import Store
point, kill_at, d, script = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
state = {{"n": -1}}
def hook(p):
    if p == point and state["n"] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
s = Store(d, hook=hook)
for i, (off, n, fill) in enumerate(script):
    state["n"] = i
    s.write(1, off, bytes([fill]) * n, {size})
    print(i, flush=True)
"""

CRASH_SCRIPT = [[0, 8192, 1], [4096, 8192, 2], [2048, 4096, 3], [0, 20000, 4], [100, 1, 5]]


@pytest.mark.parametrize("point", HOOK_POINTS)
@pytest.mark.parametrize("kill_at", [0, 2, 4])
def test_killed_at_any_step_keeps_every_acknowledged_write_and_no_half_write(
    tmp_path: Path, base_fd: int, point: str, kill_at: int
) -> None:
    d = tmp_path / "s"
    child = _CHILD.format(root=str(ROOT), size=len(BASE))
    proc = subprocess.run(
        [sys.executable, "-c", child, point, str(kill_at), str(d), json.dumps(CRASH_SCRIPT)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    acked = len(proc.stdout.split())
    assert acked == kill_at
    with Store(d) as s:
        got = read(s, 1, base_fd)
    before, after = bytearray(BASE), bytearray(BASE)
    for op in CRASH_SCRIPT[:acked]:
        apply(before, ["w", *op])
        apply(after, ["w", *op])
    apply(after, ["w", *CRASH_SCRIPT[acked]])
    # The write being made when killed is wholly absent or wholly there.
    assert got in (bytes(before), bytes(after))
    if point == "before-data" or (point in ("after-data", "after-sync") and kill_at == 0):
        assert got == before  # not in the log (or the log's first group: never replayed)
    else:  # committed, or its whole record replayed from the log (never acknowledged)
        assert got == after


_WRITER = """
import sys, threading
sys.path.insert(0, {root!r})
from instant.store import Store
d, who = sys.argv[1], int(sys.argv[2])
s = Store(d)
def w(i):
    for r in range(10):
        s.write(1, ((r * 8 + i) * 2 + who) * 4096, bytes([who * 100 + i + 1]) * 4096, 0)
ts = [threading.Thread(target=w, args=(i,)) for i in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
print(s.stats.writes, s.stats.data_syncs, s.stats.commits)
"""


def test_two_processes_writing_the_same_file_see_everything(tmp_path: Path, base_fd: int) -> None:
    d = tmp_path / "s"
    code = _WRITER.format(root=str(ROOT))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(d), str(who)], stdout=subprocess.PIPE, text=True
        )
        for who in (0, 1)
    ]
    outs = [p.communicate(timeout=60)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    writes = sum(int(o[0]) for o in outs)
    syncs = sum(int(o[1]) for o in outs)
    print(f"2 processes x 8 threads: {writes} writes, {syncs} fdatasyncs")
    assert writes == 160 and syncs <= writes // 2
    with Store(d) as s:
        data = s.runs(1, 0, 1 << 30, lambda o, c: [], 0)
        assert sum(r.length for r in data) == 160 * 4096
        for who in (0, 1):
            for r in range(10):
                for i in range(8):
                    off = ((r * 8 + i) * 2 + who) * 4096
                    assert read(s, 1, base_fd, off, 1) == bytes([who * 100 + i + 1])
