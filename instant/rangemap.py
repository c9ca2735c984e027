"""The overlay map of one file: which byte ranges were written, and where they live.

Design notes
------------
A file of a session is its *base* (the presented backup file, read only)
seen through its overlay.  The overlay of one file is three numbers and a
map (:class:`FileState`):

==============  =============================================================
``size``        the file's size now
``base_limit``  bytes of the base that may still show: the base's size when
                the overlay began, lowered by every truncate, never raised
``pieces``      written ranges, sorted, never overlapping: ``Piece(start,
                length, log, pos)`` is ``length`` bytes at ``pos`` of data
                log ``log``
==============  =============================================================

so a byte ``p`` of the file reads as:

=========================================  ====================  ============
byte ``p``                                 reads                 run
=========================================  ====================  ============
``p >= size``                              nothing (EOF)         (none)
inside a piece                             the log's byte        log fd, pos
not in a piece, ``p < base_limit``         the base's byte       base's runs
not in a piece, ``p >= base_limit``        zero                  ``ZERO_FD``
=========================================  ====================  ============

A base byte truncated away can never come back: ``base_limit`` only goes
down, so a region truncated and regrown reads as zeros (the rule of the
issue), however it is regrown (SETATTR or a WRITE past the end).

Pieces have byte granularity, so a 4 KiB write adds (or replaces) exactly
4 KiB of pieces: no copy-up of a surrounding block, no read of the base
(qcow2's extended L2 entries get to 1/32 of a cluster; ranges get to one
byte).  :meth:`RangeMap.put` returns the *edits* it made (pieces removed,
pieces added) so the caller can apply the same edits to the durable copy of
the map.  A piece that continues the one before it in the same log (a
sequential writer) is joined to it, so a 1 GiB sequential copy is one piece.

This module does no I/O: it is the model both for the durable map
(``instant.store``) and for the tests.

Every piece that enters a map is taken off the cyclic garbage collector's
lists (:data:`_untrack`: ``instant/_native.c``): a NamedTuple is never
untracked by CPython itself, and a full collection walked every piece of
every map the process held with the GIL held (0.19 s a map of 890,000
pieces, a 16 GiB disk a VM wrote at random: a pause of every call the
process serves).  A tuple of ints can be part of no reference cycle, so
its reference count alone frees it.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import chain, islice, pairwise
from operator import add, itemgetter, le, lt
from typing import NamedTuple

from instant.native import native
from merge.namespace import ZERO_FD, Run


class Piece(NamedTuple):
    """``length`` bytes of the file at ``start``, stored at ``pos`` of data log ``log``."""

    start: int
    length: int
    log: int
    pos: int

    @property
    def end(self) -> int:
        return self.start + self.length


def _untrack_py(pieces: list[Piece]) -> None:
    """The twin of ``instant._native.untrack``: the pieces stay tracked (the
    collector only scans them; no byte or order depends on it)."""


_untrack: Callable[[list[Piece]], None] = native.untrack if native is not None else _untrack_py
"""Take the pieces entering a map off the cyclic collector's lists (see the notes)."""

_put_native: Callable[..., Edits | None] | None = native.put if native is not None else None
"""``RangeMap.put``'s common case in C (``instant/_native.c``: a window in one chunk
that stays within its bounds), None when it leaves the put to the Python method."""

_apply_native: Callable[..., tuple[int, int]] | None = native.apply if native is not None else None
"""``RangeMap.apply``'s steps in C while each changes one chunk in place; how many
removals and additions it made (the Python method makes the rest)."""


class Edits(NamedTuple):
    """What one change did to a map: pieces gone (by start) and pieces new."""

    removed: list[int]
    added: list[Piece]


class RangeMap:
    """Sorted, non-overlapping pieces, held in chunks; lookups bisect the starts.

    The pieces are cut into chunks of at most ``2 * LOAD`` (a chunk past that is
    cut into equal parts of ``LOAD`` or a little more; one left with fewer than
    ``LOAD // 4`` is joined to the next: only the last may be smaller), as
    ``sortedcontainers`` does: a change moves the pieces of one chunk, not of the
    whole map.  A VM's random 4 KiB writes leave a piece each: in one flat list
    a write's insert moved every piece after it (measured: 10 us a write at
    12,000 pieces, 367 us at 890,000, two or three such inserts a WRITE).
    ``_firsts`` holds each chunk's first start, ``_starts`` each chunk's starts.
    """

    __slots__ = ("_chunks", "_firsts", "_len", "_starts")

    LOAD = 512  # tests make it small, to cross chunks with few pieces

    def __init__(self, pieces: list[Piece] | None = None) -> None:
        """A map of ``pieces`` (in any order); ValueError if two overlap or one is empty.

        A store loads a large file's map whole (890,000 pieces: a 16 GiB disk
        a VM wrote at random), so the checks run in C loops (``map``), not a
        Python step per piece, and pieces already in order are not sorted."""
        ordered = list(pieces or [])
        starts = [p[0] for p in ordered]
        if not all(map(lt, starts, islice(starts, 1, None))):
            ordered.sort()
            starts = [p[0] for p in ordered]
        lengths = [p[1] for p in ordered]
        if lengths and min(lengths) < 1:
            raise ValueError(f"piece {next(p for p in ordered if p.length < 1)} is empty")
        if not all(map(le, map(add, starts, lengths), islice(starts, 1, None))):
            a, b = next((a, b) for a, b in pairwise(ordered) if a.end > b.start)
            raise ValueError(f"pieces {a} and {b} overlap")
        _untrack(ordered)
        self._chunks: list[list[Piece]] = []
        self._starts: list[list[int]] = []
        self._firsts: list[int] = []
        self._len = len(ordered)
        self._put_back(0, 0, ordered, starts)

    def __iter__(self) -> Iterator[Piece]:
        return chain.from_iterable(self._chunks)

    def __len__(self) -> int:
        return self._len

    @property
    def bytes(self) -> int:
        """Bytes the map points at (live overlay bytes)."""
        return sum(p.length for c in self._chunks for p in c)

    def _window(self, start: int, end: int) -> tuple[int, int, list[Piece], list[int], int, int]:
        """``(c, d, pieces, starts, i, j)``: chunks ``[c, d)`` hold every piece that
        overlaps ``[start, end)``, ``pieces`` and ``starts`` are theirs (the chunk's
        own lists when one), ``[i, j)`` the overlapping ones' indexes in them."""
        chunks = self._chunks
        if len(chunks) < 2:  # a small map: one chunk (or none)
            if not chunks:
                return 0, 0, [], [], 0, 0
            c, d = 0, 1
        else:
            c = max(bisect_right(self._firsts, start) - 1, 0)
            d = c + 1
            while d < len(chunks) and self._firsts[d] < end:
                d += 1
        if d == c + 1:
            pieces, starts = self._chunks[c], self._starts[c]
        else:
            pieces = list(chain.from_iterable(self._chunks[c:d]))
            starts = list(chain.from_iterable(self._starts[c:d]))
        i = bisect_right(starts, start) - 1
        if i < 0 or pieces[i].end <= start:
            i += 1
        j = bisect_left(starts, end, lo=max(i, 0))
        return c, d, pieces, starts, i, j

    def _put_back(self, c: int, d: int, pieces: list[Piece], starts: list[int]) -> None:
        """``pieces`` (and their ``starts``) in place of chunks ``[c, d)``, cut or
        joined to keep every chunk within its bounds; no chunk left empty."""
        load = self.LOAD
        if d == c + 1 and (load // 4 or 1) <= len(pieces) <= 2 * load and pieces is self._chunks[c]:
            self._firsts[c] = starts[0]  # the chunk changed in place, within its bounds
            return
        if 0 < len(pieces) < load // 4 and d < len(self._chunks):
            pieces = pieces + self._chunks[d]  # too small: joined to the next
            starts = starts + self._starts[d]
            d += 1
        if len(pieces) <= 2 * load:
            chunks, chunk_starts = ([pieces], [starts]) if pieces else ([], [])
        else:  # cut into equal parts of LOAD or a little more: none left small
            n = len(pieces)
            cuts = [n * k // (n // load) for k in range(n // load + 1)]
            chunks = [pieces[a:b] for a, b in pairwise(cuts)]
            chunk_starts = [starts[a:b] for a, b in pairwise(cuts)]
        self._chunks[c:d] = chunks
        self._starts[c:d] = chunk_starts
        self._firsts[c:d] = [s[0] for s in chunk_starts]

    def overlapping(self, start: int, end: int) -> list[Piece]:
        chunks = self._chunks
        if not chunks or self._firsts[0] >= end:
            return []
        last = chunks[-1][-1]
        if last.start + last.length <= start:  # past every piece: a READ of what no
            return []  # write reached, after the rewritten part (no bisect, no window)
        _, _, pieces, _, i, j = self._window(start, end)
        return pieces[i:j]

    def _replace(self, start: int, end: int, middle: list[Piece]) -> Edits:
        """Cut ``[start, end)`` out of the map and put ``middle`` there."""
        c, d, pieces, starts, i, j = self._window(start, end)
        if i == j:  # nothing there (a first write of a region): no piece to cut
            _untrack(middle)
            pieces[i:i] = middle
            starts[i:i] = [p.start for p in middle]
            self._len += len(middle)
            self._put_back(c, d, pieces, starts)
            return Edits([], list(middle))
        old = pieces[i:j]
        new: list[Piece] = []
        if old[0].start < start:
            p = old[0]
            new.append(Piece(p.start, start - p.start, p.log, p.pos))
        new.extend(middle)
        if old[-1].end > end:
            p = old[-1]
            cut = end - p.start
            new.append(Piece(end, p.end - end, p.log, p.pos + cut))
        _untrack(new)
        pieces[i:j] = new
        starts[i:j] = [p.start for p in new]
        self._len += len(new) - len(old)
        self._put_back(c, d, pieces, starts)
        removed = [p.start for p in old]
        # A piece kept whole (same start and value) is no edit.
        kept = set(old) & set(new)
        return Edits(
            [s for s, p in zip(removed, old, strict=True) if p not in kept],
            [p for p in new if p not in kept],
        )

    def _before(self, pos: int) -> Piece | None:
        """The last piece that starts before ``pos``."""
        c = bisect_left(self._firsts, pos) - 1
        if c < 0:
            return None
        return self._chunks[c][bisect_left(self._starts[c], pos) - 1]

    def put(self, piece: Piece) -> Edits:
        """Map ``piece`` over whatever was there; join it to a piece it continues."""
        if _put_native is not None:
            done = _put_native(self, piece, self.LOAD, Piece, Edits)
            if done is not None:
                return done
        if piece.length < 1:
            return Edits([], [])
        prev = self._before(piece.start)
        if (
            prev is not None
            and prev.end == piece.start
            and prev.log == piece.log
            and prev.pos + prev.length == piece.pos
        ):
            joined = Piece(prev.start, prev.length + piece.length, prev.log, prev.pos)
            return self._replace(prev.start, piece.end, [joined])
        return self._replace(piece.start, piece.end, [piece])

    def relocate(
        self, start: int, length: int, old: tuple[int, int], new: tuple[int, int]
    ) -> Edits:
        """Point the bytes of ``[start, start+length)`` that are still at ``old``
        (``(log, pos)`` of ``start``) at ``new`` instead, where a copy of them was
        written (the store's cleaning, see ``instant.store``, "Space").  Bytes
        written, cut or moved since the copy was taken are left as they are: only
        a piece of ``old``'s log whose offset to ``old`` holds is rewritten."""
        old_log, old_pos = old
        new_log, new_pos = new
        end = start + length
        keep = old_pos - start
        moved = []
        for p in self.overlapping(start, end):
            if p.log != old_log or p.pos - p.start != keep:
                continue
            lo, hi = max(start, p.start), min(end, p.end)
            moved.append(Piece(lo, hi - lo, new_log, new_pos + (lo - start)))
        removed: list[int] = []
        added: dict[int, Piece] = {}
        for piece in moved:  # each over the bytes it copies, and nothing else
            e = self._replace(piece.start, piece.end, [piece])
            for s in e.removed:  # net of the ones before: a piece cut twice is one edit
                if added.pop(s, None) is None:
                    removed.append(s)
            added.update((a.start, a) for a in e.added)
        return Edits(removed, sorted(added.values()))

    def apply(self, edits: Edits) -> None:
        """Make edits found on another copy of this map (a cache following a commit)."""
        _untrack(edits.added)
        removed, added = edits
        if _apply_native is not None and type(removed) is list and type(added) is list:
            r, a = _apply_native(self, removed, added, self.LOAD, Piece)
            if r or a:  # the rest from where the C steps stopped
                removed, added = removed[r:], added[a:]
        for start in removed:
            c = bisect_right(self._firsts, start) - 1
            starts = self._starts[c] if c >= 0 else []
            k = bisect_left(starts, start)
            if k == len(starts) or starts[k] != start:
                raise ValueError(f"no piece at {start} to remove")
            del starts[k], self._chunks[c][k]
            self._len -= 1
            self._put_back(c, c + 1, self._chunks[c], starts)
        for p in added:
            if not self._chunks:
                self._put_back(0, 0, [p], [p.start])
                self._len += 1
                continue
            c = max(bisect_right(self._firsts, p.start) - 1, 0)
            starts, pieces = self._starts[c], self._chunks[c]
            k = bisect_left(starts, p.start)
            starts.insert(k, p.start)
            pieces.insert(k, p)
            self._len += 1
            if k == 0:
                self._firsts[c] = p.start
            if len(pieces) > 2 * self.LOAD:
                self._put_back(c, c + 1, pieces, starts)

    def cut(self, size: int) -> Edits:
        """Drop every mapped byte at or past ``size`` (a truncate)."""
        if not self._chunks or self._chunks[-1][-1].end <= size:
            return Edits([], [])
        return self._replace(size, self._chunks[-1][-1].end, [])


@dataclass(slots=True)
class FileState:
    """The overlay of one file: size, how much base may show, and its map."""

    size: int
    base_limit: int
    map: RangeMap = field(default_factory=RangeMap)

    def write(self, piece: Piece) -> Edits:
        self.size = max(self.size, piece.end)
        return self.map.put(piece)

    def relocate(
        self, start: int, length: int, old: tuple[int, int], new: tuple[int, int]
    ) -> Edits:
        return self.map.relocate(start, length, old, new)

    def truncate(self, size: int) -> Edits:
        self.base_limit = min(self.base_limit, size)
        self.size = size
        return self.map.cut(size)

    def runs(
        self,
        offset: int,
        count: int,
        base: Callable[[int, int], list[Run]],
        log_fd: Callable[[int], int],
    ) -> list[Run]:
        """Cut ``[offset, min(offset+count, size))`` into runs: head, body, tail.

        ``base(offset, count)`` gives the base's runs (``[]`` past its end,
        short at its end: the rest is zeros), a new list each call, which is
        returned as it is when the base alone is read; ``log_fd(log)`` the
        descriptor of a data log.
        """
        end = min(offset + count, self.size)
        if offset >= end:
            return []
        out: list[Run] = []
        pieces = self.map.overlapping(offset, end)
        if not pieces and end <= self.base_limit:  # the base's alone (a READ never written)
            return _base_runs(offset, end - offset, base)
        pos = offset
        for p in pieces:
            if pos < p.start:
                self._gap(out, pos, p.start, base)
            lo, hi = max(pos, p.start), min(end, p.end)
            out.append(Run(log_fd(p.log), p.pos + (lo - p.start), hi - lo))
            pos = hi
        if pos < end:
            self._gap(out, pos, end, base)
        return out

    def _gap(
        self, out: list[Run], start: int, end: int, base: Callable[[int, int], list[Run]]
    ) -> None:
        """Bytes no write covers: the base below ``base_limit``, zeros above."""
        split = min(max(start, self.base_limit), end)
        if start < split:
            got = _base_runs(start, split - start, base)
            if out and got and out[-1].fd == ZERO_FD == got[0].fd:
                _zeros(out, got.pop(0).length)
            out.extend(got)
        if split < end:
            _zeros(out, end - split)


def unchanged_runs(
    size: int, offset: int, count: int, base: Callable[[int, int], list[Run]]
) -> list[Run]:
    """What :meth:`FileState.runs` answers for a file no write or truncate ever
    changed (a ``FileState(size, size)`` with an empty map), without building one."""
    end = min(offset + count, size)
    return _base_runs(offset, end - offset, base) if offset < end else []


def _base_runs(start: int, n: int, base: Callable[[int, int], list[Run]]) -> list[Run]:
    """The base's runs of ``[start, start+n)``, ended in zeros where the base is short
    (``base``'s own new list)."""
    got = base(start, n)
    short = n - sum(map(_LENGTH, got))
    if short > 0:
        _zeros(got, short)
    return got


_LENGTH = itemgetter(2)  # a Run's length


def _zeros(out: list[Run], n: int) -> None:
    if out and out[-1].fd == ZERO_FD:
        out[-1] = Run(ZERO_FD, 0, out[-1].length + n)
    else:
        out.append(Run(ZERO_FD, 0, n))
