"""merge.shared: listings shared by the server's processes never outlive rule 8's deadline.

Two stacks over one storage and one shared folder stand for two worker
processes (one clock, as ``CLOCK_MONOTONIC`` is one for every process of a
host).  What either serves must be what the storage held at some moment of
the last ``ttl`` (the deadline a single process keeps a listing until); a
damaged, foreign or missing file must only cost a scan; the folder stays
bounded.
"""

from __future__ import annotations

import dataclasses
import os
import random
from array import array
from pathlib import Path

import pytest

from merge.namespace import Attrs
from merge.shared import (
    _ENTRIES_HEAD,
    _ENTRIES_MAGIC,
    SharedListings,
    _digest,
    _frame,
    folder_stamp,
)
from merge.stack import Stack, build_stack
from tests.unit.merge_helpers import FakeClock, write, write_link

TTL = 1.0


def shared(folder: Path, **kw) -> SharedListings:
    return SharedListings(str(folder), min_entries=1, boot="boot-1", **kw)


def workers(tmp_path: Path, clock: FakeClock, n: int = 2, **kw) -> list[Stack]:
    return [
        build_stack(
            str(tmp_path / "storage"),
            clock=clock,
            ttl=TTL,
            shared_listings=shared(tmp_path / "listings", **kw),
        )
        for _ in range(n)
    ]


def truth(tmp_path: Path) -> dict[str, Attrs]:
    """The folder as the stack presents it now, with no cache of any age."""
    s = build_stack(str(tmp_path / "storage"))
    try:
        return without_atime(s.top.readdir(("big",)))
    finally:
        s.close()


def without_atime(items) -> dict[str, Attrs]:
    """Listing a folder moves its atime (relatime): not what is compared."""
    return {n: dataclasses.replace(a, atime_ns=0) for n, a in items}


def make_big(root: Path, n: int = 30) -> None:
    for i in range(n):
        write(root / "big" / f"f{i:03d}", b"x" * i)
    write_link(root / "big" / "link.json", "f001")


def change(root: Path, rng: random.Random) -> None:
    big = root / "big"
    what = rng.randrange(5)
    name = f"f{rng.randrange(40):03d}"
    if what == 0:  # rewritten in place: the folder's own stamp does not move
        if (big / name).exists():
            (big / name).write_bytes(b"y" * rng.randrange(100))
    elif what == 1:  # new or gone
        if (big / name).exists():
            (big / name).unlink()
        else:
            write(big / name, b"new")
    elif what == 2:  # touched
        if (big / name).exists():
            os.utime(big / name, ns=(rng.randrange(1, 10**18), rng.randrange(1, 10**18)))
    elif what == 3:  # a link re-pointed (its target's attributes shown)
        write_link(big / "link.json", rng.choice(["f001", "f002", "missing"]))
    else:  # replaced
        write(big / ".tmp", b"replaced" * rng.randrange(1, 4))
        os.replace(big / ".tmp", big / name)


@pytest.mark.parametrize("seed", range(6))
def test_a_shared_listing_is_never_older_than_the_ttl(tmp_path: Path, seed: int) -> None:
    make_big(tmp_path / "storage")
    clock = FakeClock()
    stacks = workers(tmp_path, clock)
    rng = random.Random(seed)
    history = [(clock(), truth(tmp_path))]  # (since when, the folder's presentation)
    shared_reads = 0
    for _ in range(300):
        op = rng.randrange(6)
        if op == 0:
            change(tmp_path / "storage", rng)
            history.append((clock(), truth(tmp_path)))
        elif op == 1:
            clock.advance(rng.choice([0.2, 0.5, 1.0]))
        else:
            s = rng.choice(stacks)
            loads = count_loads(s)
            got = without_atime(s.top.readdir(("big",)))
            shared_reads += loads()
            # What the storage held at some moment since now - ttl.
            oldest = max(i for i, (t, _) in enumerate(history) if t <= clock() - TTL or i == 0)
            assert got in [v for _, v in history[oldest:]]
    assert shared_reads > 0  # the other process's listings were used
    for s in stacks:
        s.close()


def count_loads(s: Stack):
    """How many listings ``s`` took from the shared folder since this call."""
    shared_obj = s.memo._shared
    assert shared_obj is not None
    real = shared_obj.load
    hits = [0]

    def load(*args):
        got = real(*args)
        hits[0] += got is not None
        return got

    shared_obj.load = load  # type: ignore[method-assign]
    return lambda: hits[0]


def test_the_other_process_reads_the_listing_instead_of_scanning(tmp_path, monkeypatch) -> None:
    make_big(tmp_path / "storage")
    clock = FakeClock()
    a, b = workers(tmp_path, clock)
    listed = a.top.readdir(("big",))
    monkeypatch.setattr(b.passthrough, "listing", lambda p: pytest.fail("scanned"))
    got = b.top.readdir(("big",))
    assert got == listed and got is not listed
    clock.advance(0.5)
    assert b.top.readdir(("big",)) is got  # its own memo, until the writer's deadline
    clock.advance(0.6)  # past it: the writer's listing holds no more; b scans
    monkeypatch.undo()
    again = b.top.readdir(("big",))
    assert again is got  # its own scan found the same entries: the object it handed out
    # a renews from b's listing of the same content: the very object it held
    assert a.top.readdir(("big",)) is listed
    for s in (a, b):
        s.close()


def test_an_entry_added_or_removed_shows_at_once_through_the_other(tmp_path) -> None:
    root = tmp_path / "storage"
    make_big(root)
    clock = FakeClock()
    a, b = workers(tmp_path, clock)
    a.top.readdir(("big",))
    write(root / "big" / "added", b"new")
    (root / "big" / "f003").unlink()
    names = dict(b.top.readdir(("big",)))  # the folder's stamp moved: b scans
    assert "added" in names and "f003" not in names
    for s in (a, b):
        s.close()


def damage_truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])


def damage_flip(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x40
    p.write_bytes(bytes(data))


DAMAGE = {
    "truncated": damage_truncate,
    "a byte flipped": damage_flip,
    "empty": lambda p: p.write_bytes(b""),
    "garbage": lambda p: p.write_bytes(os.urandom(300)),
    "gone": lambda p: p.unlink(),
    "a folder": lambda p: (p.unlink(), p.mkdir()),
}


@pytest.mark.parametrize("kind", [".head", ".entries"])
@pytest.mark.parametrize("how", list(DAMAGE))
def test_a_damaged_file_costs_a_scan_never_a_wrong_answer(tmp_path, kind: str, how: str) -> None:
    make_big(tmp_path / "storage")
    clock = FakeClock()
    a, b = workers(tmp_path, clock)
    listed = without_atime(a.top.readdir(("big",)))
    (victim,) = (tmp_path / "listings").glob("*" + kind)
    DAMAGE[how](victim)
    assert without_atime(b.top.readdir(("big",))) == listed
    assert (
        b.memo._shared is not None and b.memo._shared.load(("big",), clock(), (0, 0, 0, 0)) is None
    )
    for s in (a, b):
        s.close()


def test_another_boot_or_folder_stamp_is_not_used(tmp_path: Path) -> None:
    make_big(tmp_path / "storage")
    clock = FakeClock()
    (a,) = workers(tmp_path, clock, 1)
    a.top.readdir(("big",))
    other_boot = SharedListings(str(tmp_path / "listings"), min_entries=1, boot="boot-2")
    from merge.shared import folder_stamp

    stamp = folder_stamp(str(tmp_path / "storage" / "big"))
    assert stamp is not None
    assert other_boot.load(("big",), clock(), stamp) is None
    same_boot = shared(tmp_path / "listings")
    assert same_boot.load(("big",), clock(), stamp) is not None
    assert same_boot.load(("big",), clock(), (stamp[0], stamp[1], stamp[2] + 1, stamp[3])) is None
    assert same_boot.load(("big",), clock() + TTL, stamp) is None  # past the deadline
    assert same_boot.load(("other",), clock(), stamp) is None
    a.close()


def test_small_listings_are_not_shared(tmp_path: Path) -> None:
    make_big(tmp_path / "storage")
    s = build_stack(
        str(tmp_path / "storage"),
        shared_listings=SharedListings(str(tmp_path / "listings"), min_entries=1000, boot="b"),
    )
    s.top.readdir(("big",))
    assert list((tmp_path / "listings").iterdir()) == []
    s.close()


def test_the_folder_is_bounded(tmp_path: Path) -> None:
    root = tmp_path / "storage"
    for d in range(12):
        write(root / f"d{d}" / "f", b"x")
    clock = FakeClock()
    folder = tmp_path / "listings"
    folder.mkdir()
    old_tmp = folder / ".123.456.tmp"
    old_tmp.write_bytes(b"left by a process that died")
    os.utime(old_tmp, (1, 1))
    s = build_stack(str(root), clock=clock, shared_listings=shared(folder, files=4, max_age=60.0))
    for round_ in range(3):
        for d in range(12):
            write(root / f"d{d}" / "f", b"y" * (round_ + 1))  # new content: new entries files
            s.top.readdir((f"d{d}",))
        clock.advance(TTL)
    names = [p.name for p in folder.iterdir()]
    assert len([n for n in names if n.endswith(".entries")]) <= 4
    assert len([n for n in names if n.endswith(".head")]) <= 5  # pruned when entries are written
    assert not old_tmp.exists()
    s.close()


def test_an_unwritable_folder_only_turns_sharing_off(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    sl = SharedListings(str(blocker / "listings"), boot="b")
    assert not sl.enabled


def test_bytes_that_do_not_match_their_digest_are_not_unpacked(tmp_path: Path) -> None:
    """Well-formed but altered: entries under another content's name, a head's deadline moved."""
    import marshal

    make_big(tmp_path / "storage")
    clock = FakeClock()
    a, b = workers(tmp_path, clock)
    listed = without_atime(a.top.readdir(("big",)))
    (entries,) = (tmp_path / "listings").glob("*.entries")
    good = entries.read_bytes()
    head_size = _ENTRIES_HEAD
    names, kinds, packed = marshal.loads(good[head_size:])
    ints = array("q", packed)
    ints[0] += 1  # the first entry's size
    altered = marshal.dumps((names, kinds, ints.tobytes()))
    assert len(altered) == len(good) - head_size
    entries.write_bytes(good[:head_size] + altered)  # the CRC is the old content's
    assert without_atime(b.top.readdir(("big",))) == listed
    # Whole and checked, but of another content: the digest it names is not the head's.
    entries.write_bytes(b"".join(_frame(_ENTRIES_MAGIC, _digest(altered), altered)))
    b2 = workers(tmp_path, clock, 1)[0]
    stamp = folder_stamp(str(tmp_path / "storage" / "big"))
    assert stamp is not None and b2.memo._shared is not None
    assert b2.memo._shared.load(("big",), clock(), stamp) is None
    assert without_atime(b2.top.readdir(("big",))) == listed
    b2.close()
    entries.write_bytes(good)
    (head,) = (tmp_path / "listings").glob("*.head")
    data = head.read_bytes()
    boot, path, until, stamp, digest = marshal.loads(data[8 + 16 :])
    head.write_bytes(data[: 8 + 16] + marshal.dumps((boot, path, until + 100, stamp, digest)))
    c = workers(tmp_path, clock, 1)[0]
    clock.advance(TTL)  # past the real deadline; the forged one is not believed
    assert c.memo._shared is not None
    stamp_now = folder_stamp(str(tmp_path / "storage" / "big"))
    assert stamp_now is not None
    assert c.memo._shared.load(("big",), clock(), stamp_now) is None
    for s in (a, b, c):
        s.close()
