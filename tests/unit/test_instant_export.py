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

from instant import export
from instant.export import export_tree, walk
from merge.namespace import Kind
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
