"""An in-memory namespace for protocol tests: no storage, exact bytes.

File contents live in memfd files so that readers hand out real file
descriptors, as the storage namespace does.  ``open_readers`` counts the
readers not yet closed, so tests catch a procedure that leaks one.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence

from merge.namespace import (
    ZERO_FD,
    Attrs,
    FsStats,
    IsADirectory,
    Kind,
    NotADirectory,
    NotFound,
    PresentedPath,
    Run,
)


def fileid_of(path: PresentedPath) -> int:
    return (
        int.from_bytes(
            hashlib.blake2b(
                "/".join(path).encode("utf-8", "surrogateescape"), digest_size=8
            ).digest()
        )
        >> 1
        or 1
    )


class FakeReader:
    def __init__(self, ns: FakeNamespace, fd: int, size: int) -> None:
        self.ns = ns
        self.fd = fd
        self._size = size

    @property
    def size(self) -> int:
        return self._size

    def runs(self, offset: int, count: int) -> list[Run]:
        end = min(offset + count, self._size)
        if offset >= end:
            return []
        return (
            [Run(self.fd, offset, end - offset)]
            if self.fd != ZERO_FD
            else [Run(ZERO_FD, 0, end - offset)]
        )

    def __enter__(self) -> FakeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        with self.ns.lock:
            self.ns.open_readers -= 1


class FakeNamespace:
    """A tree given as {path: bytes (file) or None (directory)}."""

    def __init__(
        self, tree: dict[PresentedPath, bytes | None], mtime_ns: int = 1_700_000_000_123_456_789
    ) -> None:
        self.tree = dict(tree)
        self.tree[()] = None
        self.mtime_ns = mtime_ns
        self.fds: dict[PresentedPath, int] = {}
        self.lock = threading.Lock()
        self.open_readers = 0
        self._listings: dict[tuple[PresentedPath, int], list[tuple[str, Attrs]]] = {}
        for path, data in self.tree.items():
            if data is not None:
                fd = os.memfd_create("fake")
                os.write(fd, data)
                self.fds[path] = fd

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)

    def _attrs(self, path: PresentedPath) -> Attrs:
        data = self.tree[path]
        is_dir = data is None
        return Attrs(
            kind=Kind.DIR if is_dir else Kind.REG,
            size=4096 if is_dir else len(data),
            used=4096 if is_dir else len(data),
            mode=0o555 if is_dir else 0o444,
            nlink=2 if is_dir else 1,
            uid=0,
            gid=0,
            fileid=fileid_of(path),
            atime_ns=self.mtime_ns,
            mtime_ns=self.mtime_ns,
            ctime_ns=self.mtime_ns,
        )

    def getattr(self, path: PresentedPath) -> Attrs:
        for i in range(len(path)):
            parent = path[:i]
            if parent in self.tree and self.tree[parent] is not None:
                raise NotADirectory("/".join(parent))
        if path not in self.tree:
            raise NotFound("/".join(path))
        return self._attrs(path)

    def readdir(self, path: PresentedPath) -> Sequence[tuple[str, Attrs]]:
        if self.getattr(path).kind != Kind.DIR:
            raise NotADirectory("/".join(path))
        # Like the storage namespace, return the same listing object while
        # nothing changed (the tests change the tree by adding or removing).
        key = (path, len(self.tree))
        if key not in self._listings:
            self._listings[key] = [
                (p[-1], self._attrs(p))
                for p in self.tree
                if len(p) == len(path) + 1 and p[: len(path)] == path
            ]
        return self._listings[key]

    def open(self, path: PresentedPath) -> FakeReader:
        if self.getattr(path).kind == Kind.DIR:
            raise IsADirectory("/".join(path))
        with self.lock:
            self.open_readers += 1
        data = self.tree[path]
        assert data is not None
        return FakeReader(self, self.fds[path], len(data))

    def fsstat(self) -> FsStats:
        return FsStats(10**12, 10**11, 10**11, 10**6, 10**5, 10**5)
