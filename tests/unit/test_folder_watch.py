"""merge.watch: a large local folder's listing renewed without a scan, never a stale one.

Real inotify on the test's folder (the tests need a local file system, as
the server does); a fake clock moves the listings past their ttl.  Every
kind of change must show in the next listing past the ttl exactly as a
passthrough with nothing cached lists it; nothing changed, no scan.
"""

from __future__ import annotations

import mmap
import os
import random
import shutil
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from merge import passthrough, watch
from merge.layer import Listing
from merge.passthrough import Passthrough
from merge.stack import build_stack
from merge.watch import IN_Q_OVERFLOW, LOCAL_FS, FolderWatches, fs_type
from tests.unit.fake_layer import make_ctx
from tests.unit.merge_helpers import FakeClock, run_threads, write

NFS_SUPER_MAGIC = 0x6969

pytestmark = pytest.mark.skipif(
    fs_type(os.getcwd()) is None, reason="no statfs/inotify through ctypes here"
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "storage"
    for i in range(5):
        write(r / "d" / f"f{i}", b"x" * i)
    (r / "d" / "sub").mkdir()
    write(r / "d" / "sub" / "inner", b"i")
    write(r / "other" / "g", b"g")
    if fs_type(str(r)) not in LOCAL_FS:
        pytest.skip("the test folder is not on a local file system")
    return r


class Counted:
    """A passthrough with watches, its scans counted."""

    def __init__(self, root: Path, clock: FakeClock, **kw) -> None:
        self.clock = clock
        kw.setdefault("first_size", float("inf"))  # watched from the second scan, unless said
        self.watches = FolderWatches(clock, min_entries=3, **kw)
        self.pt = Passthrough(make_ctx(root, clock, ttl=1.0), watches=self.watches)
        self.scans = 0
        real = os.scandir

        def scandir(p):  # type: ignore[no-untyped-def]
            self.scans += 1
            return real(p)

        self._real = real
        self.scandir = scandir

    def listing(self, monkeypatch: pytest.MonkeyPatch, path: tuple = ("d",)):  # type: ignore[no-untyped-def]
        monkeypatch.setattr(os, "scandir", self.scandir)
        real_native = passthrough.native
        if real_native is not None:  # the scan in C (merge/_native.c): counted as well
            counted = self

            class Counting:
                @staticmethod
                def scan(*args):  # type: ignore[no-untyped-def]
                    found = real_native.scan(*args)
                    counted.scans += found is not None  # None: the Python loop scans
                    return found

            monkeypatch.setattr(passthrough, "native", Counting)
        try:
            return self.pt.listing(path)
        finally:
            monkeypatch.setattr(os, "scandir", self._real)
            monkeypatch.setattr(passthrough, "native", real_native)

    def watched(self, monkeypatch: pytest.MonkeyPatch) -> object:
        """List until the folder is watched and its listing renewable (first + one scan)."""
        self.listing(monkeypatch)
        self.clock.advance(1.0)
        return self.listing(monkeypatch)


def fresh(root: Path, path: tuple = ("d",)) -> dict:
    return dict(Passthrough(make_ctx(root)).listing(path).entries)


def test_nothing_changed_no_scan_the_same_listing(root: Path, monkeypatch) -> None:
    c = Counted(root, FakeClock())
    listed = c.watched(monkeypatch)
    assert c.scans == 2
    for _ in range(2):
        c.clock.advance(1.0)
        assert c.listing(monkeypatch) is listed
    assert c.scans == 2 and c.watches.renewed == 2
    assert dict(listed.entries) == fresh(root)  # type: ignore[attr-defined]


def _rename_in(d: Path) -> None:
    os.rename(d.parent / "other" / "g", d / "g")


def _replace_folder(d: Path) -> None:
    os.rename(d, d.parent / "old-d")
    shutil.copytree(d.parent / "old-d", d)


def _hard_link_write(d: Path) -> None:
    os.link(d / "f3", d.parent / "other" / "link")  # f3 now has two names


CHANGES: dict[str, Callable[[Path], None]] = {
    "create": lambda d: write(d / "new", b"n"),
    "mkdir": lambda d: (d / "newdir").mkdir(),
    "delete": lambda d: (d / "f1").unlink(),
    "rename inside": lambda d: os.rename(d / "f1", d / "f1-renamed"),
    "move in": _rename_in,
    "move out": lambda d: os.rename(d / "f2", d.parent / "other" / "f2"),
    "write": lambda d: write(d / "f2", b"longer now"),
    "append same fd": lambda d: open(d / "f3", "ab").write(b"more"),  # noqa: SIM115
    "truncate": lambda d: os.truncate(d / "f4", 1),
    "chmod": lambda d: os.chmod(d / "f1", 0o600),
    "touch": lambda d: os.utime(d / "f1", ns=(1_000_000_000, 2_000_000_000)),
    "inside a subfolder": lambda d: write(d / "sub" / "more", b"m"),
    "subfolder touched": lambda d: os.utime(d / "sub", ns=(5, 6)),
    "symlink added": lambda d: os.symlink("f1", d / "link"),
    "special file": lambda d: os.mkfifo(d / "fifo"),
    "folder replaced": _replace_folder,
    "a pancbt beside": lambda d: write(d / "f0-pancbt.vmdk", b"p"),
}


@pytest.mark.parametrize("kind", sorted(CHANGES))
def test_every_change_shows_past_the_ttl(root: Path, monkeypatch, kind: str) -> None:
    c = Counted(root, FakeClock())
    listed = c.watched(monkeypatch)
    c.clock.advance(1.0)
    assert c.listing(monkeypatch) is listed  # renewed, no change yet
    CHANGES[kind](root / "d")
    assert c.listing(monkeypatch) is listed  # within the ttl: as without watches
    c.clock.advance(1.0)
    now = c.listing(monkeypatch)
    assert dict(now.entries) == fresh(root) and now.withheld == fresh_withheld(root)
    assert now is not listed or dict(listed.entries) == fresh(root)  # type: ignore[attr-defined]


def fresh_withheld(root: Path) -> frozenset:
    return Passthrough(make_ctx(root)).listing(("d",)).withheld


def test_a_file_with_other_names_is_checked_at_each_renewal(root: Path, monkeypatch) -> None:
    """Written through another name, a file's folder gets no event: its lstat says."""
    _hard_link_write(root / "d")
    c = Counted(root, FakeClock())
    listed = c.watched(monkeypatch)
    c.clock.advance(1.0)
    assert c.listing(monkeypatch) is listed
    with open(root / "other" / "link", "ab") as f:  # not through d/
        f.write(b"through the other name")
    c.clock.advance(1.0)
    assert dict(c.listing(monkeypatch).entries) == fresh(root)
    assert c.listing(monkeypatch).entries["f3"].attrs.size == 3 + len(b"through the other name")


def test_past_the_span_every_entry_is_checked(root: Path, monkeypatch) -> None:
    c = Counted(root, FakeClock(), span=3.0)
    listed = c.watched(monkeypatch)
    scans = c.scans
    lstats = _count_lstats(monkeypatch)
    c.clock.advance(1.0)
    c.listing(monkeypatch)
    c.clock.advance(1.0)
    c.listing(monkeypatch)
    assert c.scans == scans and c.watches.verified == 0  # 2 s after the scan: renewed twice
    assert lstats == ["sub", "sub"]  # only the subfolder's lstat (no event covers it)
    c.clock.advance(1.0)
    assert c.listing(monkeypatch) is listed  # 3 s: every entry lstat'd, not a scan
    assert c.scans == scans and c.watches.verified == 1
    assert lstats[2] == "sub" and sorted(lstats[3:]) == sorted(listed.entries)  # type: ignore[attr-defined]
    for _ in range(2):
        c.clock.advance(1.0)
        assert c.listing(monkeypatch) is listed  # the check counts as a scan for the span
    assert c.watches.verified == 1 and len(lstats) == 3 + len(listed.entries) + 2  # type: ignore[attr-defined]
    c.clock.advance(1.0)
    assert c.listing(monkeypatch) is listed and c.watches.verified == 2


def _count_lstats(monkeypatch) -> list[str]:
    """The names ``os.lstat`` is asked of from now on (its path's last part)."""
    seen: list[str] = []
    real = os.lstat

    def lstat(p, *a, **kw):  # type: ignore[no-untyped-def]
        seen.append(os.path.basename(p))
        return real(p, *a, **kw)

    monkeypatch.setattr(os, "lstat", lstat)
    if watch.native is not None:  # the pass in C (merge/_native.c): its entries, in turn

        class Counting:
            @staticmethod
            def times_match(fd, entries):  # type: ignore[no-untyped-def]
                found = real_native.times_match(fd, entries)
                seen.extend(entries if found else ())
                return found

        real_native = watch.native
        monkeypatch.setattr(watch, "native", Counting)
    return seen


def _mmap_write(d: Path) -> None:
    """Bytes written through a shared mapping, the file kept open: no event at all."""
    f = open(d / "f4", "r+b")  # noqa: SIM115
    m = mmap.mmap(f.fileno(), 4)
    m[0:1] = b"Z"
    m.flush()
    _kept_open.append((m, f))


_kept_open: list = []


def _link_elsewhere(d: Path) -> None:
    os.link(d / "f2", d.parent / "other" / "f2-link")  # f2's ctime moves


@pytest.mark.parametrize("change", [_mmap_write, _link_elsewhere])
def test_a_change_without_an_event_shows_past_the_span(root: Path, monkeypatch, change) -> None:
    c = Counted(root, FakeClock(), span=3.0)
    listed = c.watched(monkeypatch)
    c.clock.advance(1.0)
    assert c.listing(monkeypatch) is listed
    time_before = os.stat(root / "d").st_mtime_ns
    time.sleep(0.01)  # a later ctime than the scan saw
    change(root / "d")
    assert os.stat(root / "d").st_mtime_ns == time_before  # the folder did not change
    c.clock.advance(1.0)
    assert c.listing(monkeypatch) is listed  # no event: within ttl + span, as documented
    c.clock.advance(1.0)
    now = c.listing(monkeypatch)
    assert now is not listed and dict(now.entries) == fresh(root)
    for m, f in _kept_open:
        m.close()
        f.close()
    _kept_open.clear()


def test_reads_that_change_nothing_cost_no_scan(root: Path, monkeypatch) -> None:
    """The server's own reads (O_NOATIME) make an IN_ACCESS event each: the entry is
    lstat'd, not the folder scanned; a read that moves the atime shows."""
    os.utime(root / "d" / "f3", ns=(1, 2_000_000_000))  # atime before mtime: relatime moves it
    c = Counted(root, FakeClock())
    listed = c.watched(monkeypatch)
    for name in ("f1", "f2", "f3"):
        fd = os.open(root / "d" / name, os.O_RDONLY | os.O_NOATIME)
        os.read(fd, 10)
        os.close(fd)
    c.clock.advance(1.0)
    lstats = _count_lstats(monkeypatch)
    assert c.listing(monkeypatch) is listed and c.scans == 2
    assert sorted(lstats) == ["f1", "f2", "f3", "sub"]
    with open(root / "d" / "f3", "rb") as f:  # another reader: f3's atime moves
        f.read()
    c.clock.advance(1.0)
    now = c.listing(monkeypatch)
    assert now is not listed and c.scans == 3 and dict(now.entries) == fresh(root)
    assert now.entries["f3"].attrs.atime_ns != 1


def test_too_many_entries_named_means_a_scan(root: Path, monkeypatch) -> None:
    c = Counted(root, FakeClock(), max_checks=2)
    listed = c.watched(monkeypatch)
    for name in ("f1", "f2", "f3"):  # f0 is empty: a read of nothing makes no event
        fd = os.open(root / "d" / name, os.O_RDONLY | os.O_NOATIME)
        os.read(fd, 1)
        os.close(fd)
    c.clock.advance(1.0)
    assert c.listing(monkeypatch) is listed and c.scans == 3  # the same entries, but scanned


def test_a_network_file_system_is_never_watched(root: Path, monkeypatch) -> None:
    c = Counted(root, FakeClock(), fs_type_of=lambda p: NFS_SUPER_MAGIC)
    c.watched(monkeypatch)
    for _ in range(3):
        c.clock.advance(1.0)
        c.listing(monkeypatch)
    assert c.scans == 5 and c.watches.renewed == 0 and not c.watches._by_path


def test_an_unknown_file_system_type_is_never_watched(root: Path, monkeypatch) -> None:
    c = Counted(root, FakeClock(), fs_type_of=lambda p: None)
    c.watched(monkeypatch)
    c.clock.advance(1.0)
    c.listing(monkeypatch)
    assert c.scans == 3 and c.watches.renewed == 0


def test_a_queue_overflow_means_a_scan(root: Path, monkeypatch) -> None:
    c = Counted(root, FakeClock())
    listed = c.watched(monkeypatch)
    overflow = struct.pack("iIII", -1, IN_Q_OVERFLOW, 0, 0)
    fed = [overflow]
    real = watch._read

    def read(fd: int, n: int) -> bytes:
        return fed.pop() if fed else real(fd, n)

    monkeypatch.setattr(watch, "_read", read)
    c.clock.advance(1.0)
    scans = c.scans
    assert c.listing(monkeypatch) is listed  # the same entries: the same object...
    assert c.scans == scans + 1  # ...but scanned
    c.clock.advance(1.0)
    assert c.listing(monkeypatch) is listed and c.scans == scans + 1  # watched again


def test_small_folders_and_first_listings_are_not_watched(root: Path, monkeypatch) -> None:
    c = Counted(root, FakeClock())
    for _ in range(3):
        c.listing(monkeypatch, ("other",))  # one entry: below min_entries
        c.clock.advance(1.0)
    assert c.scans == 3 and not c.watches._by_path


def test_at_most_limit_folders_watched(root: Path, monkeypatch) -> None:
    for i in range(4):
        write(root / "e" / f"f{i}", b"e")
    c = Counted(root, FakeClock(), limit=1)
    c.watched(monkeypatch)
    c.listing(monkeypatch, ("e",))
    c.clock.advance(1.0)
    c.listing(monkeypatch, ("e",))  # watched now: d is not any more
    assert list(c.watches._by_path) == [("e",)]
    scans = c.scans
    c.clock.advance(1.0)
    c.listing(monkeypatch, ("e",))
    c.listing(monkeypatch)
    assert c.scans == scans + 1  # d scanned, e renewed


def test_a_scan_prepared_again_meanwhile_is_not_recorded(root: Path) -> None:
    """Two scans of one folder at once: only the later one's listing can be renewed
    (its clearing of the flag may hide an event the earlier one missed)."""
    w = FolderWatches(FakeClock(), min_entries=0)
    spath = str(root / "d")
    first = w.prepare(("d",), spath)
    second = w.prepare(("d",), spath)
    assert first is not None and second is not None
    a, b = Listing({}), Listing({})
    w.scanned(first, a, [])
    assert not w.renew(("d",), a)
    w.scanned(second, b, [])
    assert w.renew(("d",), b)
    w.close()


def test_a_forked_child_opens_its_own_descriptor(root: Path) -> None:
    w = FolderWatches(FakeClock(), min_entries=1)
    assert w.prepare(("d",), str(root / "d")) is not None
    fd = w._fd
    w._pid = -1  # as in a child of the process that opened it
    assert w.prepare(("d",), str(root / "d")) is not None
    assert w._fd != fd
    os.close(fd)
    w.close()


def test_the_stack_watches_by_default_and_can_be_told_not_to(root: Path) -> None:
    on, off = build_stack(str(root)), build_stack(str(root), watch_folders=False)
    assert on.passthrough._watches is not None and off.passthrough._watches is None
    on.close()
    off.close()


def test_a_folder_whose_ancestor_was_replaced_is_scanned(root: Path, monkeypatch) -> None:
    """The watch follows the folder moved away with its parent (no event on it): the
    path's folder is another one now."""
    for i in range(4):
        write(root / "p" / "d" / f"f{i}", b"p")
    c = Counted(root, FakeClock())
    c.listing(monkeypatch, ("p", "d"))
    c.clock.advance(1.0)
    listed = c.listing(monkeypatch, ("p", "d"))
    c.clock.advance(1.0)
    assert c.listing(monkeypatch, ("p", "d")) is listed
    os.rename(root / "p", root / "p-old")  # nothing read nor written in p-old/d
    for i in range(4):
        write(root / "p" / "d" / f"f{i}", b"q" * i)
    c.clock.advance(1.0)
    now = c.listing(monkeypatch, ("p", "d"))
    assert dict(now.entries) == fresh(root, ("p", "d")) and now is not listed


def test_a_folder_of_many_hard_links_is_scanned(root: Path, monkeypatch) -> None:
    """More entries to lstat than ``max_checks``: renewing costs what a scan does."""
    for i in range(3):
        os.link(root / "d" / f"f{i}", root / "other" / f"l{i}")
    c = Counted(root, FakeClock(), max_checks=2)  # f0..f2 and sub: 4 to check
    c.watched(monkeypatch)
    scans = c.scans
    c.clock.advance(1.0)
    c.listing(monkeypatch)
    assert c.scans == scans + 1 and c.watches.renewed == 0


def test_threads_listing_while_the_folder_changes(root: Path) -> None:
    """Listers on several threads (the clock moving past the ttl) while one thread
    changes the folder: once the changes stop and a ttl passes, every thread lists
    what the storage holds, renewed or scanned."""
    clock = FakeClock()
    watches = FolderWatches(clock, min_entries=3)
    pt = Passthrough(make_ctx(root, clock, ttl=1.0), watches=watches)
    stop = threading.Event()

    def work(seed: int) -> None:
        rng = random.Random(seed)
        if seed == 0:  # the writer
            for i in range(200):
                p = root / "d" / f"w{rng.randrange(8)}"
                if p.exists() and rng.random() < 0.5:
                    p.unlink()
                else:
                    write(p, b"w" * rng.randrange(5))
                if i % 20 == 0:
                    clock.advance(0.6)
            stop.set()
            return
        while not stop.is_set():
            pt.listing(("d",))
            if rng.random() < 0.2:
                clock.advance(0.3)

    assert run_threads(work, 6) == []
    clock.advance(1.0)
    want = fresh(root)
    for _ in range(3):
        assert dict(pt.listing(("d",)).entries) == want
        clock.advance(1.0)
    watches.close()


def test_one_folder_under_two_paths_is_one_watch(root: Path) -> None:
    """Reached through a symbolic link above it, the folder is the same watch for the
    kernel: the later path has it, the earlier one's listing is not renewed.  A
    symbolic link to the folder itself is not watched (IN_DONT_FOLLOW)."""
    os.symlink(".", root / "alias")
    os.symlink("d", root / "link")
    w = FolderWatches(FakeClock(), min_entries=0)
    first = w.prepare(("d",), str(root / "d"))
    assert first is not None
    a, b = Listing({}), Listing({})
    w.scanned(first, a, [])
    second = w.prepare(("alias", "d"), str(root / "alias" / "d"))
    assert second is not None and second[0] is not first[0]
    w.scanned(second, b, [])
    assert list(w._by_path) == [("alias", "d")]
    assert not w.renew(("d",), a) and w.renew(("alias", "d"), b)
    assert w.prepare(("link",), str(root / "link")) is None
    w.close()


def test_an_entry_named_while_the_checks_ran_means_no_renewal(root: Path, monkeypatch) -> None:
    """An event on a name not yet checked, read after the checks: not renewed (a scan);
    the name is checked at the next renewal."""
    c = Counted(root, FakeClock())
    listed = c.watched(monkeypatch)
    wd = c.watches._by_path[("d",)].wd
    name = b"f2".ljust(16, b"\0")
    fed: list[bytes] = []
    real_read, real_lstat = watch._read, os.lstat

    def read(fd: int, n: int) -> bytes:
        return fed.pop() if fed else real_read(fd, n)

    def lstat(p, *a, **kw):  # type: ignore[no-untyped-def]
        if not fed:  # while the checks run, an event comes
            fed.append(struct.pack("iIII", wd, watch.IN_MODIFY, 0, len(name)) + name)
        return real_lstat(p, *a, **kw)

    monkeypatch.setattr(watch, "_read", read)
    c.clock.advance(1.0)
    monkeypatch.setattr(os, "lstat", lstat)
    assert c.listing(monkeypatch) is listed and c.scans == 3  # the same entries, scanned
    monkeypatch.setattr(os, "lstat", real_lstat)
    c.clock.advance(1.0)
    assert c.listing(monkeypatch) is listed and c.scans == 3  # renewed


def test_a_folder_large_in_bytes_is_watched_from_its_first_scan(root: Path, monkeypatch) -> None:
    """Its second listing is a renewal, not a scan; a folder small in bytes, or whose
    first listing is small after all, is watched from its second scan, as before."""
    size = os.stat(root / "d").st_size
    c = Counted(root, FakeClock(), first_size=size)
    listed = c.listing(monkeypatch)
    c.clock.advance(1.0)
    assert c.listing(monkeypatch) is listed and c.scans == 1 and c.watches.renewed == 1
    c.listing(monkeypatch, ("other",))  # large enough in bytes, one entry: not kept watched
    assert list(c.watches._by_path) == [("d",)]
    c = Counted(root, FakeClock(), first_size=size + 1)
    listed = c.listing(monkeypatch)
    c.clock.advance(1.0)
    assert c.listing(monkeypatch) is listed and c.scans == 2 and c.watches.renewed == 0


# -- the refresh ahead (FolderWatches.refresh_due, the thread's round) ---------------------


def test_refresh_ahead_runs_the_pass_before_the_span_ends(root: Path, monkeypatch) -> None:
    c = Counted(root, FakeClock(), span=3.0)
    listed = c.watched(monkeypatch)  # scanned at t (now)
    scans = c.scans
    c.clock.advance(2.4)
    wait = c.watches.refresh_due()
    assert c.watches.refreshed == 0 and wait == pytest.approx(0.1)  # due at t + 2.5
    c.clock.advance(0.1)
    lstats = _count_lstats(monkeypatch)
    c.watches.refresh_due()
    assert c.watches.refreshed == 1 and sorted(lstats) == sorted(["sub", *listed.entries])  # type: ignore[attr-defined]
    assert c.watches.refresh_due() == pytest.approx(2.5)  # the next one: 2.5 s after the pass
    c.clock.advance(1.0)  # t + 3.5: past the span since the scan, not since the pass
    del lstats[:]
    assert c.listing(monkeypatch) is listed and c.scans == scans
    assert c.watches.verified == 0 and lstats == ["sub"]  # no pass in the listing


def test_a_change_after_a_refresh_shows_within_the_bound(root: Path, monkeypatch) -> None:
    """A change no event reports, made just after a pass ahead: the next pass ahead
    finds it, and the listing after it is a scan, within ttl + span of the change."""
    c = Counted(root, FakeClock(), span=3.0)
    listed = c.watched(monkeypatch)
    c.clock.advance(2.5)
    c.watches.refresh_due()
    assert c.watches.refreshed == 1
    time.sleep(0.01)  # a later ctime than the scan saw
    changed_at = c.clock()
    _link_elsewhere(root / "d")
    c.clock.advance(1.0)
    assert c.listing(monkeypatch) is listed  # within the bound, as documented
    c.clock.advance(1.5)
    c.watches.refresh_due()  # the pass ahead finds the change: no pass in the listing
    assert c.watches.refreshed == 1 and c.watches._by_path[("d",)].dirty
    c.clock.advance(0.5)
    scans = c.scans
    now = c.listing(monkeypatch)
    assert c.clock() - changed_at <= 1.0 + 3.0
    assert now is not listed and c.scans == scans + 1 and dict(now.entries) == fresh(root)


def test_a_change_during_a_refresh_shows_within_the_bound(root: Path, monkeypatch) -> None:
    """The pass ahead counts from its start: a change made while it ran (after it
    looked at the entry) is found by a listing ``span`` after that start."""
    c = Counted(root, FakeClock(), span=3.0)
    listed = c.watched(monkeypatch)
    c.clock.advance(2.5)
    started = c.clock()
    real = watch._times_match

    def slow_pass(fd, entries):  # type: ignore[no-untyped-def]
        found = real(fd, entries)
        time.sleep(0.01)  # a later ctime than the pass saw
        _link_elsewhere(root / "d")  # after every entry was looked at
        c.clock.advance(1.0)  # the pass took a second
        return found

    monkeypatch.setattr(watch, "_times_match", slow_pass)
    c.watches.refresh_due()
    monkeypatch.setattr(watch, "_times_match", real)
    assert c.watches.refreshed == 1
    c.clock.advance(1.0)
    assert c.listing(monkeypatch) is listed  # 2 s after the pass began
    c.clock.now = started + 3.0  # span after the start: the listing runs the pass itself
    now = c.listing(monkeypatch)
    assert now is not listed and dict(now.entries) == fresh(root)


def test_a_folder_changed_meanwhile_is_not_refreshed(root: Path, monkeypatch) -> None:
    c = Counted(root, FakeClock(), span=3.0)
    listed = c.watched(monkeypatch)
    write(root / "d" / "new", b"n")  # an event: flagged
    c.clock.advance(2.5)
    lstats = _count_lstats(monkeypatch)
    assert c.watches.refresh_due() is None and c.watches.refreshed == 0 and not lstats
    c.clock.advance(1.0)
    assert c.listing(monkeypatch) is not listed


def test_refresh_ahead_stops_after_the_idle_limit(root: Path, monkeypatch) -> None:
    c = Counted(root, FakeClock(), span=3.0, idle=10.0)
    c.watched(monkeypatch)
    lstats = _count_lstats(monkeypatch)
    for _ in range(3):  # 7.5 s: passes at 2.5, 5.0, 7.5
        c.clock.advance(2.5)
        c.watches.refresh_due()
    assert c.watches.refreshed == 3 and lstats
    c.clock.advance(2.5)  # 10 s since the listing
    del lstats[:]
    assert c.watches.refresh_due() is None and c.watches.refreshed == 3 and not lstats
    c.clock.advance(100.0)
    assert c.watches.refresh_due() is None and not lstats


def test_refresh_ahead_is_bounded_in_entries_and_by_the_watches(root: Path, monkeypatch) -> None:
    for i in range(4):
        write(root / "e" / f"f{i}", b"e")
    c = Counted(root, FakeClock(), span=3.0, refresh_entries=6)  # d: 6 entries, e: 4
    c.watched(monkeypatch)
    c.listing(monkeypatch, ("e",))
    c.clock.advance(1.0)
    c.listing(monkeypatch, ("e",))  # e listed last: first to be refreshed
    c.clock.advance(2.5)
    c.watches.refresh_due()
    assert c.watches.refreshed == 1  # e: 4 entries; d's 6 past what is left
    assert c.watches._by_path[("e",)].scanned_at == c.clock()
    assert c.watches._by_path[("d",)].scanned_at == c.clock() - 3.5
    c.watches.limit = 1
    c.clock.advance(1.0)
    write(root / "f" / "x", b"x")
    for i in range(4):
        write(root / "g" / f"f{i}", b"g")
    c.listing(monkeypatch, ("g",))
    c.clock.advance(1.0)
    c.listing(monkeypatch, ("g",))  # watched: d and e are not any more
    assert list(c.watches._by_path) == [("g",)]
    c.clock.advance(2.5)
    c.watches.refresh_due()
    assert c.watches.refreshed == 2  # g only


def test_the_refresh_thread_runs_and_ends(root: Path, monkeypatch) -> None:
    """A real thread, a real clock: passes ahead while listed, none after the idle
    limit (the thread ends), another thread on the next listing, none after close.
    Threads of other tests' watches (a namespace left to the collector, say) may
    still run: only this test's new ones count."""
    others = set(_refresh_threads())
    w = FolderWatches(
        time.monotonic, min_entries=3, span=0.3, ahead=0.1, idle=1.0, refresh_ahead=True
    )
    pt = Passthrough(make_ctx(root, time.monotonic, ttl=0.05), watches=w)
    listed = pt.listing(("d",))
    time.sleep(0.06)
    listed = pt.listing(("d",))  # watched from this scan
    assert w._thread_pid == os.getpid()
    deadline = time.monotonic() + 5.0
    while w.refreshed < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert w.refreshed >= 2
    while w._thread_pid and time.monotonic() < deadline + 5.0:
        time.sleep(0.05)
    assert w._thread_pid == 0  # idle: ended
    ended = w.refreshed
    time.sleep(0.5)
    assert w.refreshed == ended
    assert not set(_refresh_threads()) - others
    assert pt.listing(("d",)) is listed  # renewed (its own pass): a thread again
    assert w._thread_pid == os.getpid()
    pt.close()
    time.sleep(0.5)
    assert not set(_refresh_threads()) - others


def _refresh_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "folder-refresh"]
