"""``pancbt create``: the pancbt file that turns one raw disk image into another.

Design notes
------------
The new image is compared with the base block by block (``block_size``,
from offset 0; the last block may be short).  What the merged image would
hold at a block without an extent is the base's bytes, or zeros past the
base's end (pancbt.md, "The merged image"); a block of the new image that
differs from that becomes

==========================  ====================
the new block is            extent
==========================  ====================
all zeros                   ZERO
anything else               DATA (its bytes)
==========================  ====================

and :func:`merge.pancbt.write_pancbt` coalesces neighbours of one kind.  A
grown disk's tail is compared with zeros, so only its non-zero blocks are
stored; a shrunk disk just gets the smaller ``disk_size``.

It streams: images are read a chunk at a time (whole chunks that match are
skipped without looking at their blocks), DATA bytes go straight to the
output and the table is spooled, so memory does not depend on image size.
The output is written beside ``out`` under a temporary name and renamed
into place only when complete.  ``base_size`` is set to the base's size,
so a reader refuses the file over any other base of another size (rule 8).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import BinaryIO

from merge.pancbt import Change, DataChange, Header, ZeroChange, write_pancbt

DEFAULT_BLOCK_SIZE = 64 * 1024
CHUNK = 1 << 20

Progress = Callable[[int], None]
"""Called with the number of bytes of the new image just compared."""


def image_changes(
    base: BinaryIO,
    new: BinaryIO,
    *,
    base_size: int,
    new_size: int,
    block_size: int,
    progress: Progress | None = None,
) -> Iterator[Change]:
    """The blocks of ``new`` that differ from what ``base`` would read as, in order."""
    chunk = max(block_size, CHUNK - CHUNK % block_size)
    zeros = bytes(chunk)
    pos = 0
    while pos < new_size:
        n = min(chunk, new_size - pos)
        want = _read(new, pos, n)
        have = _read(base, pos, max(0, min(n, base_size - pos)))
        have += zeros[: n - len(have)]
        if want != have:
            for off in range(0, n, block_size):
                block = want[off : off + block_size]
                if block == have[off : off + block_size]:
                    continue
                if block == zeros[: len(block)]:
                    yield ZeroChange(pos + off, len(block))
                else:
                    yield DataChange(pos + off, block)
        pos += n
        if progress is not None:
            progress(n)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _read(f: BinaryIO, pos: int, n: int) -> bytes:
    f.seek(pos)
    data = f.read(n)
    if len(data) != n:
        raise OSError(f"{getattr(f, 'name', 'image')}: short read at {pos} (did it change?)")
    return data


def create_pancbt(
    base_path: str,
    new_path: str,
    out_path: str,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    created: int | None = None,
    base_hint: str | None = None,
    progress: Progress | None = None,
) -> Header:
    """Write ``out_path``: the pancbt of ``new_path`` over ``base_path``; returns its header."""
    out_dir = os.path.dirname(os.path.abspath(out_path))
    with open(base_path, "rb") as base, open(new_path, "rb") as new:
        base_size = os.fstat(base.fileno()).st_size
        new_size = os.fstat(new.fileno()).st_size
        changes = image_changes(
            base,
            new,
            base_size=base_size,
            new_size=new_size,
            block_size=block_size,
            progress=progress,
        )
        fd, tmp = tempfile.mkstemp(prefix=".pancbt-", dir=out_dir)
        try:
            with os.fdopen(fd, "w+b") as out:
                header = write_pancbt(
                    out,
                    disk_size=new_size,
                    base_size=base_size,
                    block_size=block_size,
                    changes=changes,
                    created=int(time.time()) if created is None else created,
                    base_hint=base_path if base_hint is None else base_hint,
                )
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide it from clients
            os.replace(tmp, out_path)
        except BaseException:
            os.unlink(tmp)
            raise
    return header
