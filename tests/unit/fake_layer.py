"""A fake lower layer: one filter of the stack tested alone over a dict.

``FakeLower`` presents ``{"a/b": bytes or None}`` (``None``: a directory).
File bytes live in real files under ``blobs`` so that handles carry real
descriptors and stamps; ``set`` replaces a file by a new one (new inode),
as a backup run would.  It counts the handles it gave out and which are
still open, so a test catches a layer that leaks one.
"""

from __future__ import annotations

import itertools
import os
from collections import Counter
from pathlib import Path

from merge.attrs import attrs_from_stat, fileid_for
from merge.layer import Context, Entry, Layer, Listing, Stored
from merge.namespace import Attrs, FsStats, Kind, NotFound, PresentedPath
from merge.problems import Problems
from merge.sources import FileSource, Handle
from tests.unit.merge_helpers import FakeClock, tree_files

_DIR_ATTRS = dict(used=4096, mode=0o555, nlink=2, uid=0, gid=0)


def make_ctx(root: Path, clock: FakeClock | None = None, **kw: float) -> Context:
    return Context(os.path.realpath(root), clock or FakeClock(), Problems(), **kw)


class FakeLower(Layer):
    """A presented tree from a dict, with real file descriptors."""

    def __init__(
        self,
        ctx: Context,
        blobs: Path,
        tree: dict[str, bytes | None],
        withheld: dict[str, set[str]] | None = None,
    ) -> None:
        super().__init__(None, ctx)
        self.blobs = blobs
        blobs.mkdir(parents=True, exist_ok=True)
        self._serial = itertools.count()
        self.tree: dict[PresentedPath, Path | None] = {}
        for path, data in tree_files(tree).items():
            self.tree[path] = None if data is None else self._blob(path, data)
        self.withheld = {tuple(k.split("/")) if k else (): v for k, v in (withheld or {}).items()}
        self.calls: Counter[str] = Counter()
        self.handles: list[Handle] = []

    def _blob(self, path: PresentedPath, data: bytes) -> Path:
        """The file holding ``path``'s bytes, replaced (new inode) when it exists."""
        blob = self.blobs / ("%".join(path) or "%")
        tmp = self.blobs / f".tmp-{next(self._serial)}"
        tmp.write_bytes(data)
        os.replace(tmp, blob)
        return blob

    def set(self, rel: str, data: bytes | None) -> None:
        """Add or replace (new inode, as a backup run does) a file; ``None`` removes it."""
        path = tuple(rel.split("/"))
        if data is None:
            self.tree.pop(path, None)
            (self.blobs / "%".join(path)).unlink(missing_ok=True)
        else:
            self.tree[path] = self._blob(path, data)

    @property
    def open_handles(self) -> int:
        return sum(1 for h in self.handles if not h._closed)

    def _attrs(self, path: PresentedPath) -> Attrs:
        blob = self.tree[path]
        if blob is None:
            return Attrs(
                kind=Kind.DIR, size=4096, fileid=fileid_for(path), atime_ns=1, mtime_ns=1,
                ctime_ns=1, **_DIR_ATTRS,
            )  # fmt: skip
        return attrs_from_stat(os.stat(blob), path)

    def lookup(self, path: PresentedPath) -> Entry:
        self.calls["lookup"] += 1
        if path not in self.tree:
            raise NotFound("/".join(path))
        return Entry(self._attrs(path), Stored(os.path.join(self.ctx.root, *path)))

    def listing(self, path: PresentedPath) -> Listing:
        self.calls["listing"] += 1
        entries = {
            p[-1]: Entry(self._attrs(p), Stored(os.path.join(self.ctx.root, *p)))
            for p in self.tree
            if len(p) == len(path) + 1 and p[: len(path)] == path
        }
        return Listing(entries, frozenset(self.withheld.get(path, set())))

    def open_file(self, path: PresentedPath) -> Handle:
        self.calls["open"] += 1
        blob = self.tree.get(path)
        if blob is None:
            raise NotFound("/".join(path))
        handle = Handle.adopt(FileSource.open(str(blob), lambda st: attrs_from_stat(st, path)))
        self.handles.append(handle)
        return handle

    def fsstat(self) -> FsStats:
        return FsStats(1, 1, 1, 1, 1, 1)
