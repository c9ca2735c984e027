"""The benchmark's 10,000-entry folders: each tree's own files, never hard links.

Design note
-----------
``bench/run`` lists and looks up a folder of 10,000 small files in three
trees: recovery-fs's storage (``storage/big``), ganesha's (``ganesha/big``)
and the scale tree both servers serve in turn (``scale/big``).  They were
hard links to one set of files (``nlink`` 3).  A backup store's files have
one name, and a file with other names can be written through them without
an event on the folder's inotify watch, so ``merge.watch`` must ``lstat``
each such entry before handing a listing out again: over 64 of them, every
listing past the 1 s ttl was a scan.  So each of the three folders has its
own copies (same names, same bytes, ``nlink`` 1).  The 1 GiB images stay
hard links between the trees: both servers read them from one page cache.

A data folder made before keeps its images: :func:`own_copies` replaces, in
place, each entry that has other names by a copy (written beside it, then
renamed over it), and is run again after an interruption.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

_TMP = ".own-copy.tmp"  # the copy being written, renamed over the entry


def own_copies(folder: Path) -> int:
    """Replace each regular file of ``folder`` that has other hard links by a copy
    of its own; returns how many were replaced.  Idempotent; a copy left half
    written by an interruption is removed first."""
    (folder / _TMP).unlink(missing_ok=True)
    replaced = 0
    with os.scandir(folder) as it:
        names = [de.name for de in it if de.is_file(follow_symlinks=False)]
    for name in sorted(names):
        path = folder / name
        st = path.lstat()
        if st.st_nlink < 2:
            continue
        tmp = folder / _TMP
        shutil.copy(path, tmp)  # the bytes and the mode
        os.replace(tmp, path)
        replaced += 1
    return replaced


def copy_folder(src: Path, dst: Path) -> None:
    """``dst`` made with a copy of each regular file of ``src`` (same names, bytes, mode)."""
    dst.mkdir()
    with os.scandir(src) as it:
        for de in it:
            if de.is_file(follow_symlinks=False):
                shutil.copy(de.path, dst / de.name)  # the bytes and the mode
