"""The extent map of a merged image: which source each byte comes from.

Design notes
------------
A merged image (pancbt.md, "The merged image") is ``disk_size`` bytes cut
into pieces.  Extents cover some; the gaps between them read from the base
while the base lasts, then as zeros:

=====================================  ======================================
byte ``p`` lies                        it reads as             run
=====================================  ======================================
in a DATA extent ``e``                 pancbt byte             ``Run(OVERLAY,
                                       ``e.data_offset + p -   data_offset+…)``
                                       e.offset``
in a ZERO extent                       0                       ``Run(ZERO_FD…)``
in a gap, ``p`` < base's actual size   base byte ``p``         ``Run(BASE, p…)``
in a gap, past the base                0                       ``Run(ZERO_FD…)``
at or past ``disk_size``               nothing                 (none)
=====================================  ======================================

:meth:`ExtentMap.runs` returns :class:`merge.namespace.Run` items whose
``fd`` is a *source tag*: :data:`BASE`, :data:`OVERLAY` or ``ZERO_FD``.  The
merged reader (``merge.sources.MergedSource``) replaces each tag by the
runs of the real source, so a base that is itself merged composes.

Invariants, checked at construction (``ValueError`` otherwise): extents
sorted by offset, non-overlapping (adjacent allowed), each at least one
byte and inside ``disk_size``.  Lookups bisect the start offsets, so a read
costs O(log n + pieces it touches), whatever the number of extents.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Sequence

from merge.namespace import ZERO_FD, Run
from merge.pancbt import Extent, ExtentKind

BASE = -2
"""Source tag: ``Run(BASE, pos, n)`` is ``n`` bytes at ``pos`` of the base image."""

OVERLAY = -3
"""Source tag: ``Run(OVERLAY, pos, n)`` is ``n`` bytes at ``pos`` of the pancbt file."""


_DATA = int(ExtentKind.DATA)  # a plain int: compared once an extent a READ meets


class ExtentMap:
    """Sorted extents with the disk and base sizes they apply to."""

    __slots__ = ("_data", "_ends", "_kinds", "_starts", "base_size", "disk_size")

    def __init__(self, extents: Sequence[Extent], disk_size: int, base_size: int) -> None:
        if disk_size < 0 or base_size < 0:
            raise ValueError("negative size")
        prev_end = 0
        for e in extents:
            if e.length < 1 or e.offset < prev_end or e.offset + e.length > disk_size:
                raise ValueError(f"extent {e} is empty, unsorted, overlapping or past the disk")
            if e.kind not in (ExtentKind.DATA, ExtentKind.ZERO):
                raise ValueError(f"extent {e} has an unknown kind")
            prev_end = e.offset + e.length
        # Arrays of machine integers, not lists of int objects: 25 bytes an
        # extent instead of ~113, for as long as the merge is prepared (a pancbt
        # of a million scattered changes is a million extents).
        self._starts = array("Q", [e.offset for e in extents])
        self._ends = array("Q", [e.offset + e.length for e in extents])
        self._data = array("Q", [e.data_offset for e in extents])
        self._kinds = bytes(e.kind for e in extents)
        self.disk_size = disk_size
        self.base_size = base_size

    def __len__(self) -> int:
        return len(self._starts)

    def runs(self, offset: int, count: int) -> list[Run]:
        """Cut ``[offset, min(offset + count, disk_size))`` into tagged runs, in order.

        Adjacent zero runs, and runs of one source that continue each other,
        come out as one.
        """
        if offset < 0 or count < 0:
            raise ValueError("negative offset or count")
        end = min(offset + count, self.disk_size)
        if offset >= end:
            return []
        starts, ends, kinds, data = self._starts, self._ends, self._kinds, self._data
        n = len(starts)
        # The piece the read starts in: extent i if it holds `offset`, else
        # the gap just before extent i (i == n: the gap after the last one).
        i = bisect_right(starts, offset) - 1
        if i < 0 or ends[i] <= offset:
            i += 1
        out: list[Run] = []
        # Head: the first piece is cut where the read starts (it may start
        # inside an extent or a gap).  Body: the pieces after it are taken
        # whole.  Tail: the last piece is cut where the read ends (stop = end).
        pos = offset
        while pos < end:
            if i < n and starts[i] <= pos:
                # Extent i, from pos.
                stop = min(ends[i], end)
                if kinds[i] == _DATA:
                    append_run(out, Run(OVERLAY, data[i] + (pos - starts[i]), stop - pos))
                else:
                    append_run(out, Run(ZERO_FD, 0, stop - pos))
                i += 1
            else:
                # The gap before extent i (after the last one if i == n).
                stop = min(starts[i], end) if i < n else end
                self._gap(out, pos, stop)
            pos = stop
        return out

    def _gap(self, out: list[Run], start: int, stop: int) -> None:
        """Base bytes while the base lasts, zeros past its actual size."""
        cut = min(stop, max(start, self.base_size))
        if cut > start:
            append_run(out, Run(BASE, start, cut - start))
        if stop > cut:
            append_run(out, Run(ZERO_FD, 0, stop - cut))


def append_run(out: list[Run], run: Run) -> None:
    """Append ``run``, merging it into the previous one when they continue each other."""
    fd, pos, length = run
    if out:
        last = out[-1]
        if last.fd == fd and (fd == ZERO_FD or last.pos + last.length == pos):
            out[-1] = Run(fd, last.pos, last.length + length)
            return
    out.append(Run(fd, 0, length) if fd == ZERO_FD else run)
