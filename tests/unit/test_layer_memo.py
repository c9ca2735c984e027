"""merge.memo: each path's answer kept while it holds, and the listings' identity.

The memo must change nothing but the speed: the main test here runs random
calls and storage changes against two stacks over one storage, one with the
memo on top and one without, and requires the same answers (or, rarely, since
an expired answer can be renewed without walking the layers, an answer the
storage gave within the ttl: rule 8).  The others pin
down its rules: how long an answer is kept, when it is dropped at once,
what is never kept, that it holds no descriptor, and its bounds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import os
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from merge import memo
from merge.attrs import attrs_of, fileid_for, ids_in
from merge.layer import Entry, Layer, Stored, stored_entry, stored_in
from merge.memo import MemoLayer
from merge.namespace import AccessDenied, Attrs, Kind, NamespaceError, NotADirectory, NotFound
from merge.smartmotion import LinkDoc, parse_link
from merge.stack import Stack, build_stack
from tests.unit.fake_layer import FakeLower, make_ctx
from tests.unit.merge_helpers import (
    KIB,
    FakeClock,
    build,
    leaked_fds,
    naive_merged,
    open_fds,
    read_all,
    run_threads,
    write,
    write_link,
)
from tests.unit.test_namespace_rules import backups

MERGED = ("d02", "web01", "web01-flat.vmdk")  # link -> merged -> link -> merged -> base


@pytest.fixture
def stacks(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """Stacks built with ``new(**options)``, closed at the end, leaving no descriptor open.

    Leaked: a descriptor open at the end that was not at the start.  Not the two
    sets equal: an earlier test's object collected meanwhile closes one of its
    own (seen when this file ran after others)."""
    made: list[Stack] = []
    gc.collect()
    before = open_fds()

    def new(root: Path | None = None, **kw) -> Stack:
        s = build_stack(str(root or tmp_path / "storage"), **kw)
        made.append(s)
        return s

    yield new
    for s in made:
        s.close()
    leaked = leaked_fds(before)
    assert not leaked, f"descriptors leaked: {leaked}"


def storage(root: Path) -> list[bytes]:
    """Three days of backups (d02's flat: a link to d01's merged image), and plain files."""
    disks = backups(root, 3, size=32 * KIB)
    write(root / "plain" / "a.txt", b"a")
    write(root / "plain" / "b.json", b'{"not": "a link"}')
    write_link(root / "plain" / "to-a.json", "a.txt")
    write_link(root / "plain" / "to-merged.json", "/d02/web01/web01-flat.vmdk", name="disk")
    os.symlink("d02", root / "latest")
    return disks


def count_calls(monkeypatch: pytest.MonkeyPatch, layer: Layer, name: str) -> list[object]:
    """Record each call of ``layer.name`` (its argument) in the returned list."""
    calls: list[object] = []
    real = getattr(layer, name)

    def counted(*args):
        calls.append(args[0] if args else None)
        return real(*args)

    monkeypatch.setattr(layer, name, counted)
    return calls


def fake_stack(tmp_path: Path, tree: dict[str, bytes | None]) -> tuple[MemoLayer, FakeLower]:
    ctx = make_ctx(tmp_path / "root")
    lower = FakeLower(ctx, tmp_path / "blobs", tree)
    return MemoLayer(lower, ctx), lower


def outcome(call: Callable[[], object]) -> object:
    """The answer of ``call``, or the class of its error, for comparing two stacks.

    Access times are left out: listing a directory moves its atime
    (relatime), so one stack's listing changes what the other then reads.
    """
    try:
        got = call()
    except NamespaceError as e:
        return ("error", type(e).__name__)
    if isinstance(got, Attrs):
        got = dataclasses.replace(got, atime_ns=0)
    elif isinstance(got, dict):
        got = {n: dataclasses.replace(a, atime_ns=0) for n, a in got.items()}
    return ("ok", got)


# --- the memo changes nothing but the speed ------------------------------------------


PATHS = [
    (),
    ("d00",),
    ("d00", "web01", "web01-flat.vmdk"),
    ("d01", "web01", "web01-flat.vmdk"),
    MERGED,
    ("d02", "web01", "web01-pancbt.vmdk"),
    ("d02", "web01", "web01-flat.vmdk.json"),
    ("d02", "web01", "web01.vmx"),
    ("d02", "web01", "web01.vmx", "below-a-file"),
    ("latest", "web01", "web01-flat.vmdk"),
    ("plain", "a.txt"),
    ("plain", "b.json"),
    ("plain", "to-a"),
    ("plain", "disk"),
    ("plain", "new"),
    ("plain", "new-link"),
    ("plain", "loop-a"),
    ("plain", "loop-b"),
    ("plain", "sub", "x"),
    ("plain", "deep", "a", "b", "f"),
    ("latest", "a.txt"),
    ("nowhere", "x"),
]
DIRS = [
    (),
    ("d01", "web01"),
    ("d02", "web01"),
    ("latest", "web01"),
    ("plain",),
    ("plain", "sub"),
    ("plain", "deep", "a"),
    ("plain", "deep", "a", "b"),
    ("nowhere",),
]


def change(root: Path, rng: random.Random, disks: list[bytes]) -> None:
    """One change a backup server could make to the storage."""
    what = rng.randrange(12)
    plain = root / "plain"
    if what == 0:  # rewritten in place, another size
        (plain / "a.txt").write_bytes(b"a" * rng.randrange(1, 50))
    elif what == 1:  # replaced (new inode)
        write(plain / ".tmp", b"replaced" * rng.randrange(1, 5))
        os.replace(plain / ".tmp", plain / "a.txt")
    elif what == 2:  # a new file, or gone again
        new = plain / "new"
        if new.exists():
            new.unlink()
        else:
            write(new, b"new")
    elif what == 3:  # a new link, re-pointed, or gone
        link = plain / "new-link.json"
        if link.exists() and rng.random() < 0.5:
            link.unlink()
        else:
            write_link(link, rng.choice(["a.txt", "b.json", "/d00/web01/web01-flat.vmdk", "no"]))
    elif what == 4:  # day 2's pancbt replaced by another one, valid or not
        size = len(disks[2])
        p = build([(rng.randrange(0, size - 10), b"changed")], size, base_size=len(disks[1]))
        if rng.random() < 0.3:
            p = p[:-3]  # truncated: the flat is withheld
        write(root / "d02" / "web01" / ".tmp", p)
        os.replace(root / "d02" / "web01" / ".tmp", root / "d02" / "web01" / "web01-pancbt.vmdk")
    elif what == 5:  # touched
        os.utime(plain / "b.json", ns=(rng.randrange(1, 10**18), rng.randrange(1, 10**18)))
    elif what == 6:  # a link's target as good as gone: its flat withheld
        day0 = root / "d00" / "web01" / "web01-flat.vmdk"
        hidden = day0.with_name("hidden")
        if day0.exists():
            os.rename(day0, hidden)
        else:
            os.rename(hidden, day0)
    elif what == 7:  # a new directory
        (root / f"dir{rng.randrange(3)}").mkdir(exist_ok=True)
    elif what == 8:  # two links in a loop, or undone
        if (plain / "loop-a.json").exists():
            (plain / "loop-a.json").unlink()
        else:
            write_link(plain / "loop-a.json", "loop-b")
            write_link(plain / "loop-b.json", rng.choice(["loop-a", "a.txt"]))
    elif what == 10:  # "latest" moved to another day
        os.symlink(rng.choice(["d01", "d02", "plain"]), root / ".latest")
        os.replace(root / ".latest", root / "latest")
    elif what == 11:  # a folder tree removed, or made again
        tree = plain / "deep"
        if tree.exists():
            shutil.rmtree(tree)
        else:
            write(tree / "a" / "b" / "f", b"deep")
    else:  # a file where a folder was, and back
        f = plain / "sub"
        if f.is_dir():
            (f / "x").unlink()
            f.rmdir()
            write(f, b"now a file")
        else:
            f.unlink(missing_ok=True)
            write(f / "x", b"x")


def read_path(ns: Layer, path: tuple) -> bytes:
    with ns.open(path) as r:
        return read_all(r)


def truths(root: Path) -> dict[tuple, object]:
    """Every question the test asks, answered by a stack with nothing cached."""
    s = build_stack(str(root))
    try:
        out: dict[tuple, object] = {}
        for p in PATHS:
            out["getattr", p] = outcome(lambda p=p: s.top.getattr(p))
            out["read", p] = outcome(lambda p=p: read_path(s.top, p))
        for d in DIRS:
            out["readdir", d] = outcome(lambda d=d: dict(s.top.readdir(d)))
        return out
    finally:
        s.close()


@pytest.mark.parametrize("seed", range(10))
def test_the_memo_answers_as_the_stack_below_it(stacks, tmp_path: Path, seed: int) -> None:
    """The same answers as the stack without the memo, or what the storage held within the ttl.

    The second case is an expired answer renewed by one ``lstat`` (``_Kept.renew``):
    the memo then does not walk the layers, so their caches are refreshed at other
    moments than in the stack without it, and either may show a change first.  Both
    show it within the ttl (rule 8), checked against a stack with nothing cached.
    """
    root = tmp_path / "storage"
    disks = storage(root)
    clock = FakeClock()
    with_memo = stacks(clock=clock, recheck=0.6)
    without = stacks(clock=clock, recheck=0.6)
    a, b = with_memo.top, without.hide
    assert isinstance(a, MemoLayer)
    rng = random.Random(seed)
    history = [(clock(), truths(root))]  # (since when, every answer), after each change
    differed = 0
    for step in range(600):
        op = rng.randrange(10)
        if op < 4:
            key: tuple = ("getattr", rng.choice(PATHS))
            got = outcome(lambda ns=a, p=key[1]: ns.getattr(p))
            want = outcome(lambda ns=b, p=key[1]: ns.getattr(p))
        elif op < 6:
            key = ("readdir", rng.choice(DIRS))
            got = outcome(lambda ns=a, d=key[1]: dict(ns.readdir(d)))
            want = outcome(lambda ns=b, d=key[1]: dict(ns.readdir(d)))
        elif op < 8:
            key = ("read", rng.choice(PATHS))
            got = outcome(lambda ns=a, p=key[1]: read_path(ns, p))
            want = outcome(lambda ns=b, p=key[1]: read_path(ns, p))
        elif op == 8:
            change(root, rng, disks)
            history.append((clock(), truths(root)))
            continue
        else:
            clock.advance(rng.choice([0.1, 0.3, 0.5, 1.0]))
            continue
        if got != want:
            ends = [since for since, _ in history[1:]] + [float("inf")]
            held = [t[key] for (_, t), end in zip(history, ends, strict=True) if end > clock() - 1]
            assert got in held, (step, op, key)
            differed += 1
    assert differed <= 6  # rare: the rule is the same answers
    assert with_memo.problems.all() == without.problems.all()


# --- how long an answer is kept ---------------------------------------------------------


def test_every_kind_of_path_is_answered_from_the_memo(stacks, tmp_path, monkeypatch) -> None:
    disks = storage(tmp_path / "storage")
    s = stacks()
    paths = [p for p in PATHS if p[-1:] != ("new",)]
    for _ in range(2):  # the first time, folders are listed below: not all is kept yet
        answers = {p: outcome(lambda p=p: s.top.getattr(p)) for p in paths}
        with s.top.open(MERGED) as r:
            assert read_all(r) == disks[2]
        with s.top.open(("plain", "to-a")) as r:
            assert read_all(r) == b"a"
        listing = s.top.readdir(("d02", "web01"))
    for name in ("lookup", "listing", "open_file"):
        monkeypatch.setattr(s.hide, name, lambda *a: pytest.fail("not answered from the memo"))
    for p, want in answers.items():
        assert outcome(lambda p=p: s.top.getattr(p)) == want, p
    for _ in range(3):
        with s.top.open(MERGED) as r:
            assert read_all(r) == disks[2]
        with s.top.open(("plain", "to-a")) as r:  # re-stat'ed, then the same descriptor
            assert read_all(r) == b"a"
    assert s.top.readdir(("d02", "web01")) is listing


def test_an_answer_holds_no_longer_than_what_it_was_made_from(
    stacks, tmp_path, monkeypatch
) -> None:
    storage(tmp_path / "storage")
    monkeypatch.setattr(memo, "_renewable_at", lambda path, entry: None)  # no renewal here
    clock = FakeClock()
    s = stacks(clock=clock, ttl=1.0, recheck=0.5)
    s.top.readdir(("plain",))  # the listing, cached until 1001.0
    clock.advance(0.9)
    calls = count_calls(monkeypatch, s.hide, "lookup")
    s.top.getattr(("plain", "a.txt"))  # made from that listing: kept until 1001.0, not 1001.9
    s.top.getattr(("plain", "a.txt"))
    assert calls.count(("plain", "a.txt")) == 1
    clock.advance(0.1)
    s.top.getattr(("plain", "a.txt"))
    assert calls.count(("plain", "a.txt")) == 2
    # A merged image: until its inputs are checked again (recheck), not ttl.
    s.top.getattr(MERGED)
    clock.advance(0.4)
    s.top.getattr(MERGED)
    assert calls.count(MERGED) == 1
    clock.advance(0.1)
    s.top.getattr(MERGED)
    assert calls.count(MERGED) == 2


def test_a_changed_listing_drops_what_was_kept_for_its_entries_at_once(
    stacks, tmp_path: Path
) -> None:
    root = tmp_path / "storage"
    storage(root)
    clock = FakeClock()
    s = stacks(clock=clock)
    s.top.readdir(("plain",))
    clock.advance(1.0)
    kept = s.top.getattr(("plain", "a.txt"))  # the listing is stale: a stat, kept until 1002.0
    other = s.top.getattr(("d02", "web01", "web01.vmx"))
    (root / "plain" / "a.txt").write_bytes(b"longer now")
    clock.advance(0.2)
    listed = dict(s.top.readdir(("plain",)))  # listed again: the change is seen
    assert listed["a.txt"].size == 10
    assert s.top.getattr(("plain", "a.txt")) == listed["a.txt"] != kept  # not at 1002.0
    assert s.top.getattr(("d02", "web01", "web01.vmx")) is other  # other folders: still kept


def test_a_first_listing_drops_what_was_kept_before_it(stacks, tmp_path: Path) -> None:
    root = tmp_path / "storage"
    storage(root)
    clock = FakeClock()
    s = stacks(clock=clock)
    kept = s.top.getattr(("plain", "a.txt"))  # a stat: kept until 1001.0
    (root / "plain" / "a.txt").write_bytes(b"longer now")
    clock.advance(0.5)
    listed = dict(s.top.readdir(("plain",)))["a.txt"]
    assert listed.size == 10 and s.top.getattr(("plain", "a.txt")) == listed != kept


def test_a_dropped_path_asked_again_is_kept_under_its_first_key(stacks, tmp_path) -> None:
    """Memory: an answer dropped (a first listing) and made again is stored under the
    key the memo held, not a new copy of the path; it is the storage's answer."""
    root = tmp_path / "storage"
    storage(root)
    clock = FakeClock()
    s = stacks(clock=clock)
    top = s.memo
    first = ("plain", "".join(["a", ".txt"]))
    kept = top.getattr(first)
    (root / "plain" / "a.txt").write_bytes(b"longer now")
    clock.advance(0.5)
    top.readdir(("plain",))  # a first listing: what was kept for its entries is dropped
    assert top._kept[first] is memo._DROPPED
    again = ("plain", "".join(["a", ".txt"]))
    assert again == first and again is not first
    now = top.getattr(again)
    assert now.size == 10 and now != kept  # made again, not the dropped answer
    assert next(k for k in top._kept if k == first) is first
    assert top.getattr(first) is now and not top._kept[first].dead
    assert "a.txt" in top._names[("plain",)]
    with pytest.raises(NotFound):  # a dropped answer never holds, even for an error
        (root / "plain" / "b.json").unlink()
        top.readdir(("plain",))  # not a change yet (the listing holds): then one
        clock.advance(1.0)
        top.readdir(("plain",))
        top.getattr(("plain", "b.json"))


def test_a_change_seen_below_drops_that_directory_only(tmp_path: Path) -> None:
    memo, lower = fake_stack(tmp_path, {"d/x": b"x", "e/y": b"y"})
    assert memo.getattr(("d", "x")).size == 1
    memo.getattr(("e", "y"))
    lower.set("d/x", b"xx")
    lower.set("e/y", b"yy")
    assert memo.getattr(("d", "x")).size == 1  # kept: the stack below is not asked
    memo.ctx.changed(("d",))  # as the passthrough says when it lists d again and finds a change
    assert memo.getattr(("d", "x")).size == 2
    assert memo.getattr(("e", "y")).size == 1


def test_not_found_is_kept_other_errors_are_not(tmp_path: Path, monkeypatch) -> None:
    memo, lower = fake_stack(tmp_path, {"d/x": b"x"})
    calls = count_calls(monkeypatch, lower, "lookup")
    for _ in range(3):
        with pytest.raises(NotFound):
            memo.getattr(("d", "nope"))
        with pytest.raises(NotFound):
            memo.open(("nope",))
        with pytest.raises(NotFound):
            memo.getattr(("nope", "below"))
    assert sorted(calls) == [("d",), ("d", "nope"), ("nope",)]  # once each
    real = lower.lookup

    def refuse(path):
        if path == ("d", "x"):
            raise AccessDenied("/d/x")
        return real(path)

    monkeypatch.setattr(lower, "lookup", refuse)
    for _ in range(2):
        with pytest.raises(AccessDenied):
            memo.getattr(("d", "x"))
    monkeypatch.setattr(lower, "lookup", real)
    assert memo.getattr(("d", "x")).size == 1  # tried again: not kept


def test_answers_made_while_something_was_dropped_are_not_kept(tmp_path, monkeypatch) -> None:
    memo, lower = fake_stack(tmp_path, {"d/x": b"x"})
    memo.getattr(("d",))
    real = lower.lookup

    def racing(path):
        entry = real(path)
        memo.ctx.changed(("elsewhere",))  # another thread drops something meanwhile
        return entry

    monkeypatch.setattr(lower, "lookup", racing)
    memo.getattr(("d", "x"))
    monkeypatch.setattr(lower, "lookup", real)
    calls = count_calls(monkeypatch, lower, "lookup")
    memo.getattr(("d", "x"))
    memo.getattr(("d", "x"))
    assert calls == [("d", "x")]  # asked again once, then kept


# --- listings keep their identity --------------------------------------------------------


def test_readdir_is_the_same_object_while_nothing_changes(stacks, tmp_path: Path) -> None:
    root = tmp_path / "storage"
    storage(root)
    clock = FakeClock()
    s = stacks(clock=clock)
    dirs = [d for d in DIRS if d[:1] != ("nowhere",) and d[1:2] not in (("sub",), ("deep",))]
    for _ in range(2):  # listing a folder moves its atime once (relatime): settled after
        for d in dirs:
            s.top.readdir(d)
        clock.advance(1.0)
    first = {d: s.top.readdir(d) for d in dirs}
    for _ in range(3):
        clock.advance(1.0)  # listed again by every layer: nothing changed
        for d, items in first.items():
            assert s.top.readdir(d) is items, d
    write(root / "plain" / "new", b"n")
    clock.advance(1.0)
    changed = s.top.readdir(("plain",))
    assert changed is not first[("plain",)] and "new" in dict(changed)
    assert s.top.readdir(("d02", "web01")) is first[("d02", "web01")]
    clock.advance(1.0)
    assert s.top.readdir(("plain",)) is changed


def test_a_layer_that_changes_nothing_hands_the_lower_listing_on(stacks, tmp_path) -> None:
    root = tmp_path / "storage"
    for i in range(5):
        write(root / "flat" / f"f{i}.txt", b"x")
    s = stacks()
    low = s.passthrough.listing(("flat",))
    assert s.links.listing(("flat",)) is low
    assert s.merge.listing(("flat",)) is low
    assert s.hide.listing(("flat",)) is low


# --- readers -------------------------------------------------------------------------


def test_the_memo_keeps_no_descriptor_and_readers_keep_theirs(stacks, tmp_path) -> None:
    disks = storage(tmp_path / "storage")
    clock = FakeClock()
    s = stacks(clock=clock, merge_cache=1, fd_cache=1)
    s.top.open(MERGED).close()  # folders listed below on the way: kept from the next open
    before = open_fds()
    reader = s.top.open(MERGED)
    s.top.open(("plain", "a.txt")).close()
    s.top.open(("d01", "web01", "web01-flat.vmdk")).close()  # evicts the merges under the reader
    s.merge.close()
    s.passthrough.close()
    assert read_all(reader) == disks[2]
    try:
        with s.top.open(MERGED) as again:  # the reader's inputs, still open: taken again
            assert again.source is reader.source
    finally:
        reader.close()
    assert open_fds() <= before, "the memo holds a descriptor"
    with s.top.open(MERGED) as r:  # closed since: opened again by the stack
        assert read_all(r) == disks[2]


def test_a_replaced_plain_file_is_opened_again_at_once(stacks, tmp_path: Path) -> None:
    root = tmp_path / "storage"
    storage(root)
    s = stacks(clock=FakeClock())
    for _ in range(2):
        with s.top.open(("plain", "a.txt")) as r:
            assert read_all(r) == b"a"
    write(root / "plain" / ".tmp", b"new bytes")
    os.replace(root / "plain" / ".tmp", root / "plain" / "a.txt")
    with s.top.open(("plain", "a.txt")) as r:  # as the passthrough does: a stat at each open
        assert read_all(r) == b"new bytes"
    with s.top.open(("plain", "to-a")) as r:
        assert read_all(r) == b"new bytes"


# --- rule 8 through the memo ---------------------------------------------------------------


def test_rule_8_live_updates_show_through_kept_answers(stacks, tmp_path: Path) -> None:
    root = tmp_path / "storage"
    disks = storage(root)
    clock = FakeClock()
    s = stacks(clock=clock)
    ns = s.top

    def hot() -> None:  # what a busy client keeps asking
        for _ in range(3):
            ns.readdir(())
            ns.readdir(("d02", "web01"))
            ns.getattr(MERGED)
            ns.getattr(("plain", "disk"))
            with ns.open(MERGED) as r:
                r.runs(0, 4096)

    hot()
    old = ns.open(MERGED)
    p2 = build([(0, b"day two, again")], len(disks[2]), base_size=len(disks[1]))
    write(root / "d02" / "web01" / ".tmp", p2)
    os.replace(root / "d02" / "web01" / ".tmp", root / "d02" / "web01" / "web01-pancbt.vmdk")
    write(root / "d03" / "web01" / "web01-pancbt.vmdk", build([], 70, base_size=len(disks[2])))
    write_link(root / "d03" / "web01" / "web01-flat.vmdk.json", "/d02/web01/web01-flat.vmdk")
    hot()
    assert "d03" not in dict(ns.readdir(()))  # within the ttl: as before
    clock.advance(1.0)
    hot()
    assert "d03" in dict(ns.readdir(()))
    assert ns.getattr(("d03", "web01", "web01-flat.vmdk")).size == 70
    want = naive_merged(disks[1], p2)
    assert ns.getattr(MERGED).size == len(want)
    with ns.open(MERGED) as r:
        assert read_all(r) == want
    with ns.open(("plain", "disk")) as r:
        assert read_all(r) == want
    assert read_all(old) == disks[2]  # opened before the change: its own inputs
    old.close()
    (root / "plain" / "to-merged.json").unlink()
    hot_disk = ns.getattr(("plain", "disk"))
    clock.advance(1.0)
    with pytest.raises(NotFound):
        ns.getattr(("plain", "disk"))
    assert hot_disk.size == len(want)


# --- an expired answer renewed by one lstat ---------------------------------------------


def settled(root: Path) -> None:
    """Every atime in the tree already past its mtime: listing or reading moves none."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames, ""]:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            os.utime(p, ns=(st.st_mtime_ns + 10**9, st.st_mtime_ns), follow_symlinks=False)


def test_an_expired_plain_answer_is_renewed_by_one_lstat(stacks, tmp_path, monkeypatch) -> None:
    root = tmp_path / "storage"
    storage(root)
    write(root / "plain" / "sub" / "x", b"x")
    settled(root)
    clock = FakeClock()
    s = stacks(clock=clock)
    paths = [("plain", "a.txt"), ("plain", "b.json"), ("plain", "sub"), ("plain", "sub", "x")]
    want = {p: s.top.getattr(p) for p in paths}
    with s.top.open(("plain", "a.txt")) as r:  # kept with its source
        assert read_all(r) == b"a"
    clock.advance(5.0)
    calls = count_calls(monkeypatch, s.hide, "lookup")
    lstats = count_calls(monkeypatch, os, "lstat")
    for _ in range(2):
        assert {p: s.top.getattr(p) for p in paths} == want
    assert calls == []
    assert len(lstats) == 5  # each path and "plain" once; then held again for a ttl
    clock.advance(5.0)
    with s.top.open(("plain", "a.txt")) as r:  # open renews the same way
        assert read_all(r) == b"a"
    assert calls == []
    assert s.top.getattr(("plain", "a.txt")) == want[("plain", "a.txt")]


def test_a_flat_image_a_link_and_an_error_are_never_renewed(stacks, tmp_path, monkeypatch) -> None:
    root = tmp_path / "storage"
    storage(root)
    write(root / "plain" / "new-flat.vmdk", b"x" * 1024)
    settled(root)
    clock = FakeClock()
    s = stacks(clock=clock)
    paths = [("plain", "new-flat.vmdk"), ("plain", "to-a"), ("plain", "gone"), MERGED, ()]
    for p in paths:
        outcome(lambda p=p: s.top.getattr(p))
    clock.advance(5.0)
    calls = count_calls(monkeypatch, s.hide, "lookup")
    for p in paths:
        outcome(lambda p=p: s.top.getattr(p))
    assert set(paths) <= set(calls)


def _replace_with_symlink(p: Path) -> None:
    os.replace(p, p.with_name("moved"))
    os.symlink("moved", p.with_name(".tmp"))
    os.replace(p.with_name(".tmp"), p)


CHANGES: dict[str, Callable[[Path], None]] = {
    "rewritten in place": lambda p: p.write_bytes(b"other bytes"),
    "replaced": lambda p: (write(p.with_name(".tmp"), b"n"), os.replace(p.with_name(".tmp"), p)),
    "removed": lambda p: p.unlink(),
    "touched": lambda p: os.utime(p, ns=(1, 2)),
    "a symbolic link now": _replace_with_symlink,
    "a fifo now": lambda p: (p.unlink(), os.mkfifo(p)),
    "a folder now": lambda p: (p.unlink(), p.mkdir()),
}


@pytest.mark.parametrize("how", list(CHANGES))
def test_a_changed_entry_is_not_renewed(stacks, tmp_path: Path, how: str) -> None:
    """After the ttl, what changed shows as the stack without the memo shows it."""
    root = tmp_path / "storage"
    storage(root)
    settled(root)
    clock = FakeClock()
    s = stacks(clock=clock)
    target = ("plain", "a.txt")
    before = s.top.getattr(target)
    CHANGES[how](root / "plain" / "a.txt")
    assert s.top.getattr(target) == before  # within the ttl: as before
    clock.advance(1.0)
    fresh = stacks(clock=clock).top
    assert outcome(lambda: s.top.getattr(target)) == outcome(lambda: fresh.getattr(target))
    assert outcome(lambda: s.top.getattr(target)) != ("ok", dataclasses.replace(before, atime_ns=0))


@pytest.mark.parametrize("folder", [(), ("plain",)])
def test_a_pancbt_beside_a_plain_flat_shows_after_the_ttl(stacks, tmp_path, folder) -> None:
    """Also at the root, whose own answer is not checked (Layer.resolve): the flat's
    name, not its folder's stat, is what keeps it from being renewed."""
    root = tmp_path / "storage"
    storage(root)
    base = b"b" * (16 * KIB)
    write(root.joinpath(*folder, "img-flat.vmdk"), base)
    settled(root)
    clock = FakeClock()
    s = stacks(clock=clock)
    flat = (*folder, "img-flat.vmdk")
    for _ in range(2):  # the first answer, made while its folder was first listed, is not kept
        assert s.top.getattr(flat).size == len(base)
    pancbt = build([(0, b"new")], 20 * KIB, base_size=len(base))
    write(root.joinpath(*folder, "img-pancbt.vmdk"), pancbt)
    clock.advance(1.0)
    assert s.top.getattr(flat).size == 20 * KIB


def test_a_parent_replaced_by_a_link_is_walked_again(stacks, tmp_path: Path) -> None:
    root = tmp_path / "storage"
    storage(root)
    write(root / "plain" / "sub" / "x", b"x")
    write(root / "elsewhere" / "x", b"elsewhere")
    settled(root)
    clock = FakeClock()
    s = stacks(clock=clock)
    assert s.top.getattr(("plain", "sub", "x")).size == 1
    os.rename(root / "plain" / "sub", root / "plain" / "old-sub")
    os.symlink("../elsewhere", root / "plain" / "sub")
    clock.advance(1.0)
    assert s.top.getattr(("plain", "sub", "x")).size == len(b"elsewhere")


# --- threads and bounds ----------------------------------------------------------------------


def test_threads_with_changes_drops_and_evictions(stacks, tmp_path: Path) -> None:
    root = tmp_path / "storage"
    disks = storage(root)
    s = stacks(ttl=0.01, recheck=0.01, memo_size=8, merge_cache=2, fd_cache=2)
    memo = s.memo
    versions = {b"a", b"version two"}
    stop = threading.Event()

    def mutate() -> None:
        rng = random.Random(7)
        while not stop.is_set():
            data = rng.choice(sorted(versions))
            write(root / "plain" / ".tmp", data)
            os.replace(root / "plain" / ".tmp", root / "plain" / "a.txt")
            new = root / "plain" / "new"
            if new.exists():
                new.unlink()
            else:
                write(new, b"n")
            memo.changed(rng.choice(DIRS))
            time.sleep(0.001)

    changer = threading.Thread(target=mutate)
    changer.start()

    readable = {MERGED: {disks[2]}, ("plain", "disk"): {disks[2]}}
    readable |= {("plain", "a.txt"): versions, ("plain", "to-a"): versions}

    def work(seed: int) -> None:
        rng = random.Random(seed)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            op = rng.randrange(3)
            if op == 0:
                with contextlib.suppress(NotFound, NotADirectory):
                    s.top.getattr(rng.choice(PATHS))
            elif op == 1:
                with contextlib.suppress(NotFound):
                    s.top.readdir(rng.choice(DIRS))
            else:
                path = rng.choice(sorted(readable))
                with s.top.open(path) as r:
                    assert read_all(r) in readable[path]

    try:
        errors = run_threads(work, 6)
    finally:
        stop.set()
        changer.join()
    assert errors == []
    assert len(memo._kept) <= 8
    indexed = {(*d, name) for d, names in memo._names.items() for name in names}
    assert indexed == {p for p in memo._kept if p}


def test_bounded(stacks, tmp_path: Path) -> None:
    root = tmp_path / "storage"
    for d in range(10):
        for i in range(20):
            write(root / f"d{d}" / f"f{i}", b"x")
    s = build_stack(str(root))
    memo = MemoLayer(s.hide, s.ctx, size=16, dirs=4)
    for d in range(10):
        memo.readdir((f"d{d}",))
        for i in range(20):
            memo.getattr((f"d{d}", f"f{i}"))
            with pytest.raises(NotFound):
                memo.getattr((f"d{d}", f"missing{i}"))
    assert len(memo._kept) == 16 and len(memo._listings) == 4
    assert sum(len(names) for names in memo._names.values()) == len([p for p in memo._kept if p])
    s.close()
    with pytest.raises(ValueError):
        MemoLayer(s.hide, s.ctx, size=0)


def test_the_oldest_stored_go_a_64th_at_a_time(tmp_path: Path) -> None:
    root = tmp_path / "storage"
    for i in range(70):
        write(root / "d" / f"f{i}", b"x")
    s = build_stack(str(root))
    memo = MemoLayer(s.hide, s.ctx, size=64)
    memo.getattr(("d",))
    firsts = [memo._kept[("d",)]]
    for i in range(63):
        memo.getattr(("d", f"f{i}"))
        firsts.append(memo._kept[("d", f"f{i}")])
    assert len(memo._kept) == 64
    memo.getattr(("d", "f63"))  # one past the bound: 1 + 64 // 64 go, the first stored
    assert len(memo._kept) == 63 and ("d",) not in memo._kept and ("d", "f0") not in memo._kept
    assert firsts[0].dead and firsts[1].dead and not any(k.dead for k in firsts[2:])
    assert set(memo._names[("d",)]) == {f"f{i}" for i in range(1, 64)}
    assert memo.getattr(("d", "f0")) == s.top.getattr(("d", "f0"))  # made again
    s.close()


# --- the fast paths below it -----------------------------------------------------------------


def shared_attrs(a: Attrs) -> Attrs:
    """``a`` written to and read from a shared listing's fields."""
    from merge.attrs import attrs_from_fields
    from merge.shared import _FIELDS, _KINDS

    return attrs_from_fields(_FIELDS(a), _KINDS[int(a.kind)])


def test_attrs_of_and_ids_in_agree_with_the_plain_forms(tmp_path: Path) -> None:
    write(tmp_path / "f", b"12345")
    for p in (tmp_path, tmp_path / "f"):
        st = os.stat(p)
        is_dir = p.is_dir()
        plain = Attrs(
            kind=Kind.DIR if is_dir else Kind.REG,
            size=st.st_size,
            used=st.st_blocks * 512,
            mode=st.st_mode & 0o555,
            nlink=max(st.st_nlink, 2) if is_dir else 1,
            uid=st.st_uid,
            gid=st.st_gid,
            fileid=42,
            atime_ns=st.st_atime_ns,
            mtime_ns=st.st_mtime_ns,
            ctime_ns=st.st_ctime_ns,
        )
        made = attrs_of(st, 42)
        assert made == plain and hash(made) == hash(plain) and repr(made) == repr(plain)
        folder = os.path.join(str(p.parent), "")
        entry, want = stored_entry(made, folder, p.name), Entry(plain, Stored(str(p)))
        assert entry == want and hash(entry) == hash(want) and repr(entry) == repr(want)
        assert entry.origin.path == want.origin.path == str(p) == want.origin.where
        assert stored_in(folder, p.name) == want.origin
        assert shared_attrs(made) == plain  # merge.shared's way back from the stored fields
    write(tmp_path / "g", b"67890")  # the fields that repeat are shared ints (memory)
    f, g = attrs_of(os.stat(tmp_path / "f"), 1), attrs_of(os.stat(tmp_path / "g"), 2)
    assert f.mode is g.mode and f.used is g.used and f.used > 256
    for directory in [(), ("a",), ("ü", "b\udcff"), ("x" * 300, "y")]:
        ids = ids_in(directory)
        for name in ("f", "é", "\udc80", "a\tb"):
            assert ids(name) == fileid_for((*directory, name))


def test_a_json_file_that_cannot_hold_the_marker_is_not_parsed(monkeypatch) -> None:
    parsed: list[bytes] = []
    real = json.loads
    monkeypatch.setattr(json, "loads", lambda raw, **kw: parsed.append(raw) or real(raw, **kw))
    link = LinkDoc("x", "a")
    assert parse_link("a.json", b'{"job": "nightly", "files": [1, 2, 3]}') is None
    assert parsed == []
    doc = b'{"smartmotion": 1, "target": "x"}'
    assert parse_link("a.json", doc) == link
    assert parse_link("a.json", doc.replace(b"s", b"\\u0073", 1)) == link  # an escaped key
    assert parse_link("a.json", doc.decode().encode("utf-16")) == link
    assert parse_link("a.json", b"\xef\xbb\xbf" + doc) == link  # a byte order mark
    assert len(parsed) == 4
