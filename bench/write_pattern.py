"""The bytes of the write benchmark: the data set, nfsload's WRITE pattern, the expected files.

Design notes
------------
``bench/nfsload --op write`` writes, at every 4 KiB block of file position
``p``, the little-endian 64-bit ``p ^ seed`` followed by 4088 bytes of an
LCG (``bench/nfsload.c``'s header comment).  The block depends only on its
place, not on the order of the replies or on how often it was written, so
after any number of runs the file is known exactly:

==========================  ================================================
region                      expected bytes
==========================  ================================================
written by a sequential     the pattern
pass (``[start, end)``)
a slot a random WRITE       the pattern (nfsload ``--written`` lists them)
acknowledged
anything else               the presented file as it was (the merged image
                            for ``disk-flat.vmdk``)
==========================  ================================================

``expected()`` builds that file locally; ``nfsload --op sumfile`` of it is
compared with a read of the server's file (``--checksum``), on each server.
A server that dropped, misplaced or tore a write fails the comparison.

The data set (``generate``): a VM folder ``vm/`` in the storage with a
merged image (``disk-flat.vmdk`` + ``disk-pancbt.vmdk``) and a plain disk
(``data-flat.vmdk``); beside it ``merged/disk-flat.vmdk``, the merged image
materialized by the naive reference (``tests/e2e/support/pancbt.py``),
from which ganesha's read-write copy and the expected files are made.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
from collections.abc import Iterable
from pathlib import Path

from tests.e2e.support import pancbt

BLOCK = 4096
MIB = 1024**2
SEED = 1
MERGED, PLAIN = "disk-flat.vmdk", "data-flat.vmdk"
"""The disks of ``vm/``: sequential writes and reads go to the merged one, random to the plain."""


def fill(seed: int = SEED) -> bytes:
    """Bytes 8..4095 of every pattern block (nfsload.c's ``make_fill``)."""
    x = (seed & 0xFFFFFFFF) ^ 0x9E3779B9
    out = bytearray(BLOCK - 8)
    for i in range(len(out)):
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF
        out[i] = x >> 24
    return bytes(out)


def pattern(pos: int, n: int, seed: int = SEED, tail: bytes | None = None) -> bytes:
    """What nfsload writes at ``[pos, pos + n)``; ``pos`` and ``n`` are 4 KiB multiples."""
    assert pos % BLOCK == 0 and n % BLOCK == 0, (pos, n)
    tail = tail if tail is not None else fill(seed)
    return b"".join(
        struct.pack("<Q", (p ^ seed) & (2**64 - 1)) + tail for p in range(pos, pos + n, BLOCK)
    )


def written_offsets(files: Iterable[Path]) -> set[int]:
    """The offsets of nfsload ``--written`` files (little-endian 64-bit each)."""
    out: set[int] = set()
    for f in files:
        data = f.read_bytes()
        out.update(v for (v,) in struct.iter_unpack("<Q", data))
    return out


def expected(
    original: Path,
    out: Path,
    *,
    ranges: Iterable[tuple[int, int]] = (),
    slots: Iterable[int] = (),
    slot_size: int = BLOCK,
) -> Path:
    """``original`` with the pattern over each ``[start, end)`` and each ``slot_size`` slot."""
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(original, out)
    tail = fill()
    with open(out, "r+b") as f:
        for start, end in ranges:
            for pos in range(start, end, 64 * MIB):
                f.seek(pos)
                f.write(pattern(pos, min(64 * MIB, end - pos), tail=tail))
        for pos in sorted(slots):
            f.seek(pos)
            f.write(pattern(pos, slot_size, tail=tail))
    return out


def generate(data: Path, size: int, extents: int) -> None:
    """storage/vm/ (merged image, plain disk, a .vmx) and merged/; kept while the sizes hold."""
    params = json.dumps({"v": 1, "size": size, "extents": extents})
    marker = data / "params.json"
    if marker.exists() and marker.read_text() == params:
        return
    shutil.rmtree(data, ignore_errors=True)
    vm, merged = data / "storage" / "vm", data / "merged"
    vm.mkdir(parents=True)
    merged.mkdir()
    _random_file(vm / PLAIN, size)
    base = vm / MERGED
    _random_file(base, size)
    rnd = random.Random(10)
    blocks = rnd.sample(range(size // BLOCK), extents)
    overlay = pancbt.build(
        [(b * BLOCK, rnd.randbytes(BLOCK)) for b in blocks],
        disk_size=size,
        base_size=size,
        base_hint="bench-writes",
    )
    (vm / "disk-pancbt.vmdk").write_bytes(overlay)
    with open(base, "rb") as b, open(merged / MERGED, "wb") as out:
        pancbt.merge_into(out, b, overlay)
    (vm / "vm.vmx").write_text('displayName = "vm"\nscsi0:0.fileName = "disk.vmdk"\n')
    marker.write_text(params)


def _random_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        for _ in range(0, size, 64 * MIB):
            f.write(os.urandom(min(64 * MIB, size - f.tell())))
