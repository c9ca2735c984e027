"""merge.sources and merge.cache: the pieces every layer reads and caches with.

Reference counting is what keeps a descriptor valid under a reader: these
tests evict, replace and close around open handles and check the bytes and
the descriptors.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from merge.attrs import attrs_from_stat
from merge.cache import TtlLru
from merge.extents import ExtentMap
from merge.namespace import InputChanged, Run
from merge.pancbt import read_pancbt
from merge.sources import FileSource, Handle, LinkSource, MergedSource, open_readonly
from tests.unit.merge_helpers import (
    FakeClock,
    build,
    naive_merged,
    open_fds,
    read_all,
    read_range,
    run_threads,
)


def file_source(path: Path, data: bytes) -> FileSource:
    path.write_bytes(data)
    return FileSource.open(str(path), lambda st: attrs_from_stat(st, ("x",)))


def test_file_source_runs_are_bounded_by_size_at_open(tmp_path: Path) -> None:
    src = file_source(tmp_path / "f", b"0123456789")
    with Handle.adopt(src) as h:
        assert h.runs(0, 100) == [Run(src.fd, 0, 10)]
        (run,) = h.runs(2, 3)  # made without Run's own __new__: a Run all the same
        assert type(run) is Run and (run.fd, run.pos, run.length) == (src.fd, 2, 3)
        assert h.runs(4, 3) == [Run(src.fd, 4, 3)]
        assert h.runs(10, 5) == [] and h.runs(11, 5) == [] and h.runs(3, 0) == []
        (tmp_path / "f").write_bytes(b"0123456789abcdef")  # grows in place
        assert h.size == 10 and not h.is_current()


def test_descriptor_stays_open_while_a_handle_holds_it(tmp_path: Path) -> None:
    before = open_fds()
    src = file_source(tmp_path / "f", b"abc")  # born reference: "the cache"
    reader = Handle(src)
    src.release()  # the cache evicts it
    assert src.fd in open_fds() and read_all(reader) == b"abc"
    reader.close()
    reader.close()  # idempotent
    assert open_fds() == before
    assert not src.try_retain()
    with pytest.raises(InputChanged):
        Handle(src)
    with pytest.raises(InputChanged):
        reader.runs(0, 1)


def test_source_handle_takes_a_reference_or_none_once_closed(tmp_path: Path) -> None:
    """``Source.handle`` is ``try_retain`` + ``Handle.adopt``: the same counts."""
    before = open_fds()
    src = file_source(tmp_path / "f", b"abc")
    h = src.handle()
    assert h is not None and src._refs == 2 and read_all(h) == b"abc"
    src.release()  # the cache's reference: the handle's keeps it open
    assert src.fd in open_fds() and not src.closed
    with h:
        pass
    h.close()  # closed twice: one reference dropped
    assert src.closed and open_fds() == before
    assert src.handle() is None


def test_a_handle_closed_by_many_threads_drops_one_reference(tmp_path: Path) -> None:
    """``_closed`` is tested and set under the source's lock: each handle,
    closed concurrently from several threads, drops exactly its reference."""
    import threading

    src = file_source(tmp_path / "f", b"abc")
    for _ in range(50):
        handles = [src.handle() for _ in range(8)]
        assert src._refs == 9
        gate = threading.Barrier(4)

        def close_all(hs: list, gate: threading.Barrier = gate) -> None:
            gate.wait()
            for h in hs:
                h.close()

        threads = [threading.Thread(target=close_all, args=(handles,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert src._refs == 1
    src.release()
    assert src.closed


@given(
    st.tuples(*[st.integers(0, 3)] * 5),
    st.tuples(*[st.integers(0, 3)] * 5),
)
def test_stamp_matches_is_the_five_numbers_equal(a: tuple, b: tuple) -> None:
    """``Stamp.matches`` compares field by field: the same as the tuples it used to
    build, the ctime included (a file rewritten in place with its mtime set back)."""
    from types import SimpleNamespace

    from merge.stamps import Stamp

    stamp = Stamp("p", *a)
    st_ = SimpleNamespace(
        st_dev=b[0], st_ino=b[1], st_size=b[2], st_mtime_ns=b[3], st_ctime_ns=b[4]
    )
    assert stamp.matches(st_) == (a == b)  # type: ignore[arg-type]


def test_evicted_descriptor_number_is_not_reused_under_a_reader(tmp_path: Path) -> None:
    """The hazard refcounting exists for: close, then another open takes the number."""
    cache: TtlLru[str, FileSource] = TtlLru(1, None, FakeClock(), on_evict=FileSource.release)
    a = file_source(tmp_path / "a", b"A" * 100)
    cache.put("a", a)
    reader = Handle(a)
    cache.put("b", file_source(tmp_path / "b", b"B" * 100))  # evicts a
    others = [open_readonly(str(tmp_path / "b")) for _ in range(5)]
    try:
        assert a.fd not in others
        assert read_all(reader) == b"A" * 100
    finally:
        for fd in others:
            os.close(fd)
        reader.close()
        cache.clear()


def test_open_readonly_falls_back_without_noatime_on_eperm(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x")
    seen: list[int] = []
    real_open = os.open

    def fake_open(p, flags, *a):
        seen.append(flags)
        if flags & os.O_NOATIME:
            raise PermissionError(1, "Operation not permitted")  # EPERM
        return real_open(p, flags, *a)

    monkeypatch.setattr(os, "open", fake_open)
    fd = open_readonly(str(path))
    os.close(fd)
    assert len(seen) == 2 and seen[0] & os.O_NOATIME and not seen[1] & os.O_NOATIME
    assert all(f & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC) == 0 for f in seen)


def test_open_readonly_refuses_non_regular_files(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    from merge.namespace import NotFound

    before = open_fds()
    with pytest.raises(NotFound):
        FileSource.open(str(tmp_path / "fifo"), lambda st: attrs_from_stat(st, ()))
    assert open_fds() == before


@given(
    st.binary(max_size=200),
    st.lists(st.tuples(st.integers(0, 60), st.binary(min_size=1, max_size=20)), max_size=5),
    st.integers(0, 250),
    st.integers(0, 300),
    st.integers(0, 300),
)
@settings(max_examples=150, deadline=None)
def test_merged_source_preadv_matches_naive(
    base: bytes, spec, disk_size: int, offset: int, count: int
) -> None:
    changes = []
    pos = 0
    for gap, data in spec:
        pos += gap
        if pos + len(data) > disk_size:
            break
        changes.append((pos, data if len(data) % 3 else len(data)))  # some ZERO
        pos += len(data)
    pancbt = build(changes, disk_size)
    with tempfile.TemporaryDirectory() as d:
        b = Handle.adopt(file_source(Path(d, "base"), base))
        o = Handle.adopt(file_source(Path(d, "pancbt"), pancbt))
        p = read_pancbt(lambda pos, n: pancbt[pos : pos + n], len(pancbt), "p", len(base))
        merged = MergedSource(b, o, ExtentMap(p.extents, disk_size, len(base)), b.attrs)
        want = naive_merged(base, pancbt)
        with Handle.adopt(merged) as h:
            assert read_range(h, offset, count) == want[offset : offset + count]
            # Composes: a link over the merged image reads the same.
            with Handle.adopt(LinkSource(Handle(merged), merged, merged.attrs)) as link:
                assert read_range(link, offset, count) == want[offset : offset + count]
        assert merged.closed and b._closed and o._closed


# --- the cache --------------------------------------------------------------------------------


def test_ttl_lru_bounds_and_expiry() -> None:
    clock = FakeClock()
    gone: list[int] = []
    cache: TtlLru[str, int] = TtlLru(2, 1.0, clock, on_evict=gone.append)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now the most recent
    cache.put("c", 3)  # evicts b
    assert cache.get("b") is None and gone == [2] and len(cache) == 2
    clock.advance(1.0)
    assert cache.get("a") is None and sorted(gone) == [1, 2]
    cache.put("c", 4)  # replaced
    assert 3 in gone
    cache.pop("c", 99)  # not its value: kept
    assert cache.get("c") == 4
    cache.clear()
    assert len(cache) == 0 and 4 in gone


def test_ttl_lru_keeps_the_key_it_holds_and_discards_in_one_go() -> None:
    """Memory: a key put again is replaced in place (the first key object stays, no
    copy per put) and moved last in the order of eviction; ``discard`` drops some."""
    clock = FakeClock()
    gone: list[int] = []
    cache: TtlLru[tuple, int] = TtlLru(2, 1.0, clock, on_evict=gone.append)
    first = ("d", "x".join("ab"))  # built, not a shared constant
    cache.put(first, 1)
    cache.put(("d", "b"), 2)
    again = ("d", "x".join("ab"))
    assert again == first and again is not first
    cache.put(again, 3)  # replaced: 1 goes, and ("d", "b") is now the oldest
    assert next(iter(cache._data)) == ("d", "b") and gone == [1]
    assert next(k for k in cache._data if k == first) is first
    cache.put(("d", "c"), 4)  # evicts ("d", "b"), not the key put again
    assert cache.get(first) == 3 and cache.get(("d", "b")) is None and gone == [1, 2]
    cache.discard([("d", "c"), ("d", "none"), first])
    assert len(cache) == 0 and gone == [1, 2, 4, 3]

    big: TtlLru[int, int] = TtlLru(100, None, clock)
    for i in range(10):
        big.put(i, i)
    table = big._data
    big.discard([0, 2, 4])  # under half: the same dict
    assert big._data is table
    big.discard([1, 3, 5, 6])  # most of it: copied, in the same order, all there
    assert big._data is not table and list(big._data) == [7, 8, 9]
    assert [big.get(i) for i in (7, 8, 9)] == [7, 8, 9] and big.get(6) is None


def test_ttl_lru_evicts_outside_its_lock() -> None:
    cache: TtlLru[int, int] = TtlLru(1, None, FakeClock())
    cache._on_evict = cache.get  # would deadlock if called under the lock
    cache.put(1, 1)
    cache.put(2, 2)
    assert cache.get(2) == 2


def test_ttl_lru_thread_safety() -> None:
    cache: TtlLru[int, int] = TtlLru(50, None, FakeClock())

    def work(seed: int) -> None:
        for i in range(2000):
            cache.put((seed * i) % 97, i)
            cache.get(i % 97)

    assert run_threads(work) == [] and len(cache) <= 50
