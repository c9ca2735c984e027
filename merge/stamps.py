"""What identifies one version of a storage file, to notice it changed.

A :class:`Stamp` is taken with ``fstat`` on the descriptor that is read, so
it describes exactly the bytes served.  ``current()`` re-``stat``s the path:
a replaced file (new inode), a rewritten one (new mtime or ctime) or a grown
or cut one (new size) is no longer current.  Reading nothing, it is cheap
enough to check every second for every input of a merged image.

The ctime counts because the mtime alone can be set back: a file rewritten
in place with its size and mtime kept (``cp -p`` over it, ``rsync
--inplace -t``) differs only there, and no ``utime`` can set a ctime.  A
change of attributes alone (``chmod``, a hard link) also moves it: the
inputs are then prepared again, for nothing but a little work.

A stamp is *racy* (git's word, for its index) when the file changed (its
ctime) less than :data:`RACY_NS` before the stamp was taken: a file system keeps times
at the grain of its clock's tick (Linux's coarse clock: 1-4 ms; FAT 2 s; a
network file system the server's), so a write later in that same tick, after
the file was read, leaves every number of the stamp as it was.  Bytes read
through the descriptor are always the file's own, but what was *parsed*
from it (a pancbt's extent table, a link's target) could be of the file as
it was.  So a racy stamp holds only until the tick is surely over
(``settled_ns``): then :meth:`Stamp.current` says no once, and the caller
opens and parses the file again, under a stamp that is no longer racy.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

RACY_NS = 2_000_000_000
"""Above the grain of any file system's times: a stamp taken less than this after
its file's last change is checked again by reading, once this has passed."""


def now_ns() -> int:
    """The clock stamps are taken by (``time.time_ns``; tests move it)."""
    return time.time_ns()


def racy(ctime_ns: int, taken_ns: int) -> bool:
    """Whether a file of this ctime, read at ``taken_ns`` (``time.time_ns``) or later,
    may not show a change made after the read, in its last change's tick.  The
    ctime, not the mtime: every change moves it to the clock's time, and no
    ``utime`` sets it (an mtime set in the future would keep a file racy until
    then)."""
    return ctime_ns > taken_ns - RACY_NS


@dataclass(frozen=True, slots=True)
class Stamp:
    """Storage path, device, inode, size, mtime and ctime of one file version."""

    path: str
    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int
    settled_ns: int = 0
    """A racy stamp's: from then on (``time.time_ns``) it is no longer current."""

    @classmethod
    def of(cls, path: str, st: os.stat_result) -> Stamp:
        """The stamp of ``st``, taken (``fstat``) just before the file is read."""
        settled = st.st_ctime_ns + RACY_NS if racy(st.st_ctime_ns, now_ns()) else 0
        return cls(path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, settled)

    def matches(self, st: os.stat_result) -> bool:
        """Whether ``st`` is of this version: the same five numbers (compared
        one by one, the likeliest to differ first: no tuple built, on every READ),
        and not a racy stamp whose tick is over (a cache that reuses what it
        opened under this stamp opens the file again, under a settled one)."""
        if self.settled_ns and now_ns() >= self.settled_ns:
            return False
        return (
            st.st_ctime_ns == self.ctime_ns
            and st.st_mtime_ns == self.mtime_ns
            and st.st_size == self.size
            and st.st_ino == self.ino
            and st.st_dev == self.dev
        )

    def current(self) -> bool:
        """Whether ``path`` still names this version of the file: not once a racy
        stamp's tick is over (what was read from it is read again)."""
        try:
            return self.matches(os.stat(self.path))
        except OSError:
            return False
