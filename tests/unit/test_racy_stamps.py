"""merge.stamps' racy stamps through the real stack (Passthrough up to the memo).

A storage file rewritten in place within the tick of its file system's clock
in which it was read keeps every number of its stat (simulated: its new bytes,
its old stat, in every ``stat``, ``fstat`` and folder scan).  What was parsed
from it, a link's target or a pancbt's extents, is read again once that tick
is surely over, whatever the caches above held; a file that changed long ago
(or only had its mtime set, in the future or the past) is read once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from merge.stack import build_stack
from tests.unit.merge_helpers import (
    FakeClock,
    build,
    naive_merged,
    read_all,
    same_tick_rewrite,
    stamps_settled,
)

BASE = bytes(range(256)) * 40
PANCBT = build([(0, b"head"), (5000, 100), (10_000, b"x" * 1000)], 12_000, base_size=len(BASE))
MOVED = build([(100, b"head"), (6000, 100), (9000, b"x" * 1000)], 12_000, base_size=len(BASE))


def link(target: str) -> bytes:
    return json.dumps({"smartmotion": 1, "target": target}).encode()


@pytest.mark.parametrize("watch", [False, True])
def test_a_link_rewritten_in_its_tick_is_followed_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, watch: bool
) -> None:
    root = tmp_path / "storage"
    (root / "c").mkdir(parents=True)
    (root / "c" / "a").write_bytes(b"A")
    (root / "c" / "b").write_bytes(b"B")
    (root / "c" / "l.json").write_bytes(link("a"))  # just written: racy when read now
    clock = FakeClock()
    stack = build_stack(str(root), clock=clock, watch_folders=watch)
    try:
        with stack.memo.open(("c", "l")) as r:
            assert read_all(r) == b"A"
        same_tick_rewrite(monkeypatch, root / "c" / "l.json", link("b"))
        stamps_settled(monkeypatch)
        seen = []
        for _ in range(3):
            clock.advance(5.0)  # past every ttl and recheck
            with stack.memo.open(("c", "l")) as r:
                seen.append(read_all(r))
        assert seen == [b"B"] * 3
    finally:
        stack.close()


def test_a_pancbt_rewritten_in_its_tick_is_merged_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "storage"
    (root / "d").mkdir(parents=True)
    (root / "d" / "disk-flat.vmdk").write_bytes(BASE)
    (root / "d" / "disk-pancbt.vmdk").write_bytes(PANCBT)
    clock = FakeClock()
    stack = build_stack(str(root), clock=clock)
    try:
        with stack.memo.open(("d", "disk-flat.vmdk")) as r:
            assert read_all(r) == naive_merged(BASE, PANCBT)
        same_tick_rewrite(monkeypatch, root / "d" / "disk-pancbt.vmdk", MOVED)
        stamps_settled(monkeypatch)
        for _ in range(3):
            clock.advance(5.0)
            with stack.memo.open(("d", "disk-flat.vmdk")) as r:
                assert read_all(r) == naive_merged(BASE, MOVED)
    finally:
        stack.close()


@pytest.mark.parametrize("year", [2020, 2100])
def test_a_file_whose_mtime_was_set_is_read_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, year: int
) -> None:
    """Only the ctime makes a file racy: an mtime set in the past or the future
    (``touch -d``, an archive, another host's clock) does not, once the ctime's
    tick is over, keep it from the caches."""
    root = tmp_path / "storage"
    (root / "c").mkdir(parents=True)
    (root / "c" / "b.json").write_bytes(b'{"not": "a link"}')
    t = (1_600_000_000 if year == 2020 else 4_102_444_800) * 10**9
    os.utime(root / "c" / "b.json", ns=(t, t))
    stamps_settled(monkeypatch)
    clock = FakeClock()
    stack = build_stack(str(root), clock=clock, watch_folders=False)
    opened: list[tuple[str, ...]] = []
    real_open = stack.passthrough.open_file

    def counting(path):  # type: ignore[no-untyped-def]
        opened.append(path)
        return real_open(path)

    monkeypatch.setattr(stack.passthrough, "open_file", counting)
    try:
        for _ in range(6):
            clock.advance(0.3)  # within the ttl and past it: the layers' own caches
            assert stack.links.lookup(("c", "b.json")).attrs.mtime_ns == t
        assert len(opened) == 1
    finally:
        stack.close()
