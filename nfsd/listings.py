"""Directory listings in cookie order (the cookie scheme of READDIR).

An entry's cookie is a 63-bit hash of its name, never 0 (which means "from
the start"), and a directory is listed in cookie order: see
``nfsd.nfs3.readdir``.  Sorting is cached per directory while the namespace
returns the same listing object, so paging through 10,000 entries sorts
them once.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence

from merge.namespace import Attrs, PresentedPath


def cookie_of(name: str) -> int:
    c = int.from_bytes(
        hashlib.blake2b(name.encode("utf-8", "surrogateescape"), digest_size=8).digest(), "big"
    )
    return (c >> 1) or 1


class SortedListings:
    """Per-directory listings in cookie order, cached by listing identity."""

    def __init__(self, size: int = 64) -> None:
        self._cache: OrderedDict[PresentedPath, tuple[object, list, list[int]]] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(
        self, path: PresentedPath, entries: Sequence[tuple[str, Attrs]]
    ) -> tuple[list[tuple[int, bytes, str, Attrs]], list[int]]:
        with self._lock:
            hit = self._cache.get(path)
            if hit is not None and hit[0] is entries:
                self._cache.move_to_end(path)
                return hit[1], hit[2]
        rows = sorted(
            (cookie_of(name), name.encode("utf-8", "surrogateescape"), name, a)
            for name, a in entries
        )
        cookies = [r[0] for r in rows]
        with self._lock:
            self._cache[path] = (entries, rows, cookies)
            if len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return rows, cookies
