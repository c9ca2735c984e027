"""merge.create: ``merged(base, create(base, new)) == new``, streaming.

The merge is done by the independent ``merge_helpers.naive_merged`` and,
once, through the whole namespace; images are random with runs of zeros,
grown, shrunk, empty, and not multiples of the block size.
"""

from __future__ import annotations

import itertools
import os
import random
import tempfile
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from merge import build_namespace
from merge.create import create_pancbt, image_changes
from merge.pancbt import DataChange, ZeroChange, read_pancbt
from tests.unit.merge_helpers import DATA, ZERO, decode, naive_merged, read_all, write, write_link


def create(d: Path, base: bytes, new: bytes, block_size: int = 512) -> bytes:
    write(d / "base.img", base)
    write(d / "new.img", new)
    create_pancbt(
        str(d / "base.img"), str(d / "new.img"), str(d / "out-pancbt.vmdk"), block_size=block_size
    )
    return (d / "out-pancbt.vmdk").read_bytes()


@st.composite
def image_pairs(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A base, and a new image made from it: changed, zeroed, grown or shrunk."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    base = bytearray(rng.randbytes(draw(st.integers(0, 6000))))
    for _ in range(draw(st.integers(0, 3))):  # zero runs in the base
        at = rng.randrange(len(base) + 1)
        base[at : at + rng.randrange(2000)] = bytes(len(base[at : at + 2000]))
    new = bytearray(base)
    new_size = draw(
        st.sampled_from([len(base), len(base) + 1, len(base) + 3000, len(base) // 2, 0])
    )
    del new[new_size:]
    new += bytes(new_size - len(new))
    for _ in range(draw(st.integers(0, 6))):
        if not new:
            break
        at = rng.randrange(len(new))
        n = rng.randrange(1, 1500)
        if rng.random() < 0.4:
            new[at : at + n] = bytes(len(new[at : at + n]))
        else:
            new[at : at + n] = rng.randbytes(len(new[at : at + n]))
    return bytes(base), bytes(new)


@given(image_pairs(), st.sampled_from([512, 1024, 4096]))
@settings(max_examples=120, deadline=None)
def test_round_trip(pair: tuple[bytes, bytes], block_size: int) -> None:
    base, new = pair
    with tempfile.TemporaryDirectory() as d:
        pancbt = create(Path(d), base, new, block_size)
    assert naive_merged(base, pancbt) == new
    p = read_pancbt(lambda pos, n: pancbt[pos : pos + n], len(pancbt), "p", len(base))
    assert p.header.disk_size == len(new) and p.header.base_size == len(base)
    assert p.header.block_size == block_size
    # Coalesced: no two adjacent extents of one kind.
    _, entries = decode(pancbt)
    for a, b in itertools.pairwise(entries):
        assert not (a[0] + a[1] == b[0] and a[3] == b[3])


def test_zero_blocks_become_zero_extents_and_equal_blocks_nothing(tmp_path: Path) -> None:
    base = b"\1" * 4096 + b"\2" * 4096 + b"\3" * 4096
    new = b"\1" * 4096 + bytes(4096) + b"\4" * 100 + b"\3" * 3996
    _, entries = decode(create(tmp_path, base, new, block_size=4096))
    assert entries == [(4096, 4096, 0, ZERO), (8192, 4096, 512, DATA)]


def test_grown_disk_stores_only_its_non_zero_tail(tmp_path: Path) -> None:
    base = b"\1" * 1024
    new = base + bytes(10_000) + b"tail"
    pancbt = create(tmp_path, base, new)
    _, entries = decode(pancbt)
    assert entries == [(10_752, 276, 512, DATA)]  # the last, short block
    assert naive_merged(base, pancbt) == new


def test_shrunk_disk_needs_no_extent(tmp_path: Path) -> None:
    base = os.urandom(5000)
    pancbt = create(tmp_path, base, base[:3000])
    assert decode(pancbt) == (3000, [])


def test_identical_images_make_an_empty_pancbt(tmp_path: Path) -> None:
    base = os.urandom(10_000)
    assert decode(create(tmp_path, base, base)) == (10_000, [])


def test_image_changes_streams_in_order() -> None:
    import io

    base = io.BytesIO(b"a" * 1024)
    new = io.BytesIO(b"a" * 512 + b"b" * 512 + bytes(512))
    got = list(image_changes(base, new, base_size=1024, new_size=1536, block_size=512))
    assert got == [DataChange(512, b"b" * 512)]
    new = io.BytesIO(bytes(1024))
    got = list(
        image_changes(io.BytesIO(b"a" * 1024), new, base_size=1024, new_size=1024, block_size=512)
    )
    assert got == [ZeroChange(0, 512), ZeroChange(512, 512)]


def test_memory_does_not_grow_with_image_size(tmp_path: Path) -> None:
    size = 64 * 1024 * 1024
    with open(tmp_path / "base.img", "wb") as f:
        f.truncate(size)  # sparse: no disk space used
    with open(tmp_path / "new.img", "wb") as f:
        f.truncate(size)
        for i in range(0, size, 1024 * 1024):  # one changed block a MiB
            f.seek(i)
            f.write(b"x" * 512)
    tracemalloc.start()
    try:
        header = create_pancbt(
            str(tmp_path / "base.img"),
            str(tmp_path / "new.img"),
            str(tmp_path / "out"),
            block_size=512,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert header.extent_count == 64
    assert peak < 8 * 1024 * 1024, peak  # a few chunks, not the images


def test_progress_and_output_replaced_atomically(tmp_path: Path) -> None:
    seen: list[int] = []
    write(tmp_path / "b", os.urandom(3 * 1024 * 1024 + 5))
    write(tmp_path / "n", os.urandom(2 * 1024 * 1024))
    write(tmp_path / "out", b"old")
    create_pancbt(
        str(tmp_path / "b"), str(tmp_path / "n"), str(tmp_path / "out"), progress=seen.append
    )
    assert sum(seen) == 2 * 1024 * 1024
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "n", "out"]  # no temporary left
    assert os.stat(tmp_path / "out").st_mode & 0o044  # readable by the server's clients


def test_failed_create_leaves_nothing(tmp_path: Path) -> None:
    write(tmp_path / "b", b"x")
    with pytest.raises(ValueError):
        create_pancbt(str(tmp_path / "b"), str(tmp_path / "b"), str(tmp_path / "out"), block_size=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_created_pancbt_served_by_the_namespace(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    base = os.urandom(100_000)
    new = bytearray(base) + os.urandom(5000)
    new[500:4000] = bytes(3500)
    write(storage / "d1" / "vm-flat.vmdk", base)
    write(tmp_path / "new.img", bytes(new))
    (storage / "d2").mkdir()
    create_pancbt(
        str(storage / "d1" / "vm-flat.vmdk"),
        str(tmp_path / "new.img"),
        str(storage / "d2" / "vm-pancbt.vmdk"),
    )
    write_link(storage / "d2" / "vm-flat.vmdk.json", "../d1/vm-flat.vmdk")
    with build_namespace(str(storage)).open(("d2", "vm-flat.vmdk")) as r:
        assert read_all(r) == bytes(new)
