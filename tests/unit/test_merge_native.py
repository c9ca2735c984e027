"""merge._native (merge/_native.c) against its pure-Python twins, on the same inputs.

``times_match``: merge.watch's pass over a folder's entries.  On a real
folder (names of every kind: ASCII, UTF-8, bytes that are not UTF-8), with
the kept values either the entries' own or one of them moved, names that
are not there and names holding a NUL byte: the C loop must answer what the
twin answers, raise what it raises (type, errno, file name), and decline
(None) only where a kept value does not fit its 64 bits.

``scan``: merge.passthrough's scan.  On real folders of files, folders with
subfolders, files with other hard links, symbolic links and FIFOs, with a
``before`` of entries kept from an earlier scan (some of them stale): the
same entries (attributes, origins, the very objects kept), the same checks,
and None (the twin's own path) wherever an entry is not a file or a folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from merge import passthrough, watch
from merge.attrs import _PERMS, _USED, attrs_from_stat, id_hash, ids_in
from merge.layer import Entry, Stored
from merge.namespace import Attrs
from merge.passthrough import Passthrough
from tests.unit.fake_layer import make_ctx

native = pytest.importorskip("merge._native")
passthrough.give_layout(native)  # as merge.passthrough does unless RECOVERY_FS_PURE=1

FIELDS = ("ctime_ns", "mtime_ns", "atime_ns", "used")

names = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0"), min_size=1),
    st.binary(min_size=1, max_size=40)
    .filter(lambda b: b"/" not in b and b"\0" not in b)
    .map(os.fsdecode),  # bytes that are not UTF-8: surrogate-escaped names
).filter(lambda n: n not in {".", ".."} and len(os.fsencode(n)) <= 255)


def outcome(f: Any, fd: int, entries: dict[str, Entry]) -> tuple[Any, ...]:
    try:
        return ("ok", f(fd, entries))
    except OSError as e:
        return ("oserror", e.errno, e.filename)
    except ValueError:
        return ("valueerror",)


def moved(entry: Entry, field: str, delta: int) -> Entry:
    return Entry(
        dataclasses.replace(entry.attrs, **{field: getattr(entry.attrs, field) + delta}),
        entry.origin,
    )


DELTAS = [-1, 1, 512, 2**70]  # 2**70: past 64 bits, the C loop declines


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    present=st.lists(names, min_size=0, max_size=12, unique=True),
    absent=st.lists(names, max_size=2, unique=True),
    change=st.one_of(
        st.none(),
        st.tuples(st.integers(0, 11), st.sampled_from(FIELDS), st.sampled_from(DELTAS)),
    ),
    nul=st.booleans(),
    order=st.randoms(use_true_random=False),
)
def test_times_match_equals_its_twin(  # noqa: PLR0917
    tmp_path: Path, present: list[str], absent: list[str], change: Any, nul: bool, order: Any
) -> None:
    folder = tmp_path / "f"
    folder.mkdir(exist_ok=True)
    for old in os.listdir(folder):
        os.unlink(os.path.join(folder, old))
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        entries: dict[str, Entry] = {}
        for i, name in enumerate(present):
            p = os.path.join(os.fsencode(folder), os.fsencode(name))
            with open(p, "wb") as f:
                f.write(b"x" * i)
            entries[name] = Entry(attrs_from_stat(os.lstat(p), ("f", name)), Stored(os.fsdecode(p)))
        for name in absent:
            if name not in entries:
                entries[name] = next(iter(entries.values()), None) or Entry(
                    attrs_from_stat(os.lstat(folder), ("f",)), Stored(str(folder))
                )
        if nul:
            entries["a\0b"] = next(iter(entries.values()), None) or Entry(
                attrs_from_stat(os.lstat(folder), ("f",)), Stored(str(folder))
            )
        keys = list(entries)
        order.shuffle(keys)
        entries = {k: entries[k] for k in keys}
        if change is not None and present:
            i, field, delta = change
            name = present[i % len(present)]
            entries[name] = moved(entries[name], field, delta)
        want = outcome(watch._times_match_py, fd, entries)
        got = outcome(native.times_match, fd, entries)
        if got == ("ok", None):  # declined: only for a value past 64 bits
            assert change is not None and change[2] == 2**70
        else:
            assert got == want
        assert outcome(watch._times_match, fd, entries) == want  # what merge.watch uses
    finally:
        os.close(fd)


def test_times_match_answers_before_a_missing_entry_as_its_twin(tmp_path: Path) -> None:
    """Order matters: a difference before a missing name is False, after it an OSError."""
    (tmp_path / "a").write_bytes(b"a")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        a = Entry(attrs_from_stat(os.lstat(tmp_path / "a"), ("a",)), Stored(str(tmp_path / "a")))
        wrong = moved(a, "mtime_ns", 1)
        for entries in ({"a": wrong, "gone": a}, {"gone": a, "a": wrong}, {"a": a}, {}):
            assert outcome(native.times_match, fd, entries) == outcome(
                watch._times_match_py, fd, entries
            )
        assert native.times_match(fd, {"a": wrong, "gone": a}) is False
        with pytest.raises(FileNotFoundError):
            native.times_match(fd, {"gone": a, "a": wrong})
        assert native.times_match(fd, {"a": a}) is True
    finally:
        os.close(fd)


def test_times_match_refuses_what_is_not_a_listing(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(TypeError):
            native.times_match(fd, [("a", None)])
        with pytest.raises(TypeError):
            native.times_match(fd, {b"a": None})
        with pytest.raises(AttributeError):
            native.times_match(fd, {"a": object()})
        root = Entry(attrs_from_stat(os.lstat(tmp_path), ()), Stored("/"))
        with pytest.raises(OSError):
            native.times_match(-1, {"a": root})
    finally:
        os.close(fd)


def test_pure_mode_uses_the_twin() -> None:
    """``RECOVERY_FS_PURE=1`` at import: merge.watch runs the Python loop."""
    import subprocess
    import sys

    code = "from merge import watch; print(watch.native is None)"
    env = {**os.environ, "RECOVERY_FS_PURE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert out.stdout.strip() == "True", out.stderr
    env.pop("RECOVERY_FS_PURE")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert out.stdout.strip() == "False", out.stderr


# -- scan: merge.passthrough's scan of a folder of files and folders -------------------

KINDS = ("file", "dir", "hardlink", "symlink", "fifo")


def _make(folder: Path, name: str, kind: str, i: int) -> None:
    p = os.path.join(os.fsencode(folder), os.fsencode(name))
    if kind == "dir":
        os.mkdir(p)
        for k in range(i % 4):
            os.mkdir(os.path.join(p, b"s%d" % k))  # nlink 2 + k
    elif kind == "symlink":
        os.symlink(b"elsewhere", p)
    elif kind == "fifo":
        os.mkfifo(p)
    else:
        with open(p, "wb") as f:
            f.write(b"y" * (i * 700))
        if kind == "hardlink":
            os.link(p, os.path.join(os.fsencode(folder.parent), b"other-%d" % i))


def _shape(entries: dict[str, Entry]) -> list[tuple[Any, ...]]:
    """Everything of the entries that answers or memory depends on."""
    out = []
    for name, e in entries.items():
        a = e.attrs
        assert type(e) is Entry and type(e.origin) is Stored and type(a) is Attrs
        assert a.mode is _PERMS[a.mode] and (a.used >= 256 * 512 or a.used is _USED[a.used // 512])
        assert e.origin.name is name or e.origin.name == name
        out.append((name, a, e.origin.folder, e.origin.name, e.depth))
    return out


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    made=st.dictionaries(names, st.sampled_from(KINDS), max_size=10),
    kept=st.sets(st.integers(0, 9), max_size=10),
    stale=st.sets(st.integers(0, 9), max_size=3),
    want_checks=st.booleans(),
    max_checks=st.integers(0, 4),
    ids_in_c=st.booleans(),
)
def test_scan_equals_its_twin(  # noqa: PLR0917
    tmp_path: Path,
    made: dict[str, str],
    kept: set[int],
    stale: set[int],
    want_checks: bool,
    max_checks: int,
    ids_in_c: bool,
) -> None:
    shutil.rmtree(tmp_path / "s", ignore_errors=True)
    root = tmp_path / "s" / "root"
    folder = root / "f"
    folder.mkdir(parents=True)
    for i, (name, kind) in enumerate(made.items()):
        _make(folder, name, kind, i)
    pt = Passthrough(make_ctx(root))
    spath = pt.storage_path(("f",))
    fid = ids_in(("f",))
    sep = os.path.join(spath, "")
    first, _ = pt._scan_py(("f",), spath, {}, fid, sep, None, [], set(), None, 0)
    names_in = list(first)
    before: dict[str, Entry] = {}
    for k in sorted(kept):  # some kept from a scan before, some of them stale
        if k < len(names_in):
            e = first[names_in[k]]
            before[names_in[k]] = moved(e, "size", 1) if k in stale else e
    before["gone"] = next(iter(first.values()), None) or Entry(
        attrs_from_stat(os.lstat(folder), ("f",)), Stored(spath)
    )
    withheld: set[str] = set()
    checks = [] if want_checks else None
    want = pt._scan_py(("f",), spath, before, fid, sep, None, [], withheld, checks, max_checks)
    ids = id_hash(("f",)) if ids_in_c else fid  # the ids hashed in C, or ids_in's own
    got = native.scan(spath, before, ids, sep, want_checks, max_checks)
    plain = all(kind in {"file", "dir", "hardlink"} for kind in made.values())
    if not plain:
        assert got is None  # a link or a special file: the twin's path
        return
    assert got is not None and not withheld
    entries, got_checks = got
    assert _shape(entries) == _shape(want[0])
    for name, e in entries.items():  # an entry kept exactly when its attributes still match
        assert (e is before.get(name)) == (want[0][name] is before.get(name))
    if want[1] is None:
        assert got_checks is None
    else:
        assert got_checks is not None
        assert [(n, e.attrs) for n, e in got_checks] == [(n, e.attrs) for n, e in want[1]]
        assert all(e is entries[n] for n, e in got_checks)


def test_scan_declines_what_it_cannot_read(tmp_path: Path) -> None:
    """A folder that is not there or not a folder: None (the twin raises as always)."""
    fid = ids_in(("f",))
    assert native.scan(str(tmp_path / "missing"), {}, fid, "/x/", False, 0) is None
    (tmp_path / "file").write_bytes(b"")
    assert native.scan(str(tmp_path / "file"), {}, fid, "/x/", False, 0) is None
    entries, checks = native.scan(str(tmp_path), {}, fid, "/x/", True, 0)
    assert list(entries) == ["file"] and checks == []


def test_the_passthrough_lists_the_same_with_and_without_the_c_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(30):
        (tmp_path / "f").mkdir(exist_ok=True)
        (tmp_path / "f" / f"n{i}").write_bytes(b"z" * i)
    (tmp_path / "f" / "sub").mkdir()
    c_scan = Passthrough(make_ctx(tmp_path)).listing(("f",))
    monkeypatch.setattr(passthrough, "native", None)
    py_scan = Passthrough(make_ctx(tmp_path)).listing(("f",))
    assert _shape(dict(c_scan.entries)) == _shape(dict(py_scan.entries))
    assert c_scan.withheld == py_scan.withheld


# -- hash64: BLAKE2b-64 by libb2, against hashlib -------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    listed=st.lists(names | st.text(max_size=300), max_size=8),
    person=st.binary(max_size=16),
    prefix=st.binary(max_size=300) | st.sampled_from([b"", b"p" * 127, b"p" * 128, b"p" * 129]),
    suffix=st.sampled_from([b"", b"\0", b"s" * 128]),
)
def test_hash64_is_blake2b(listed: list[str], person: bytes, prefix: bytes, suffix: bytes) -> None:
    """Every length around the 128-byte blocks, names not UTF-8, any personalization."""
    want = [
        int.from_bytes(
            hashlib.blake2b(
                prefix + n.encode("utf-8", "surrogateescape") + suffix,
                digest_size=8,
                person=person,
            ).digest(),
            "big",
        )
        for n in listed
    ]
    assert native.hash64(listed, person, prefix, suffix) == want


def test_hash64_refuses_what_it_cannot_hash() -> None:
    with pytest.raises(ValueError):
        native.hash64(["a"], b"p" * 17, b"", b"")
    with pytest.raises(TypeError):
        native.hash64([b"a"], b"", b"", b"")
    with pytest.raises(TypeError):
        native.hash64(("a",), b"", b"", b"")


def test_the_ids_and_cookies_made_in_c_are_the_python_ones() -> None:
    """What merge.attrs and nfsd.programs.listings persist: the same with and without C."""
    from nfsd.programs import listings

    listed = ["a", "é", os.fsdecode(b"\xff"), "x" * 255, "0"]
    pairs = [(n, None) for n in listed]
    got = [(h >> 1) or 1 for h in native.hash64(listed, b"", b"", b"")]
    assert got == listings._cookies_py(pairs) == [listings.cookie_of(n) for n in listed]
    for folder in ((), ("big",), ("a", "é" * 100)):
        person, prefix = id_hash(folder)
        ids = [h & (2**63 - 1) for h in native.hash64(listed, person, prefix, b"\0")]
        assert [i if i > 1 else 2 for i in ids] == [ids_in(folder)(n) for n in listed]


def test_entries_whose_attributes_change_the_dicts_do_not_crash(tmp_path: Path) -> None:
    """Hostile values (never a listing's): an ``attrs`` that empties the dict being read.
    An answer or an exception, never a read of freed memory (run under a debug build
    or valgrind to see it; here: no crash, and the objects still whole)."""
    for i in range(50):
        (tmp_path / f"n{i}").write_bytes(b"n")
    real = Entry(attrs_from_stat(os.lstat(tmp_path / "n0"), ("n0",)), Stored("/x/n0"))

    class Evil:
        def __init__(self, d: dict) -> None:
            self.d = d

        @property
        def attrs(self):  # type: ignore[no-untyped-def]
            self.d.clear()
            return real.attrs

    entries: dict[str, Any] = {}
    entries.update({f"n{i}": Evil(entries) for i in range(50)})
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert native.times_match(fd, entries) in {True, False}  # what was read: n0 at most
    finally:
        os.close(fd)
    before: dict[str, Any] = {}
    before.update({f"n{i}": Evil(before) for i in range(50)})
    found = native.scan(str(tmp_path), before, ids_in(()), str(tmp_path) + "/", False, 0)
    assert found is not None and len(found[0]) == 50 and not before
