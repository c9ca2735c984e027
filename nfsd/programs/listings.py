"""Directory listings in cookie order, with their entries encoded once.

An entry's cookie is a 63-bit hash of its name, never 0 (which means "from
the start"), and a directory is listed in cookie order: see
``nfsd.programs.nfs3.readdir``.  A :class:`Listing` is built once per listing object
the namespace returns (the namespace returns the same object while nothing
changed), so paging through 10,000 entries sorts them once, and encodes
each entry at most once per procedure: a repeated listing is a join of
bytes already made.  A large listing's READDIRPLUS entries are also shared
with the server's other processes (``nfsd.programs.shared_encodings``).
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from array import array
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, overload

from merge.namespace import Attrs, PresentedPath
from merge.native import native


def cookie_of(name: str) -> int:
    h = _EMPTY_COOKIE_HASH.copy()  # cheaper than a new object with its parameters
    h.update(name.encode("utf-8", "surrogateescape"))
    return (int.from_bytes(h.digest(), "big") >> 1) or 1


_EMPTY_COOKIE_HASH = hashlib.blake2b(digest_size=8)

Row = tuple[str, Attrs]  # (name, attrs): the namespace's own pair, not a copy


def raw_name(name: str) -> bytes:
    """The name as it goes on the wire (XDR bytes)."""
    return name.encode("utf-8", "surrogateescape")


def raw_len(name: str) -> int:
    """``len(raw_name(name))``, without encoding an ASCII name (``isascii`` is a flag)."""
    return len(name) if name.isascii() else len(name.encode("utf-8", "surrogateescape"))


def sorted_rows(source: Sequence[Row]) -> tuple[list[Row], array[int]]:
    """``source``'s rows in cookie order and their cookies: ``_sorted``'s first two."""
    rows, cookies, _ = _sorted(source)
    return rows, cookies


def _sorted(source: Sequence[Row]) -> tuple[list[Row], array[int], list[int]]:
    """``source``'s own ``(name, attrs)`` pairs in cookie order (then raw name), and
    their cookies (a 64-bit array, in the same order), and each row's index in
    ``source`` (what sharing the encoded entries records).

    Memory: no tuple, int or bytes per entry beyond the cookies' 8 bytes (a row
    of its own with the cookie and the raw name was ~160 bytes an entry of a
    10,000-entry folder).  Sorted by the cookie alone (no tuple comparisons),
    and again by (cookie, raw name) only if two names share a cookie.
    """
    pairs = source if isinstance(source, (list, tuple)) else list(source)
    if native is not None:  # the same BLAKE2b in C (merge/_native.c), for all names at once
        cookies = [(h >> 1) or 1 for h in native.hash64([n for n, _ in pairs], b"", b"", b"")]
    else:
        cookies = _cookies_py(pairs)
    order = sorted(range(len(pairs)), key=cookies.__getitem__)
    if len(set(cookies)) < len(cookies):
        order.sort(key=lambda k: (cookies[k], raw_name(pairs[k][0])))
    return [pairs[k] for k in order], array("q", [cookies[k] for k in order]), order


def _cookies_py(pairs: Sequence[Row]) -> list[int]:
    """``cookie_of`` each name: the twin of ``merge._native.hash64``'s use above."""
    empty, from_bytes = _EMPTY_COOKIE_HASH, int.from_bytes
    cookies: list[int] = []
    append = cookies.append
    for name, _ in pairs:
        h = empty.copy()
        h.update(name.encode("utf-8", "surrogateescape"))
        append((from_bytes(h.digest(), "big") >> 1) or 1)
    return cookies


class SortedView(Sequence[Row]):
    """``source``'s rows in the order of the indexes ``order``, each taken from
    ``source`` when asked: a shared listing's pairs are made on first use
    (``merge.shared.PackedItems``), and a listing whose entries came encoded
    (``nfsd.programs.shared_encodings``) seldom needs one."""

    __slots__ = ("_order", "_source")

    def __init__(self, source: Sequence[Row], order: Sequence[int]) -> None:
        self._source = source
        self._order = order

    def __len__(self) -> int:
        return len(self._order)

    @overload
    def __getitem__(self, k: int) -> Row: ...

    @overload
    def __getitem__(self, k: slice) -> list[Row]: ...

    def __getitem__(self, k: int | slice) -> Row | list[Row]:
        if isinstance(k, slice):
            return [self._source[i] for i in self._order[k]]
        return self._source[self._order[k]]

    def __eq__(self, other: object) -> bool:  # as a list of the same rows
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def names(self) -> list[str]:
        """The rows' names, without their attributes where the source has them apart."""
        names = getattr(self._source, "names", None)
        if isinstance(names, list):
            return [names[i] for i in self._order]
        return [self._source[i][0] for i in self._order]


def running_sums(encoded: Sequence[bytes]) -> array[int]:
    """``at[k]``: the bytes of entries ``0 .. k-1`` (64-bit; ``at[0] == 0``): a
    packed listing's own (:attr:`PackedEntries.at`), else added up."""
    if isinstance(encoded, PackedEntries):
        return encoded.at
    return array("q", itertools.accumulate(map(len, encoded), initial=0))


class PackedEntries(Sequence[bytes]):
    """A listing's encoded entries as one bytes object: entry ``i`` is
    ``data[base + at[i] : base + at[i + 1]]``.

    What a folder's READDIRPLUS entries encoded at once, or read from another
    process's file (``nfsd.programs.shared_encodings``), are kept as: a page
    is one slice of ``data`` (``join``), one buffer for the transport's
    ``sendmsg`` rather than one an entry (~50 a page of 8 KiB), and a file
    read from another process is not cut into 10,000 objects.  ``at`` (64-bit
    running sums, ``at[0] == 0``) is also what a page is cut by
    (``nfsd.programs.nfs3.readdir._page_by_sizes``).
    """

    __slots__ = ("at", "base", "data")

    def __init__(self, data: bytes, at: array[int], base: int = 0) -> None:
        if not at or at[0] != 0 or base < 0 or base + at[-1] > len(data):
            raise ValueError("offsets past the data")
        self.data, self.at, self.base = data, at, base

    @classmethod
    def of(cls, encoded: Sequence[bytes]) -> PackedEntries:
        """The entries of a list, packed (one copy of their bytes)."""
        return cls(b"".join(encoded), running_sums(encoded))

    def __len__(self) -> int:
        return len(self.at) - 1

    @overload
    def __getitem__(self, k: int) -> bytes: ...

    @overload
    def __getitem__(self, k: slice) -> list[bytes]: ...

    def __getitem__(self, k: int | slice) -> bytes | list[bytes]:
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        n = len(self)
        if k < 0:
            k += n
        if not 0 <= k < n:
            raise IndexError("entry index out of range")
        return self.data[self.base + self.at[k] : self.base + self.at[k + 1]]

    def __eq__(self, other: object) -> bool:  # as a list of the same entries
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def join(self, i: int, j: int) -> bytes:
        """Entries ``i .. j-1`` as one bytes object (``0 <= i <= j <= len``)."""
        return self.data[self.base + self.at[i] : self.base + self.at[j]]


class Listing:
    """One directory's entries in cookie order, and their encodings.

    ``rows[i]`` is the namespace's ``(name, attrs)`` pair of the entry whose
    cookie is ``cookies[i]``.  ``encoded(kind, i, encode)`` returns entry ``i``
    encoded by ``encode(cookie, row)`` (one encoder per kind: READDIR,
    READDIRPLUS), computing it on first use.
    """

    __slots__ = (
        "_encoded",
        "_names",
        "cookies",
        "head",
        "order",
        "preloaded",
        "rows",
        "share",
        "sizes",
        "source",
    )

    def __init__(
        self,
        source: Sequence[Row],
        rows: Sequence[Row] | None = None,
        cookies: array[int] | None = None,
    ) -> None:
        """``rows`` and ``cookies``: the sorted rows and their cookies, when known already
        (what ``sorted_rows`` gives for ``source``)."""
        self.source = source
        # Each row's index in ``source`` (32-bit), kept from the sort until the listing
        # is shared (then None; None as well when the rows were given).
        self.order: array[int] | None = None
        if rows is None or cookies is None:
            rows, cookies, order = _sorted(source)
            if len(order) < 1 << 32:
                self.order = array("I", order)
        self.rows = rows
        self.cookies = cookies
        self._names: list[str] | None = None
        self._encoded: dict[str, list[bytes | None] | PackedEntries] = {}
        # Called with the listing once a READDIRPLUS reaches its end, until it returns True.
        self.share: Callable[[Listing], bool] | None = None
        # Per kind whose entries are all encoded: what the procedure pages by
        # (nfsd.programs.nfs3.readdir's running sizes), made once.
        self.sizes: dict[str, Any] = {}
        self.preloaded: set[str] = set()  # the kinds given whole by ``preload``
        # A reply's head (the procedures' own, nfsd.programs.nfs3.readdir._head): the
        # folder's Attrs object, fsid and verifier it was made for, and its bytes.
        self.head: tuple[Attrs, int, bytes, bytes] | None = None

    def names(self) -> list[str]:
        """The entries' names, in cookie order (made once: the paging sums and the
        handles taken from another process both ask)."""
        names = self._names
        if names is None:
            rows = self.rows
            names = rows.names() if isinstance(rows, SortedView) else [r[0] for r in rows]
            self._names = names
        return names

    def preload(self, kind: str, encoded: Sequence[bytes]) -> None:
        """Every entry's encoding for ``kind``, made elsewhere (the same bytes); kept
        as they are if packed, else as a list."""
        if len(encoded) != len(self.rows):
            raise ValueError("one encoding per entry")
        self._encoded[kind] = encoded if isinstance(encoded, PackedEntries) else list(encoded)
        self.preloaded.add(kind)

    def started(self, kind: str) -> bool:
        """Whether any entry of ``kind`` was encoded (or given) yet."""
        return kind in self._encoded

    def encodings(self, kind: str) -> Sequence[bytes] | None:
        """Every entry's encoding for ``kind``, if all were made."""
        cache = self._encoded.get(kind)
        if isinstance(cache, PackedEntries):
            return cache
        if cache is None or None in cache:
            return None
        return cache  # type: ignore[return-value]

    def encoded(self, kind: str, i: int, encode: Callable[[int, Row], bytes]) -> bytes:
        cache = self._encoded.get(kind)
        if cache is None:
            cache = self._encoded.setdefault(kind, [None] * len(self.rows))
        b = cache[i]
        if b is None:
            b = cache[i] = encode(self.cookies[i], self.rows[i])  # type: ignore[index]
        return b


class SortedListings:
    """The :class:`Listing` of each directory lately listed (a bounded LRU)."""

    def __init__(self, size: int = 64) -> None:
        self._cache: OrderedDict[PresentedPath, Listing] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def known(self, path: PresentedPath) -> bool:
        """Whether ``path`` was listed lately (its listing is still held)."""
        return path in self._cache

    def get(
        self,
        path: PresentedPath,
        entries: Sequence[tuple[str, Attrs]],
        make: Callable[[Sequence[tuple[str, Attrs]]], Listing] = Listing,
    ) -> Listing:
        """The listing of ``entries``, made by ``make`` unless held already."""
        with self._lock:
            hit = self._cache.get(path)
            if hit is not None and hit.source is entries:
                self._cache.move_to_end(path)
                return hit
        listing = make(entries)
        with self._lock:
            self._cache[path] = listing
            self._cache.move_to_end(path)
            if len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return listing
