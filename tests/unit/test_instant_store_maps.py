"""``Store.log_maps``: read-only mappings of the data logs a READ's runs name.

A mapping covers every run of its log, is made again over the log's new
size when a run lies past it, and the one it replaces keeps its bytes for
as long as a view of it lives (a reply still queued); the base's runs and
zeros are left out, and a closed store maps nothing.  ``Store.read_ahead``
asks the kernel for the log bytes after a sequential stream of READs.
"""

from __future__ import annotations

import errno
import mmap
import os
from pathlib import Path

import pytest

from instant import store as store_mod
from instant.store import READ_AHEAD, SMALL_WRITE, Store
from merge.namespace import ZERO_FD, Run
from tests.proto.test_instant_write_deferred import read_lock_held
from tests.unit import test_instant_store_async
from tests.unit.test_instant_store import BASE, BLOCK, base_runs

base_fd = test_instant_store_async.base_fd  # the fixture
BIG = 4 * SMALL_WRITE  # a large write: its log grows by about this, with no zeros ahead


def _runs(s: Store, fd: int, offset: int, count: int) -> list[Run]:
    return s.runs(1, offset, count, base_runs(fd), len(BASE))


def _bytes(maps: dict[int, memoryview], runs: list[Run]) -> bytes:
    """The runs' bytes read through the mappings (a test may: no log is cut short)."""
    return b"".join(
        bytes(r.length) if r.fd == ZERO_FD else bytes(maps[r.fd][r.pos : r.pos + r.length])
        for r in runs
    )


def test_the_maps_cover_the_runs_and_are_made_again_as_the_log_grows(
    tmp_path: Path, base_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_mod, "REMAP_INTERVAL", 0.0)
    with Store(tmp_path / "s") as s:
        s.write(1, BLOCK, b"a" * BIG, len(BASE))
        runs = _runs(s, base_fd, 0, 2 * BLOCK + BIG)
        maps = s.log_maps(runs)
        (log_fd,) = maps  # the base's runs left out
        assert base_fd not in maps and {r.fd for r in runs} >= {log_fd, base_fd}
        old = maps[log_fd]
        assert isinstance(old.obj, mmap.mmap) and old.readonly
        assert _bytes({**maps, base_fd: memoryview(BASE)}, runs) == (
            BASE[:BLOCK] + b"a" * BIG + BASE[BLOCK + BIG : 2 * BLOCK + BIG]
        )
        assert s.log_maps(runs)[log_fd] is old  # kept while it covers them
        s.write(1, BLOCK, b"b" * BIG, len(BASE))  # past the mapping's end
        runs2 = _runs(s, base_fd, BLOCK, BIG)
        new = s.log_maps(runs2)[log_fd]
        assert new is not old and len(new) > len(old)
        assert _bytes({log_fd: new}, runs2) == b"b" * BIG
        assert _bytes({log_fd: old}, runs[1:2]) == b"a" * BIG  # the old view's bytes stay
        assert s.log_maps(runs)[log_fd] is new  # the old runs are under the new mapping


def test_another_stores_log_is_mapped_and_a_closed_store_maps_nothing(
    tmp_path: Path, base_fd: int
) -> None:
    with Store(tmp_path / "s") as writer:
        writer.write(1, 0, b"w" * (2 * BLOCK), len(BASE))
    reader = Store(tmp_path / "s")  # another process's log, closed
    runs = _runs(reader, base_fd, 0, 3 * BLOCK)
    maps = reader.log_maps(runs)
    assert len(maps) == 1
    assert (
        _bytes({**maps, base_fd: memoryview(BASE)}, runs)
        == b"w" * 2 * BLOCK + BASE[2 * BLOCK : 3 * BLOCK]
    )
    reader.close()
    assert reader.log_maps(runs) == {}


def test_zeros_and_a_file_never_written_map_nothing(tmp_path: Path, base_fd: int) -> None:
    with Store(tmp_path / "s") as s:
        assert s.log_maps(_runs(s, base_fd, 0, 2 * BLOCK)) == {}
        assert s.log_maps([Run(ZERO_FD, 0, BLOCK)]) == {}


def test_read_ahead_follows_a_sequential_stream_of_a_log_only(
    tmp_path: Path, base_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel is asked to read the log bytes after a READ's log run only
    when the run continues the last one of its log (a stream: the next READs
    then find them cached), each byte once, never for the base or zeros; a
    failed hint is ignored."""
    asked: list[tuple[int, int, int]] = []

    def fadvise(fd: int, offset: int, length: int, advice: int) -> None:
        if advice != os.POSIX_FADV_DONTNEED:  # (the large write's own, once durable)
            assert advice == os.POSIX_FADV_WILLNEED
            asked.append((fd, offset, length))

    monkeypatch.setattr(store_mod.os, "posix_fadvise", fadvise)
    with Store(tmp_path / "s") as s:
        s.write(1, 0, b"x" * BIG, len(BASE))
        runs = _runs(s, base_fd, 0, BIG + BLOCK)  # a log run, then the base's
        (log_fd,) = s.log_maps(runs)
        step = READ_AHEAD // 4

        def read(pos: int) -> None:
            s.read_ahead([Run(base_fd, 0, BLOCK), Run(ZERO_FD, 0, BLOCK), Run(log_fd, pos, step)])

        read(0)  # the first READ of the log: no stream yet
        assert asked == []
        read(step)  # continues it: the next READ_AHEAD bytes
        assert asked == [(log_fd, 2 * step, READ_AHEAD)]
        read(2 * step)  # most of what follows asked for already
        assert len(asked) == 1
        read(3 * step)  # half of it not asked for yet: that half
        read(4 * step)
        assert asked[1:] == [(log_fd, 2 * step + READ_AHEAD, READ_AHEAD // 2)]
        asked.clear()
        read(10 * READ_AHEAD)  # a jump: random READs read nothing more
        read(3 * READ_AHEAD)
        assert asked == []
        for i in range(1, 6):  # strided READs (one READ every three): not a stream
            read(3 * READ_AHEAD + 3 * i * step)
        for i in range(5):  # a stream read backwards: the hints would be useless
            read(2 * READ_AHEAD - i * step)
        assert asked == []

        def failing(*_: int) -> None:
            raise OSError(errno.EINVAL, "no")

        monkeypatch.setattr(store_mod.os, "posix_fadvise", failing)
        read(3 * READ_AHEAD + step)  # ignored


def test_a_log_is_mapped_again_at_most_once_an_interval(
    tmp_path: Path, base_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A READ of bytes past the mapping within ``REMAP_INTERVAL`` of the last
    mapping copies (no mapping the size of the log made a READ); the next
    one past the interval maps the log again."""
    clock = [100.0]
    monkeypatch.setattr(store_mod.time, "monotonic", lambda: clock[0])
    with Store(tmp_path / "s") as s:
        s.write(1, 0, b"a" * BIG, len(BASE))
        runs = _runs(s, base_fd, 0, BIG)
        (log_fd,) = s.log_maps(runs)
        first = s.log_maps(runs)[log_fd]
        s.write(1, BIG, b"b" * BIG, len(BASE))  # past the mapping's end
        runs2 = _runs(s, base_fd, BIG, BIG)
        assert s.log_maps(runs2) == {}  # mapped lately: copied
        assert s.log_maps(runs)[log_fd] is first  # the older bytes still mapped
        clock[0] += store_mod.REMAP_INTERVAL
        again = s.log_maps(runs2)[log_fd]
        assert again is not first and _bytes({log_fd: again}, runs2) == b"b" * BIG


def test_a_mapping_on_the_loop_never_waits_for_the_read_lock(tmp_path: Path, base_fd: int) -> None:
    """Under ``nowait`` (a READ served on the loop) a log not mapped yet is
    left to the copying READ when another thread holds the read lock; with
    the lock free it is mapped."""
    with Store(tmp_path / "s") as s:
        s.write(1, 0, b"a" * BIG, len(BASE))
        runs = _runs(s, base_fd, 0, BIG)
        with read_lock_held(s), s.nowait():
            assert s.log_maps(runs) == {}
        with s.nowait():
            assert len(s.log_maps(runs)) == 1
