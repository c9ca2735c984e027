"""merge._native (merge/_native.c) against its pure-Python twin, on the same inputs.

``times_match``: merge.watch's pass over a folder's entries.  On a real
folder (names of every kind: ASCII, UTF-8, bytes that are not UTF-8), with
the kept values either the entries' own or one of them moved, names that
are not there and names holding a NUL byte: the C loop must answer what the
twin answers, raise what it raises (type, errno, file name), and decline
(None) only where a kept value does not fit its 64 bits.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from merge import watch
from merge.attrs import attrs_from_stat
from merge.layer import Entry, Stored

native = pytest.importorskip("merge._native")

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
