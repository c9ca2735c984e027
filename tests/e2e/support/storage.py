"""Generated storage trees, with the tree a client must see in ``/recover/images``.

Each builder writes a storage tree below ``root`` and returns a ``Presented``
dict: presented path (``"a/b"``, relative to the export) to the expected
bytes of a file, or ``None`` for a directory.  The expectations follow
``shared/spec/namespace.md`` and are computed here, independently of the
server: merged images with ``support.pancbt``'s naive reference.

=====================  ===================================================
builder                what the tree holds
=====================  ===================================================
``build_sample``       two weeks of backups per namespace.md: passthrough
                       files, a merged image over a SmartMotion link, a
                       merge over a merge through a chain of links, a
                       link with a ``name`` and a root-relative target,
                       hidden pancbt and link files, non-link .json files
``build_big_dir``      one directory of ``count`` small files
``build_scale``        ``folders`` folders of ``per_folder`` small files
=====================  ===================================================
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from . import pancbt

Presented = dict[str, bytes | None]

KIB, MIB = 1024, 1024 * 1024


def _write(root: Path, rel: str, data: bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _link(target: str, name: str | None = None) -> bytes:
    doc: dict[str, object] = {
        "smartmotion": 1,
        "target": target,
        "comment": "unknown keys are fine",
    }
    if name is not None:
        doc["name"] = name
    return json.dumps(doc).encode()


def _add_dirs(presented: Presented) -> Presented:
    for rel in list(presented):
        parts = rel.split("/")
        for i in range(1, len(parts)):
            presented.setdefault("/".join(parts[:i]), None)
    return presented


def build_sample(root: Path, seed: int = 1) -> Presented:
    """A small but complete backup storage; see the module's table."""
    rnd = random.Random(seed)
    files: dict[str, bytes] = {}  # storage path -> bytes, presented as is
    d1, d2, d3 = "2026-11-20T0100", "2026-11-21T0100", "2026-11-22T0100"

    # Day 1: full images, plain passthrough files.
    base = rnd.randbytes(3 * MIB + 1000)  # not a multiple of any block size
    db = rnd.randbytes(256 * KIB + 7)
    files[f"{d1}/web01/web01.vmx"] = b'displayName = "web01"\n'
    files[f"{d1}/web01/web01.vmdk"] = b'# Disk DescriptorFile\nRW 6146 VMFS "web01-flat.vmdk"\n'
    files[f"{d1}/web01/web01-flat.vmdk"] = base
    files[f"{d1}/web01/web01.nvram"] = rnd.randbytes(8684)
    files[f"{d1}/db01/db01-flat.vmdk"] = db
    files[f"{d1}/db01/empty.log"] = b""
    files[f"{d1}/notes.json"] = b'{"smartmotion": 2, "target": "web01/web01.vmx"}'  # not a link
    files[f"{d1}/broken.json"] = b'{"smartmotion": 1, "target": '  # not JSON: passthrough
    files[f"{d1}/with space & more.txt"] = b"a name with a space\n"

    # Day 2: web01's disk is a link to day 1's plus a pancbt: a merged image
    # that grew, with edge cases (offset 0, adjacent extents, ZERO, tail).
    overlay2 = pancbt.build(
        [
            (0, rnd.randbytes(512)),
            (4096, rnd.randbytes(4096)),
            (8192, 4096),  # adjacent ZERO after DATA
            (12288, rnd.randbytes(100)),
            (MIB - 3, rnd.randbytes(4096)),  # straddles the 1 MiB READ boundary
            (2 * MIB, 64 * KIB),
            (3 * MIB + 1000 - 10, rnd.randbytes(20)),  # straddles the end of the base
            (4 * MIB - 8192, rnd.randbytes(8192)),  # ends at disk_size
        ],
        disk_size=4 * MIB,
        base_size=len(base),
        base_hint=f"{d1}/web01/web01-flat.vmdk",
    )
    merged2 = pancbt.merged_bytes(base, overlay2)
    files[f"{d2}/web01/web01.vmx"] = files[f"{d1}/web01/web01.vmx"]
    files[f"{d2}/web01/web01.vmdk"] = files[f"{d1}/web01/web01.vmdk"]
    hidden = {
        f"{d2}/web01/web01-flat.vmdk.json": _link(f"../../{d1}/web01/web01-flat.vmdk"),
        f"{d2}/web01/web01-pancbt.vmdk": overlay2,
    }

    # Day 3: a link to a link to day 2's merged image, and a pancbt over it
    # that shrinks the disk; db01 through a named link with a root target.
    overlay3 = pancbt.build(
        [(MIB, rnd.randbytes(3 * KIB)), (3 * MIB - 5, rnd.randbytes(5))],
        disk_size=3 * MIB,
        base_size=len(merged2),
    )
    merged3 = pancbt.merged_bytes(merged2, overlay3)
    hidden |= {
        f"{d3}/web01/previous.json": _link(f"../../{d2}/web01/web01-flat.vmdk", name="prev.vmdk"),
        f"{d3}/web01/web01-flat.vmdk.json": _link("prev.vmdk"),
        f"{d3}/web01/web01-pancbt.vmdk": overlay3,
        f"{d3}/db01/db-link.json": _link(f"/{d1}/db01/db01-flat.vmdk", name="db01-flat.vmdk"),
        f"{d3}/db01/ghost-flat.vmdk.json": _link("no-such-file"),  # rule 5: not shown
        f"{d3}/orphan-pancbt.vmdk": overlay3,  # rule 5: no base beside it
    }
    for rel, data in (files | hidden).items():
        _write(root, rel, data)

    presented: Presented = dict(files)
    presented[f"{d2}/web01/web01-flat.vmdk"] = merged2
    presented[f"{d3}/web01/prev.vmdk"] = merged2
    presented[f"{d3}/web01/web01-flat.vmdk"] = merged3
    presented[f"{d3}/db01/db01-flat.vmdk"] = db
    return _add_dirs(presented)


def big_dir_name(i: int) -> str:
    return f"file-{i:05d}.dat"


def build_big_dir(root: Path, rel: str, count: int) -> Presented:
    """``count`` files named ``file-NNNNN.dat`` in ``rel``, each holding its name."""
    folder = root / rel
    folder.mkdir(parents=True, exist_ok=True)
    presented: Presented = {rel: None}
    for i in range(count):
        name = big_dir_name(i)
        (folder / name).write_bytes(name.encode())
        presented[f"{rel}/{name}"] = name.encode()
    return presented


def build_scale(root: Path, folders: int, per_folder: int) -> int:
    """``folders`` backup-like folders of ``per_folder`` small files; returns the count."""
    for f in range(folders):
        folder = root / f"vm{f:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_folder):
            (folder / f"disk{i:03d}.vmdk").write_bytes(b"# Disk DescriptorFile\n")
    return folders * per_folder
