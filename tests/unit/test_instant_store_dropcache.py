"""instant.store drops the page cache of large writes once durable, and only then."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from instant import store as store_mod
from instant.store import SMALL_WRITE, Store
from merge.namespace import ZERO_FD

MIB = 1 << 20


def read(s: Store, obj: int, offset: int, count: int) -> bytes:
    out = bytearray()
    for r in s.runs(obj, offset, count, lambda o, n: [], 0):
        out += bytes(r.length) if r.fd == ZERO_FD else os.pread(r.fd, r.length, r.pos)
    return bytes(out)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:  # type: ignore[type-arg]
    """Every fdatasync and posix_fadvise the store makes, in order."""
    seen: list[tuple] = []  # type: ignore[type-arg]
    sync, advise = os.fdatasync, os.posix_fadvise

    def fdatasync(fd: int) -> None:
        sync(fd)
        seen.append(("sync", fd))

    def posix_fadvise(fd: int, pos: int, n: int, advice: int) -> None:
        advise(fd, pos, n, advice)
        seen.append(("drop", fd, pos, n, advice))

    monkeypatch.setattr(store_mod.os, "fdatasync", fdatasync)
    monkeypatch.setattr(store_mod.os, "posix_fadvise", posix_fadvise)
    return seen


def test_a_large_write_is_dropped_from_the_cache_after_its_sync(
    tmp_path: Path,
    calls: list[tuple],  # type: ignore[type-arg]
) -> None:
    data = os.urandom(MIB)
    with Store(tmp_path / "s") as s:
        s.write(1, 4096, data, 0)
        fd = s._log_fd
        drops = [c for c in calls if c[0] == "drop"]
        # the record: its header on a page of its own, then the data, page-aligned
        assert drops == [("drop", fd, 0, store_mod.ALIGN + MIB, os.POSIX_FADV_DONTNEED)]
        assert calls.index(("sync", fd)) < calls.index(drops[0])  # clean before dropped
        assert read(s, 1, 4096, MIB) == data
    with Store(tmp_path / "s") as s:
        assert read(s, 1, 4096, MIB) == data


def test_small_writes_keep_their_cache(tmp_path: Path, calls: list[tuple]) -> None:  # type: ignore[type-arg]
    with Store(tmp_path / "s") as s:
        s.write(1, 0, b"x" * (SMALL_WRITE - 1), 0)
        s.write(1, 0, b"y" * 4096, 0)
        assert [c for c in calls if c[0] == "drop"] == []
        assert read(s, 1, 0, 4096) == b"y" * 4096


def test_a_refused_hint_costs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(fd: int, pos: int, n: int, advice: int) -> None:
        raise OSError(22, "not supported here")

    monkeypatch.setattr(store_mod.os, "posix_fadvise", refuse)
    data = os.urandom(MIB)
    with Store(tmp_path / "s") as s:
        assert s.write(1, 0, data, 0) == MIB
        assert read(s, 1, 0, MIB) == data
