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
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

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


class Edits(NamedTuple):
    """What one change did to a map: pieces gone (by start) and pieces new."""

    removed: list[int]
    added: list[Piece]


class RangeMap:
    """Sorted, non-overlapping pieces; lookups bisect the starts."""

    __slots__ = ("_pieces", "_starts")

    def __init__(self, pieces: list[Piece] | None = None) -> None:
        self._pieces: list[Piece] = sorted(pieces or [])
        self._starts = [p.start for p in self._pieces]
        for a, b in zip(self._pieces, self._pieces[1:], strict=False):
            if a.end > b.start or a.length < 1:
                raise ValueError(f"pieces {a} and {b} overlap")

    def __iter__(self) -> Iterator[Piece]:
        return iter(self._pieces)

    def __len__(self) -> int:
        return len(self._pieces)

    @property
    def bytes(self) -> int:
        """Bytes the map points at (live overlay bytes)."""
        return sum(p.length for p in self._pieces)

    def _span(self, start: int, end: int) -> tuple[int, int]:
        """Indexes ``[i, j)`` of the pieces that overlap ``[start, end)``."""
        i = bisect_right(self._starts, start) - 1
        if i < 0 or self._pieces[i].end <= start:
            i += 1
        j = bisect_left(self._starts, end, lo=max(i, 0))
        return i, j

    def overlapping(self, start: int, end: int) -> list[Piece]:
        i, j = self._span(start, end)
        return self._pieces[i:j]

    def _replace(self, start: int, end: int, middle: list[Piece]) -> Edits:
        """Cut ``[start, end)`` out of the map and put ``middle`` there."""
        i, j = self._span(start, end)
        if i == j:  # nothing there (a first write of a region): no piece to cut
            self._pieces[i:i] = middle
            self._starts[i:i] = [p.start for p in middle]
            return Edits([], list(middle))
        old = self._pieces[i:j]
        new: list[Piece] = []
        if old and old[0].start < start:
            p = old[0]
            new.append(Piece(p.start, start - p.start, p.log, p.pos))
        new.extend(middle)
        if old and old[-1].end > end:
            p = old[-1]
            cut = end - p.start
            new.append(Piece(end, p.end - end, p.log, p.pos + cut))
        self._pieces[i:j] = new
        self._starts[i:j] = [p.start for p in new]
        removed = [p.start for p in old]
        # A piece kept whole (same start and value) is no edit.
        kept = set(old) & set(new)
        return Edits(
            [s for s, p in zip(removed, old, strict=True) if p not in kept],
            [p for p in new if p not in kept],
        )

    def put(self, piece: Piece) -> Edits:
        """Map ``piece`` over whatever was there; join it to a piece it continues."""
        if piece.length < 1:
            return Edits([], [])
        i = bisect_left(self._starts, piece.start) - 1
        if i >= 0:
            prev = self._pieces[i]
            if (
                prev.end == piece.start
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
        i, j = self._span(start, end)
        keep = old_pos - start
        moved = []
        for p in self._pieces[i:j]:
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
        for start in edits.removed:
            i = bisect_left(self._starts, start)
            if i == len(self._starts) or self._starts[i] != start:
                raise ValueError(f"no piece at {start} to remove")
            del self._starts[i], self._pieces[i]
        for p in edits.added:
            i = bisect_left(self._starts, p.start)
            self._starts.insert(i, p.start)
            self._pieces.insert(i, p)

    def cut(self, size: int) -> Edits:
        """Drop every mapped byte at or past ``size`` (a truncate)."""
        if not self._pieces or self._pieces[-1].end <= size:
            return Edits([], [])
        return self._replace(size, self._pieces[-1].end, [])


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
        short at its end: the rest is zeros); ``log_fd(log)`` the descriptor
        of a data log.
        """
        end = min(offset + count, self.size)
        out: list[Run] = []
        pos = offset
        for p in self.map.overlapping(offset, end) if offset < end else []:
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
            got = base(start, split - start)
            out.extend(got)
            short = (split - start) - sum(r.length for r in got)
            if short > 0:
                _zeros(out, short)
        if split < end:
            _zeros(out, end - split)


def _zeros(out: list[Run], n: int) -> None:
    if out and out[-1].fd == ZERO_FD:
        out[-1] = Run(ZERO_FD, 0, out[-1].length + n)
    else:
        out.append(Run(ZERO_FD, 0, n))
