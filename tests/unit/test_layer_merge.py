"""merge.overlay alone, over a fake lower layer: rule 4, pancbt rule 8, caching."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from merge.attrs import fileid_for
from merge.namespace import AccessDenied, InputChanged, Kind, NotFound
from merge.overlay import MergeLayer
from merge.sources import MergedSource
from tests.unit.fake_layer import FakeLower, make_ctx
from tests.unit.merge_helpers import (
    FakeClock,
    build,
    naive_merged,
    read_all,
    read_range,
    run_threads,
    same_tick_rewrite,
    stamps_settled,
)

BASE = bytes(range(256)) * 40  # 10240 bytes
PANCBT = build([(0, b"head"), (5000, 100), (10_000, b"x" * 1000)], 12_000, base_size=len(BASE))


def stack(tmp_path: Path, tree: dict[str, bytes | None], clock: FakeClock | None = None, **kw):
    ctx = make_ctx(tmp_path / "root", clock)
    lower = FakeLower(ctx, tmp_path / "blobs", tree)
    return MergeLayer(lower, ctx, **kw), lower


def vm(base: bytes = BASE, pancbt: bytes = PANCBT) -> dict[str, bytes | None]:
    return {"d/disk-flat.vmdk": base, "d/disk-pancbt.vmdk": pancbt, "d/disk.vmdk": b"descriptor"}


def test_flat_beside_a_pancbt_is_merged(tmp_path: Path) -> None:
    ns, lower = stack(tmp_path, vm())
    listed = dict(ns.readdir(("d",)))
    assert set(listed) == {"disk-flat.vmdk", "disk-pancbt.vmdk", "disk.vmdk"}  # hiding is above
    attrs = ns.getattr(("d", "disk-flat.vmdk"))
    assert listed["disk-flat.vmdk"] == attrs
    assert attrs.size == 12_000 and attrs.kind == Kind.REG
    assert attrs.fileid == fileid_for(("d", "disk-flat.vmdk"))
    base_attrs = lower.lookup(("d", "disk-flat.vmdk")).attrs
    pancbt_attrs = lower.lookup(("d", "disk-pancbt.vmdk")).attrs
    assert attrs.mtime_ns == max(base_attrs.mtime_ns, pancbt_attrs.mtime_ns)
    with ns.open(("d", "disk-flat.vmdk")) as r:
        assert read_all(r) == naive_merged(BASE, PANCBT)
    with ns.open(("d", "disk.vmdk")) as r:
        assert read_all(r) == b"descriptor"


def test_mtime_is_the_later_input(tmp_path: Path) -> None:
    ns, lower = stack(tmp_path, vm())
    lower.set("d/disk-flat.vmdk", BASE)  # rewritten after the pancbt: later mtime
    lower_base = lower.lookup(("d", "disk-flat.vmdk")).attrs.mtime_ns
    assert ns.getattr(("d", "disk-flat.vmdk")).mtime_ns == lower_base


@given(
    st.binary(max_size=3000),
    st.lists(st.tuples(st.integers(0, 500), st.integers(1, 300), st.booleans()), max_size=6),
    st.integers(0, 4000),
    st.integers(0, 4500),
    st.integers(0, 4500),
)
@settings(max_examples=60, deadline=None)
def test_merged_bytes_match_naive_reference(
    base: bytes, spec, disk_size: int, offset: int, count: int
) -> None:
    changes: list[tuple[int, bytes | int]] = []
    pos = 0
    for gap, length, is_data in spec:
        pos += gap
        if pos + length > disk_size:
            break
        changes.append((pos, bytes([pos % 251 + 1]) * length if is_data else length))
        pos += length
    pancbt = build(changes, disk_size, base_size=len(base))
    with tempfile.TemporaryDirectory() as d:
        ns, lower = stack(Path(d), vm(base, pancbt))
        with ns.open(("d", "disk-flat.vmdk")) as r:
            assert r.size == disk_size
            assert (
                read_range(r, offset, count) == naive_merged(base, pancbt)[offset : offset + count]
            )
        ns.close()
        assert lower.open_handles == 0


@pytest.mark.parametrize(
    ("pancbt", "rule"),
    [
        (PANCBT[:-1], 3),
        (b"garbage" * 100, 1),
        (build([(0, b"x")], 100, base_size=len(BASE) + 1), 8),  # the base is not the one
    ],
)
def test_invalid_pancbt_withholds_the_flat(tmp_path: Path, pancbt: bytes, rule: int) -> None:
    ns, lower = stack(tmp_path, vm(pancbt=pancbt))
    listing = ns.listing(("d",))
    assert "disk-flat.vmdk" not in listing.entries and "disk-flat.vmdk" in listing.withheld
    with pytest.raises(NotFound):
        ns.getattr(("d", "disk-flat.vmdk"))
    with pytest.raises(NotFound):
        ns.open(("d", "disk-flat.vmdk"))
    [problem] = ns.ctx.problems.all()
    assert problem.storage_path.endswith("/d/disk-pancbt.vmdk") and f"rule {rule}" in problem.reason
    assert lower.open_handles == 0  # a rejected merge keeps no descriptor


def test_base_size_zero_is_not_checked(tmp_path: Path) -> None:
    ns, _ = stack(tmp_path, vm(pancbt=build([(0, b"x")], 100, base_size=0)))
    assert ns.getattr(("d", "disk-flat.vmdk")).size == 100


def test_no_pancbt_no_merge_and_no_flat_nothing_to_merge(tmp_path: Path) -> None:
    ns, _ = stack(
        tmp_path,
        {
            "a/x-flat.vmdk": b"plain",
            "b/y-pancbt.vmdk": PANCBT,
            "c/z-flat.vmdk/f": b"",
            "c/z-pancbt.vmdk": PANCBT,
        },
    )
    assert ns.getattr(("a", "x-flat.vmdk")).size == 5
    assert set(dict(ns.readdir(("b",)))) == {"y-pancbt.vmdk"}
    assert ns.getattr(("c", "z-flat.vmdk")).kind == Kind.DIR  # a directory is not a base
    assert ns.ctx.problems.all() == []


def test_prepared_once_and_rechecked_at_most_every_second(tmp_path: Path) -> None:
    clock = FakeClock()
    ns, lower = stack(tmp_path, vm(), clock)
    for _ in range(10):
        ns.getattr(("d", "disk-flat.vmdk"))
        with ns.open(("d", "disk-flat.vmdk")) as r:
            read_range(r, 0, 10)
    assert lower.calls["open"] == 2  # base and pancbt, once


def test_replaced_pancbt_is_seen_after_the_recheck(tmp_path: Path) -> None:
    clock = FakeClock()
    ns, lower = stack(tmp_path, vm(), clock)
    old = ns.open(("d", "disk-flat.vmdk"))
    new_pancbt = build([(0, b"NEW!")], 20_000, base_size=len(BASE))
    lower.set("d/disk-pancbt.vmdk", new_pancbt)
    assert ns.getattr(("d", "disk-flat.vmdk")).size == 12_000  # not rechecked yet
    clock.advance(1.0)
    assert ns.getattr(("d", "disk-flat.vmdk")).size == 20_000
    with ns.open(("d", "disk-flat.vmdk")) as r:
        assert read_all(r) == naive_merged(BASE, new_pancbt)
    assert read_all(old) == naive_merged(BASE, PANCBT)  # still its own inputs, unmixed
    old.close()
    ns.close()
    assert lower.open_handles == 0


def test_pancbt_rewritten_in_its_stamp_s_tick_is_seen_after_the_tick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pancbt rewritten in place in the same tick of its file system's clock as
    the read that parsed it keeps every number of its stat (simulated here: its
    new bytes, its old stat).  The merge parsed from it is prepared again once
    that tick is surely over (``merge.stamps``: a racy stamp), not kept for good."""
    clock = FakeClock()
    ns, lower = stack(tmp_path, vm(), clock)
    with ns.open(("d", "disk-flat.vmdk")) as r:
        assert read_all(r) == naive_merged(BASE, PANCBT)
    blob = lower.tree[("d", "disk-pancbt.vmdk")]
    assert blob is not None
    moved = build([(100, b"head"), (6000, 100), (9000, b"x" * 1000)], 12_000, base_size=len(BASE))
    assert len(moved) == len(PANCBT) and moved != PANCBT
    same_tick_rewrite(monkeypatch, blob, moved)
    stamps_settled(monkeypatch)  # the tick over
    clock.advance(1.0)
    with ns.open(("d", "disk-flat.vmdk")) as r:
        assert read_all(r) == naive_merged(BASE, moved)
    opened = lower.calls["open"]
    for _ in range(3):  # prepared under settled stamps: not again
        clock.advance(1.0)
        with ns.open(("d", "disk-flat.vmdk")) as r:
            assert read_all(r) == naive_merged(BASE, moved)
    assert lower.calls["open"] == opened


def test_replaced_base_is_seen_after_the_recheck(tmp_path: Path) -> None:
    clock = FakeClock()
    ns, lower = stack(tmp_path, vm(), clock)
    ns.getattr(("d", "disk-flat.vmdk"))
    lower.set("d/disk-flat.vmdk", BASE[::-1])  # same size: rule 8 still holds
    clock.advance(1.0)
    with ns.open(("d", "disk-flat.vmdk")) as r:
        assert read_all(r) == naive_merged(BASE[::-1], PANCBT)


def test_base_that_no_longer_matches_is_withheld_after_the_recheck(tmp_path: Path) -> None:
    clock = FakeClock()
    ns, lower = stack(tmp_path, vm(), clock)
    ns.getattr(("d", "disk-flat.vmdk"))
    lower.set("d/disk-flat.vmdk", BASE + b"more")
    clock.advance(1.0)
    with pytest.raises(NotFound):
        ns.getattr(("d", "disk-flat.vmdk"))
    lower.set("d/disk-flat.vmdk", BASE)  # put back: shown again
    clock.advance(1.0)
    assert ns.getattr(("d", "disk-flat.vmdk")).size == 12_000


def test_eviction_under_a_reader_keeps_its_descriptors(tmp_path: Path) -> None:
    tree = vm() | {"e/disk-flat.vmdk": BASE, "e/disk-pancbt.vmdk": PANCBT}
    ns, lower = stack(tmp_path, tree, cache_size=1)
    reader = ns.open(("d", "disk-flat.vmdk"))
    with ns.open(("e", "disk-flat.vmdk")) as other:  # evicts d's merge
        read_all(other)
    assert lower.open_handles == 4  # d's inputs (the reader's only now) and e's (the cache's)
    assert read_all(reader) == naive_merged(BASE, PANCBT)
    reader.close()
    assert lower.open_handles == 2  # e's merge, in the cache
    ns.close()
    assert lower.open_handles == 0


def test_unchanged_inputs_same_bytes_across_rechecks_and_evictions(tmp_path: Path) -> None:
    clock = FakeClock()
    tree = vm() | {"e/disk-flat.vmdk": BASE, "e/disk-pancbt.vmdk": PANCBT}
    ns, _ = stack(tmp_path, tree, clock, cache_size=1)
    want = naive_merged(BASE, PANCBT)
    got = bytearray()
    for i in range(0, 12_000, 1000):
        with ns.open(("d", "disk-flat.vmdk")) as r:
            got += read_range(r, i, 1000)
        clock.advance(0.7)
        ns.getattr(("e", "disk-flat.vmdk"))  # evicts d now and then
    assert bytes(got) == want


def test_inputs_that_keep_changing_raise_input_changed(tmp_path: Path, monkeypatch) -> None:
    ns, lower = stack(tmp_path, vm())
    monkeypatch.setattr(MergedSource, "is_current", lambda self: False)
    with pytest.raises(InputChanged):
        ns.open(("d", "disk-flat.vmdk"))
    assert lower.open_handles == 0


def test_thread_safety_with_evictions(tmp_path: Path) -> None:
    tree: dict[str, bytes | None] = {}
    for i in range(6):
        tree |= {f"v{i}/disk-flat.vmdk": BASE, f"v{i}/disk-pancbt.vmdk": PANCBT}
    ns, lower = stack(tmp_path, tree, cache_size=2)
    want = naive_merged(BASE, PANCBT)

    def work(seed: int) -> None:
        for n in range(60):
            path = (f"v{(seed + n) % 6}", "disk-flat.vmdk")
            assert ns.getattr(path).size == 12_000
            with ns.open(path) as r:
                off = (seed * 997 + n * 131) % 11_000
                assert read_range(r, off, 1000) == want[off : off + 1000]

    assert run_threads(work) == []
    ns.close()
    assert lower.open_handles == 0


def test_unreadable_input_withholds_that_flat_only(tmp_path: Path, monkeypatch) -> None:
    ns, lower = stack(tmp_path, vm() | {"d/other-flat.vmdk": BASE, "d/other-pancbt.vmdk": PANCBT})
    real_open = lower.open_file

    def refuse(path):
        if path[-1] == "disk-pancbt.vmdk":
            raise AccessDenied("/".join(path))
        return real_open(path)

    monkeypatch.setattr(lower, "open_file", refuse)
    listing = ns.listing(("d",))
    assert "other-flat.vmdk" in listing.entries and "disk-flat.vmdk" in listing.withheld
    with pytest.raises(AccessDenied):
        ns.getattr(("d", "disk-flat.vmdk"))
    [problem] = ns.ctx.problems.all()
    assert "AccessDenied" in problem.reason
    ns.close()
    assert lower.open_handles == 0
