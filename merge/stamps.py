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
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Stamp:
    """Storage path, device, inode, size, mtime and ctime of one file version."""

    path: str
    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, path: str, st: os.stat_result) -> Stamp:
        return cls(path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def matches(self, st: os.stat_result) -> bool:
        """Whether ``st`` is of this version: the same five numbers (compared
        one by one, the likeliest to differ first: no tuple built, on every READ)."""
        return (
            st.st_ctime_ns == self.ctime_ns
            and st.st_mtime_ns == self.mtime_ns
            and st.st_size == self.size
            and st.st_ino == self.ino
            and st.st_dev == self.dev
        )

    def current(self) -> bool:
        """Whether ``path`` still names this version of the file."""
        try:
            return self.matches(os.stat(self.path))
        except OSError:
            return False
