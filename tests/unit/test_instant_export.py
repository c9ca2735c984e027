"""``instant export``'s copy: the same bytes whichever way the kernel lets it copy.

Runs are copied with ``copy_file_range`` where the file systems allow it, in
pieces as short as the kernel returns, else read and written in chunks; each
way, every file of the export equals the session's view of it (base bytes,
overlay bytes, holes), and nothing is left out when the kernel copies less
than asked.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from instant import export, namespace
from instant.export import export_tree, walk
from instant.namespace import SessionReader
from merge.namespace import ZERO_FD, Kind
from tests.unit.test_instant_namespace import cat, make_storage, open_session


def _short(real: Callable[..., int]) -> Callable[..., int]:
    def copy(src: int, dst: int, count: int, offset_src: int, offset_dst: int) -> int:
        return real(src, dst, min(count, 1000), offset_src, offset_dst)

    return copy


def _refused(*_args: object) -> int:
    raise OSError(errno.EXDEV, "Invalid cross-device link")


@pytest.mark.parametrize("kernel", ["copy_file_range", "short pieces", "refused"])
def test_the_export_has_the_sessions_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kernel: str
) -> None:
    if kernel == "short pieces":
        monkeypatch.setattr(os, "copy_file_range", _short(os.copy_file_range))
    elif kernel == "refused":
        monkeypatch.setattr(os, "copy_file_range", _refused)
    monkeypatch.setattr(export, "CHUNK", 4096)  # several chunks a file, runs across them
    make_storage(tmp_path)
    ns = open_session(tmp_path)
    try:
        d = ns.lookup(ns.root(), "web01").fileid
        f = ns.create(d, "disk").fileid
        ns.write(f, 0, bytes(range(256)) * 40)  # 10,240 bytes
        ns.write(f, 30_000, b"tail" * 1000)  # a hole between
        ns.write(f, 5_000, b"X" * 3)  # a piece inside the first
        for _, a in walk(ns):  # the base's files: a piece over each
            if a.kind == Kind.REG and a.fileid != f and a.size > 2:
                ns.write(a.fileid, 1, b"!")
        want = {rel: cat(ns, a.fileid) for rel, a in walk(ns) if a.kind == Kind.REG}
        assert export_tree(ns, tmp_path / "out") == sum(len(b) for b in want.values())
    finally:
        ns.close()
    assert len(want) > 1
    for rel, data in want.items():
        assert (tmp_path / "out" / rel).read_bytes() == data, rel


def _counted_runs(monkeypatch: pytest.MonkeyPatch, limit: int) -> list[int]:
    """Count the export's ``runs`` looks; past ``limit`` the test fails at once
    (the old export looked once every CHUNK bytes, holes included)."""
    calls: list[int] = []
    real = SessionReader.runs

    def runs(self: SessionReader, offset: int, count: int) -> list:
        calls.append(offset)
        assert len(calls) <= limit, f"{len(calls)} looks: the export walks the hole"
        return real(self, offset, count)

    monkeypatch.setattr(SessionReader, "runs", runs)
    return calls


def test_a_huge_hole_is_skipped_in_one_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file a client grew to 1 TiB with bytes at both ends: the export copies the
    bytes and leaves the rest a hole, in a few looks (1 TiB / 8 MiB = 131,072 before)."""
    make_storage(tmp_path)
    ns = open_session(tmp_path)
    size = 1 << 40
    try:
        d = ns.lookup(ns.root(), "web01").fileid
        f = ns.create(d, "huge").fileid
        ns.write(f, 0, b"head")
        ns.setattr(f, size=size)
        ns.write(f, size - 8192, b"T" * 5000)  # a piece across the last chunk's start
        ns.write(f, size // 2, b"mid")
        calls = _counted_runs(monkeypatch, 40)
        export_tree(ns, tmp_path / "out")
    finally:
        ns.close()
    out = tmp_path / "out" / "web01" / "huge"
    assert out.stat().st_size == size
    with out.open("rb") as fp:
        assert os.pread(fp.fileno(), 8, 0) == b"head" + bytes(4)
        assert os.pread(fp.fileno(), 5, size // 2 - 1) == b"\0mid\0"
        assert os.pread(fp.fileno(), 8192, size - 8192) == b"T" * 5000 + bytes(3192)
        assert out.stat().st_blocks * 512 < 1 << 20  # a hole, not 1 TiB of zeros
    assert len(calls) < 40


def test_a_file_the_target_cannot_hold_fails_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2^63 - 1 bytes (NFS's largest, FSINFO's maxfilesize): a clear OSError from the
    target's file system, or a sparse file if it can hold one; never a walk of the hole."""
    make_storage(tmp_path)
    ns = open_session(tmp_path)
    size = (1 << 63) - 1
    try:
        d = ns.lookup(ns.root(), "web01").fileid
        f = ns.create(d, "huge").fileid
        ns.setattr(f, size=size)
        _counted_runs(monkeypatch, 40)
        try:
            export_tree(ns, tmp_path / "out")
        except OSError as e:
            assert e.errno in {errno.EFBIG, errno.EINVAL}, e
        else:
            assert (tmp_path / "out" / "web01" / "huge").stat().st_size == size
    finally:
        ns.close()


def test_data_from_is_where_the_next_bytes_are(tmp_path: Path) -> None:
    """``data_from`` at every offset of a file of base bytes, a truncate, a regrowth
    and pieces: never past a byte that is not a zero of a hole, never before the
    offset, the size when only zeros are left (compared with the runs' model)."""
    make_storage(tmp_path)
    ns = open_session(tmp_path)
    try:
        base = next(a for _, a in walk(ns) if a.kind == Kind.REG and a.size > 16)
        f = base.fileid
        ns.setattr(f, size=10)  # base bytes up to 10, zeros after the regrowth
        ns.setattr(f, size=300)
        ns.write(f, 100, b"x" * 20)
        ns.write(f, 200, b"y")
        ns.write(f, 201, b"z" * 9)
        size = 300
        with ns.open(f) as r:
            runs = r.runs(0, size)
            data = set()
            pos = 0
            for run in runs:
                if run.fd != ZERO_FD:
                    data.update(range(pos, pos + run.length))
                pos += run.length
            for offset in range(size + 3):
                got = r.data_from(offset)
                want = min((p for p in data if p >= offset), default=max(offset, size))
                assert got == want, offset
        untouched = ns.create(ns.lookup(ns.root(), "web01").fileid, "new").fileid
        with ns.open(untouched) as r:
            assert r.data_from(0) == 0  # an empty file: its size
            assert r.data_from(5) == 5
        other = next(a for _, a in walk(ns) if a.kind == Kind.REG and a.fileid != f and a.size)
        with ns.open(other.fileid) as r:  # never changed: the base's bytes are data
            assert r.data_from(0) == 0
            assert r.data_from(other.size - 1) == other.size - 1
            assert r.data_from(other.size + 7) == other.size + 7
    finally:
        ns.close()


@pytest.mark.parametrize("target", [b"", b"a\0b"])
def test_a_link_an_older_session_made_fails_the_export_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: bytes
) -> None:
    """Links are checked when made now; one made before (no check) fails the export
    with an OSError naming it (the CLI's "export failed"), not a ValueError."""
    make_storage(tmp_path)
    ns = open_session(tmp_path)
    try:
        d = ns.lookup(ns.root(), "web01").fileid
        monkeypatch.setattr(namespace, "check_target", lambda target: None)
        ns.symlink(d, "bad", target)
        with pytest.raises(OSError, match="link's target") as e:
            export_tree(ns, tmp_path / "out")
        assert str(tmp_path / "out" / "web01" / "bad") in str(e.value)
    finally:
        ns.close()
