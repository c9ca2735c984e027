"""bench/data.py: the benchmark's big folders get files of their own, in place."""

from __future__ import annotations

import os
from pathlib import Path

from bench.data import copy_folder, own_copies


def _folder(root: Path, name: str, count: int) -> Path:
    folder = root / name
    folder.mkdir()
    for i in range(count):
        (folder / f"f{i}").write_bytes(f"bytes of {i}".encode())
    return folder


def test_own_copies_replaces_hard_links_by_copies_and_keeps_the_rest(tmp_path):
    a = _folder(tmp_path, "a", 5)
    b, c = tmp_path / "b", tmp_path / "c"
    b.mkdir()
    c.mkdir()
    for name in os.listdir(a):
        os.link(a / name, b / name)
        os.link(a / name, c / name)
    (a / "f0").chmod(0o640)
    (b / "sub").mkdir()  # not a file: left alone
    (a / "alone").write_bytes(b"one name")
    alone = (a / "alone").stat().st_ino
    before = {n: (a / n).read_bytes() for n in os.listdir(a)}

    assert own_copies(a) == 5
    assert own_copies(b) == 5
    assert own_copies(c) == 0  # its files have one name already
    for folder in (a, b, c):
        for name in os.listdir(a):
            if (folder / name).exists():
                st = (folder / name).stat()
                assert st.st_nlink == 1, (folder, name)
                assert (folder / name).read_bytes() == before[name]
    assert (a / "alone").stat().st_ino == alone
    assert (a / "f0").stat().st_mode & 0o777 == 0o640
    assert (b / "f0").stat().st_mode & 0o777 == 0o640
    assert len({(f / "f1").stat().st_ino for f in (a, b, c)}) == 3
    assert sorted(os.listdir(b)) == sorted([*(f"f{i}" for i in range(5)), "sub"])


def test_own_copies_after_an_interruption(tmp_path):
    a = _folder(tmp_path, "a", 3)
    os.link(a / "f1", tmp_path / "other")
    (a / ".own-copy.tmp").write_bytes(b"half")  # left by a run that died
    assert own_copies(a) == 1
    assert sorted(os.listdir(a)) == ["f0", "f1", "f2"]
    assert (a / "f1").read_bytes() == b"bytes of 1"
    assert (tmp_path / "other").read_bytes() == b"bytes of 1"


def test_copy_folder_makes_files_of_their_own(tmp_path):
    a = _folder(tmp_path, "a", 4)
    copy_folder(a, tmp_path / "b")
    for name in os.listdir(a):
        assert (tmp_path / "b" / name).read_bytes() == (a / name).read_bytes()
        assert (tmp_path / "b" / name).stat().st_nlink == 1
        assert (a / name).stat().st_nlink == 1
