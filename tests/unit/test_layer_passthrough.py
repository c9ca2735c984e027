"""merge.passthrough alone: the storage directory, read-only (rule 1, rule 5's symlinks)."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from merge.attrs import ROOT_FILEID, fileid_for
from merge.namespace import IsADirectory, Kind, NotADirectory, NotFound
from merge.passthrough import Passthrough
from tests.unit.fake_layer import make_ctx
from tests.unit.merge_helpers import FakeClock, open_fds, read_all, write


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    root = tmp_path / "storage"
    write(root / "a" / "f.txt", b"hello")
    write(root / "a" / "b" / "g.bin", b"\0" * 10)
    write(root / "x.json", b'{"smartmotion": 1, "target": "a/f.txt"}')  # a link for upper layers
    write(tmp_path / "outside.txt", b"secret")
    return root


def layer(root: Path, clock: FakeClock | None = None, **kw) -> Passthrough:
    return Passthrough(make_ctx(root, clock, **kw))


def test_files_and_directories_as_they_are(storage: Path) -> None:
    pt = layer(storage)
    names = {n: a.kind for n, a in pt.readdir(())}
    assert names == {"a": Kind.DIR, "x.json": Kind.REG}
    attrs = pt.getattr(("a", "f.txt"))
    assert attrs.size == 5 and attrs.kind == Kind.REG and attrs.nlink == 1
    with pt.open(("a", "f.txt")) as r:
        assert read_all(r) == b"hello"


def test_attributes_are_read_only_with_stable_ids(storage: Path) -> None:
    os.chmod(storage / "a" / "f.txt", 0o764)
    pt = layer(storage)
    attrs = pt.getattr(("a", "f.txt"))
    assert attrs.mode == 0o764 & 0o555 and not attrs.mode & 0o222
    assert pt.getattr(("a",)).mode & 0o222 == 0
    assert pt.getattr(()).fileid == ROOT_FILEID
    assert (
        attrs.fileid == fileid_for(("a", "f.txt")) == layer(storage).getattr(("a", "f.txt")).fileid
    )
    assert pt.getattr(("a",)).nlink >= 3  # 2 + the subdirectory b


def test_errors(storage: Path) -> None:
    pt = layer(storage)
    with pytest.raises(NotFound):
        pt.getattr(("nope",))
    with pytest.raises(NotADirectory):
        pt.getattr(("a", "f.txt", "x"))
    with pytest.raises(NotADirectory):
        pt.readdir(("a", "f.txt"))
    with pytest.raises(IsADirectory):
        pt.open(("a",))
    for bad in ("..", ".", "a/b", "a\0b", ""):
        with pytest.raises(NotFound):
            pt.getattr((bad,))


@pytest.mark.parametrize("bad", ["a\0", "\ud800", "\udcc3\udca9", "a\ud800"])
def test_names_no_storage_bytes_spell_are_not_found(storage: Path, bad: str) -> None:
    """A lone surrogate, escapes of bytes that read as other text, a NUL: in a
    link's target they reach the lookups (merge.names.storage_bytes)."""
    write(storage / "é" / "f", b"x")  # what "\udcc3\udca9" would reach
    pt = layer(storage)
    for path in ((bad,), (bad, "f"), ("a", bad), ("a", bad, "f")):
        with pytest.raises(NotFound):
            pt.getattr(path)
        with pytest.raises(NotFound):
            pt.readdir(path)
        with pytest.raises(NotFound):
            pt.open(path)
        if bad != "\udcc3\udca9":  # (that one names é: open_file comes after a lookup)
            with pytest.raises(NotFound):
                pt.open_file(path)  # straight to the storage, no lookup before
    assert {n for n, _ in pt.readdir(())} == {"a", "x.json", "é"}


def test_a_storage_name_longer_than_255_bytes_is_withheld(storage: Path, monkeypatch) -> None:
    """A FUSE or CIFS storage can list one (local file systems refuse to make
    it: faked here); NFSv3 cannot send it, so READDIR of its folder would fail."""
    write(storage / "a" / "long", b"x")
    long = "é" * 128  # 256 bytes
    scandir = os.scandir

    class Renamed:  # the DirEntry of "long", listed under the long name
        def __init__(self, de: os.DirEntry[str]) -> None:
            self._de = de
            self.name = long if de.name == "long" else de.name

        def __getattr__(self, attr: str):
            return getattr(self._de, attr)

    class Scan:
        def __init__(self, path: str) -> None:
            self._it = scandir(path)

        def __enter__(self):
            return (Renamed(de) for de in self._it)

        def __exit__(self, *exc: object) -> None:
            self._it.close()

    monkeypatch.setattr("merge.passthrough.native", None)  # the C scan bails on it
    monkeypatch.setattr("merge.passthrough.os.scandir", Scan)
    pt = layer(storage)
    assert {n for n, _ in pt.readdir(("a",))} == {"f.txt", "b"}
    with pytest.raises(NotFound):
        pt.getattr(("a", long))
    [p] = pt.ctx.problems.all()
    assert p.rule == 5 and "longer than 255 bytes" in p.reason


def test_symlink_outside_the_root_is_withheld_and_logged_once(
    storage: Path, caplog: pytest.LogCaptureFixture
) -> None:
    os.symlink("../outside.txt", storage / "escape")
    os.symlink(str(storage.parent), storage / "a" / "escape-dir")
    pt = layer(storage)
    caplog.set_level(logging.WARNING, logger="recovery_fs.merge")
    for _ in range(3):
        assert "escape" not in dict(pt.readdir(()))
        assert "escape-dir" not in dict(pt.readdir(("a",)))
        with pytest.raises(NotFound):
            pt.getattr(("escape",))
        with pytest.raises(NotFound):
            pt.getattr(("a", "escape-dir", "outside.txt"))
    warnings = [r for r in caplog.records if r.name == "recovery_fs.merge"]
    assert len(warnings) == 2
    assert str(storage / "escape") in warnings[0].getMessage() + warnings[1].getMessage()
    assert "outside the storage root" in warnings[0].getMessage()
    assert {p.storage_path for p in pt.ctx.problems.all()} == {
        str(storage / "escape"),
        str(storage / "a" / "escape-dir"),
    }


def test_symlinks_inside_the_root_are_followed(storage: Path) -> None:
    os.symlink("a/f.txt", storage / "alias.txt")
    os.symlink("a", storage / "latest")
    pt = layer(storage)
    assert pt.getattr(("alias.txt",)).size == 5
    assert pt.getattr(("latest",)).kind == Kind.DIR
    with pt.open(("latest", "f.txt")) as r:
        assert read_all(r) == b"hello"
    assert pt.getattr(("latest",)).fileid != pt.getattr(("a",)).fileid  # distinct presented paths


@pytest.mark.parametrize(
    ("where", "target"),
    [
        ("loop", "."),  # to its own directory
        ("a/up", ".."),  # to the root
        ("a/b/upup", "../.."),
        ("a/b/toa", "../../a"),  # to an enclosing directory
    ],
)
def test_symlink_to_an_enclosing_directory_is_withheld(
    storage: Path, where: str, target: str
) -> None:
    os.symlink(target, storage / where)
    pt = layer(storage)
    parent, name = os.path.split(where)
    d = tuple(parent.split("/")) if parent else ()
    assert name not in dict(pt.readdir(d))
    assert "enclosing" in str(pt.ctx.problems.all()) or "holds it" in str(pt.ctx.problems.all())


def test_mutual_symlinks_make_a_finite_tree(storage: Path) -> None:
    write(storage / "c" / "h", b"h")
    os.symlink("../c", storage / "a" / "toc")
    os.symlink("../a", storage / "c" / "toa")
    pt = layer(storage)
    count = 0
    todo = [()]
    while todo:
        d = todo.pop()
        for name, a in pt.readdir(d):
            count += 1
            assert count < 1000, "endless tree"
            if a.kind == Kind.DIR:
                todo.append((*d, name))


def test_dangling_symlink_and_special_files_are_withheld(storage: Path) -> None:
    os.symlink("no-such-file", storage / "dangling")
    os.symlink("self", storage / "self")
    os.mkfifo(storage / "fifo")
    pt = layer(storage)
    names = dict(pt.readdir(()))
    assert not {"dangling", "self", "fifo"} & set(names)
    for name in ("dangling", "self", "fifo"):
        with pytest.raises(NotFound):
            pt.getattr((name,))


def test_a_folder_above_swapped_for_a_link_outside_never_shows_what_is_outside(
    storage: Path,
) -> None:
    """``a`` renamed away and replaced by a symbolic link leading outside the
    root, while the root's listing (made later) still says ``a`` is a folder:
    the listing of ``a/b`` and the lookups in it, renewed, listed the outside
    folder's names and gave its files' attributes (never contents: opens were
    checked) until the root's listing expired."""
    outside = storage.parent / "elsewhere"
    write(outside / "b" / "secret-name.txt", b"s" * 123)
    clock = FakeClock()
    pt = layer(storage, clock, ttl=1.0)
    assert set(dict(pt.readdir(("a", "b")))) == {"g.bin"}  # a/b listed at 0
    clock.advance(0.6)
    assert set(dict(pt.readdir(()))) == {"a", "x.json"}  # the root at 0.6
    os.rename(storage / "a", storage / "a.old")
    os.symlink(str(outside), storage / "a")
    clock.advance(0.5)  # a/b's listing expired, the root's still fresh
    with pytest.raises(NotFound):
        pt.readdir(("a", "b"))
    with pytest.raises(NotFound):
        pt.getattr(("a", "b", "secret-name.txt"))
    with pytest.raises(NotFound):
        pt.open(("a", "b", "secret-name.txt"))
    clock.advance(1.0)  # and once the root is listed again, ``a`` is withheld
    assert "a" not in dict(pt.readdir(()))
    os.unlink(storage / "a")
    os.rename(storage / "a.old", storage / "a")
    clock.advance(1.0)
    assert set(dict(pt.readdir(("a", "b")))) == {"g.bin"}
    assert pt.getattr(("a", "b", "g.bin")).size == 10


def test_new_and_removed_entries_show_within_the_ttl(storage: Path) -> None:
    clock = FakeClock()
    pt = layer(storage, clock, ttl=1.0)
    assert "new" not in dict(pt.readdir(()))
    with pytest.raises(NotFound):
        pt.getattr(("new",))
    write(storage / "new" / "file", b"n")
    clock.advance(0.5)
    assert "new" not in dict(pt.readdir(()))  # cached
    clock.advance(0.5)
    assert "new" in dict(pt.readdir(()))
    assert pt.getattr(("new", "file")).size == 1


def test_replaced_file_is_reopened_and_size_is_the_one_at_open(storage: Path) -> None:
    pt = layer(storage)
    r1 = pt.open(("a", "f.txt"))
    tmp = storage / "a" / ".tmp"
    tmp.write_bytes(b"a new, longer content")
    os.replace(tmp, storage / "a" / "f.txt")
    r2 = pt.open(("a", "f.txt"))
    assert read_all(r1) == b"hello" and r1.size == 5  # the old inode, still open
    assert read_all(r2) == b"a new, longer content"
    r1.close()
    r2.close()


def test_descriptors_are_cached_bounded_and_closed(storage: Path) -> None:
    for i in range(20):
        write(storage / "many" / f"f{i}", bytes([i]) * 3)
    before = open_fds()
    pt = layer(storage)
    pt._files._maxsize = 4
    for _ in range(3):
        for i in range(20):
            with pt.open(("many", f"f{i}")) as r:
                assert read_all(r) == bytes([i]) * 3
    assert len(open_fds() - before) <= 4
    same = [pt.open(("many", "f19")) for _ in range(3)]
    assert len({h.source.fd for h in same}) == 1  # one descriptor, reused
    for h in same:
        h.close()
    pt.close()
    assert open_fds() == before


def test_never_writes_to_the_storage(storage: Path, monkeypatch) -> None:
    flags: list[int] = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda p, f, *a: flags.append(f) or real_open(p, f, *a))
    snapshot = {
        p: (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None)
        for p in storage.rglob("*")
    }
    pt = layer(storage)
    for d in ((), ("a",), ("a", "b")):
        for name, a in pt.readdir(d):
            if a.kind == Kind.REG:
                with pt.open((*d, name)) as r:
                    read_all(r)
    assert flags and all(
        f & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND) == 0 for f in flags
    )
    assert all(f & os.O_NOATIME for f in flags)  # we run as the owner: permitted
    after = {
        p: (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None)
        for p in storage.rglob("*")
    }
    assert after == snapshot


def test_fsstat(storage: Path) -> None:
    st = layer(storage).fsstat()
    assert st.total_bytes >= st.free_bytes >= st.avail_bytes >= 0 and st.total_files > 0


def test_a_name_looked_up_and_listed_is_one_entry_and_never_a_stale_one(storage: Path) -> None:
    """Memory: a lookup and a listing of the same name share one Entry while it is
    what the storage holds; a changed file gets a new one, on either side."""
    clock = FakeClock()
    pt = layer(storage, clock, ttl=1.0)
    looked = pt.lookup(("a", "f.txt"))
    assert pt.listing(("a",)).entries["f.txt"] is looked  # the listing took the lookup's
    assert looked == layer(storage).lookup(("a", "f.txt"))  # as if made anew
    clock.advance(1.0)  # both expired: the lookup stats again, gets the listing's
    assert pt.lookup(("a", "f.txt")) is looked

    write(storage / "a" / "f.txt", b"hello, longer")
    clock.advance(1.0)
    changed = pt.lookup(("a", "f.txt"))  # the expired listing's entry is stale: not that
    assert changed.attrs.size == 13 and changed == layer(storage).lookup(("a", "f.txt"))
    write(storage / "a" / "f.txt", b"x")  # and the lookup's is stale for the next listing
    clock.advance(1.0)
    listed = pt.listing(("a",)).entries["f.txt"]
    assert listed.attrs.size == 1 and listed == layer(storage).listing(("a",)).entries["f.txt"]
    clock.advance(1.0)
    assert pt.lookup(("a", "f.txt")) is listed

    stale = pt.lookup(("a", "b", "g.bin"))  # and a first listing does not take a stale one
    write(storage / "a" / "b" / "g.bin", b"\1" * 3)
    clock.advance(1.0)
    listed = pt.listing(("a", "b")).entries["g.bin"]
    assert listed != stale and listed == layer(storage).lookup(("a", "b", "g.bin"))


def test_a_listing_forgets_the_stats_looked_up_in_its_folder(storage: Path) -> None:
    """Memory: once a folder is scanned, the stats lookups cached for its names are
    dropped (a fresh listing answers those lookups, and a stat cached before the
    scan expires no later than the listing); answers stay the storage's."""
    clock = FakeClock()
    pt = layer(storage, clock, ttl=1.0)
    looked = pt.lookup(("a", "f.txt"))
    pt.lookup(("a", "b"))
    with pytest.raises(NotFound):
        pt.lookup(("a", "nothing"))
    assert pt._stats.peek(("a", "f.txt")) is looked
    listing = pt.listing(("a",))
    assert listing.entries["f.txt"] is looked  # taken, as before
    for name in ("f.txt", "b"):
        assert pt._stats.peek(("a", name)) is None  # forgotten
        assert pt.lookup(("a", name)) is listing.entries[name]  # from the listing
    with pytest.raises(NotFound):  # a name the listing does not hold: still not found
        pt.lookup(("a", "nothing"))
    assert ("a",) not in pt._looked_in
    clock.advance(1.0)  # the listing expired: a lookup of an unchanged name gets its
    assert pt.lookup(("a", "b")) is listing.entries["b"]  # Entry, and caches nothing
    assert pt._stats.peek(("a", "b")) is None and ("a",) not in pt._looked_in
    write(storage / "a" / "f.txt", b"changed")  # a changed one is cached, as before
    assert pt.lookup(("a", "f.txt")).attrs.size == 7 and pt._stats.peek(("a", "f.txt"))

    write(storage / "a" / "f.txt", b"hello, longer")
    write(storage / "a" / "nothing", b"now here")
    clock.advance(1.0)
    fresh = layer(storage)
    for name in ("f.txt", "b", "nothing"):
        assert pt.lookup(("a", name)) == fresh.lookup(("a", name))
    assert pt.listing(("a",)).entries == fresh.listing(("a",)).entries


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["lookup", "listing", "write", "remove", "tick"]),
            st.sampled_from(["f0", "f1", "f2", "d"]),
            st.sampled_from([0.3, 0.6, 1.0]),
        ),
        max_size=30,
    )
)
@example([("listing", "f0", 1), ("write", "f0", 0.6), ("tick", "f0", 1), ("listing", "f0", 1)])
@example(
    [
        *[("lookup", "f0", 1), ("listing", "f0", 1), ("write", "f0", 0.3), ("tick", "f0", 1.0)],
        *[("lookup", "f0", 1), ("remove", "f0", 1), ("tick", "f0", 1), ("lookup", "f0", 1)],
    ]
)
def test_lookups_and_listings_show_the_storage_once_the_ttl_passed(ops: list) -> None:
    """Random lookups, listings and changes of one folder: whatever the caches keep
    (and forget: the stats a scan makes useless), an answer asked a ttl or more
    after the storage last changed is what a layer with nothing cached gives."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "f").mkdir()
        write(root / "f" / "f0", b"0")
        clock = FakeClock()
        pt = layer(root, clock, ttl=1.0)
        changed = clock.now
        for op, name, dt in ops:
            p = root / "f" / name
            if op == "tick":
                clock.advance(dt)
            elif op == "write":
                if name == "d":
                    p.mkdir(exist_ok=True)
                else:
                    write(p, b"x" * int(dt * 10))
                changed = clock.now
            elif op == "remove":
                if p.is_dir():
                    p.rmdir()
                elif p.exists():
                    p.unlink()
                changed = clock.now
            settled = clock.now >= changed + 1.0
            fresh = layer(root)
            if op == "listing":
                got = pt.listing(("f",)).entries
                if settled:
                    assert got == fresh.listing(("f",)).entries
            elif op == "lookup":
                try:
                    got_entry: object = pt.lookup(("f", name))
                except NotFound:
                    got_entry = None
                if settled:
                    try:
                        want: object = fresh.lookup(("f", name))
                    except NotFound:
                        want = None
                    assert got_entry == want
