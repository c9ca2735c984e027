"""``demo``: a small storage tree (about 5 MB) that shows every rule of namespace.md.

Design notes
------------
The tree, made with the project's own tools (``merge.create`` writes the
pancbt files from raw images built here and thrown away):

==========================================  ======================================
storage                                     presented
==========================================  ======================================
``2026-11-20T0100/web01/``                  a full backup: ``.vmx``, descriptor,
                                            4 MiB ``-flat.vmdk``, ``.nvram``, log
``2026-11-21T0100/web01/``                  ``web01-flat.vmdk``: a link to day 1's
                                            image + a pancbt (changed blocks and a
                                            trimmed range)
``2026-11-22T0100/web01/``                  ``web01-flat.vmdk``: a root-relative
                                            link to day 2's *merged* image + a
                                            pancbt that grows the disk to 6 MiB;
                                            ``backup-info.json`` (not a link)
``latest``                                  a symbolic link to day 3's folder
``problems/``                               one of each entry rule 5 withholds,
                                            a rule 6 clash, non-link ``.json``
==========================================  ======================================

Idempotent: the tree is built under a temporary name beside ``root`` and
renamed into place, with the marker file :data:`MARKER` inside.  If
``root`` already holds the marker, nothing is done unless ``force``; a
non-empty ``root`` without the marker is never touched (it might be real
backups).  Content is pseudo-random from a fixed seed: every run writes the
same bytes.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path

from merge.create import create_pancbt
from merge.names import FLAT_SUFFIX, PANCBT_SUFFIX

MARKER = ".recovery-fs-demo"
KIB, MIB = 1024, 1024 * 1024
DAYS = ("2026-11-20T0100", "2026-11-21T0100", "2026-11-22T0100")
CREATED = 1_795_309_200  # 2026-11-22T01:00Z: every run writes the same bytes
BLOCK = 4096


class DemoError(Exception):
    """The demo storage cannot be written there."""


def make_demo(root: Path, *, force: bool = False) -> bool:
    """Write the demo storage at ``root``; ``False`` if one was already there."""
    root = Path(root)
    if root.exists():
        if not root.is_dir():
            raise DemoError(f"{root} exists and is not a directory")
        is_demo = (root / MARKER).is_file()
        if is_demo and not force:
            return False
        if not is_demo and any(root.iterdir()):
            raise DemoError(f"{root} is not empty and holds no {MARKER}: not touching it")
    root.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        _build(build)
        (build / MARKER).write_text(
            "recovery-fs demo storage: `recovery-fs demo --force` rebuilds\n"
        )
        os.chmod(build, 0o755)
        if root.exists():
            shutil.rmtree(root)
        os.rename(build, root)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return True


def _build(root: Path) -> None:
    rnd = random.Random(20261120)
    with tempfile.TemporaryDirectory() as scratch:
        images = _images(rnd, Path(scratch))
        _backups(root, rnd, images)
        _problems(root, rnd, Path(scratch))


def _images(rnd: random.Random, scratch: Path) -> list[Path]:
    """web01's raw disk on each day: changed blocks, a trimmed range, then grown."""
    day1 = bytearray(rnd.randbytes(4 * MIB))
    day1[3 * MIB : 3 * MIB + 256 * KIB] = bytes(256 * KIB)  # never written
    day2 = bytearray(day1)
    for _ in range(24):
        at = rnd.randrange(0, 4 * MIB // BLOCK) * BLOCK
        day2[at : at + BLOCK] = rnd.randbytes(BLOCK)
    day2[2 * MIB : 2 * MIB + 64 * KIB] = bytes(64 * KIB)  # trimmed
    day3 = bytearray(day2) + bytes(2 * MIB)  # the disk grew to 6 MiB
    day3[4 * MIB + 512 * KIB : 5 * MIB] = rnd.randbytes(512 * KIB)
    day3[100 * KIB : 100 * KIB + 10] = b"day three!"  # less than a block
    paths = []
    for i, data in enumerate((day1, day2, day3)):
        path = scratch / f"day{i + 1}.img"
        path.write_bytes(data)
        paths.append(path)
    return paths


def _vm_files(folder: Path, disk_size: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "web01.vmx").write_text(
        '.encoding = "UTF-8"\nconfig.version = "8"\nvirtualHW.version = "14"\n'
        'displayName = "web01"\nguestOS = "debian11-64"\nmemSize = "2048"\n'
        'scsi0:0.fileName = "web01.vmdk"\n'
    )
    sectors = disk_size // 512
    (folder / "web01.vmdk").write_text(
        "# Disk DescriptorFile\nversion=1\nCID=5f1e2d3c\nparentCID=ffffffff\n"
        'createType="vmfs"\n\n# Extent description\n'
        f'RW {sectors} VMFS "web01{FLAT_SUFFIX}"\n\n# The Disk Data Base\n#DDB\n\n'
        'ddb.adapterType = "lsilogic"\nddb.virtualHWVersion = "14"\n'
        f'ddb.geometry.cylinders = "{sectors // (255 * 63)}"\n'
        'ddb.geometry.heads = "255"\nddb.geometry.sectors = "63"\n'
    )


def _link(path: Path, target: str, **extra: object) -> None:
    path.write_text(json.dumps({"smartmotion": 1, "target": target, **extra}, indent=2) + "\n")


def _backups(root: Path, rnd: random.Random, images: list[Path]) -> None:
    d1, d2, d3 = (root / day / "web01" for day in DAYS)
    flat, pancbt = f"web01{FLAT_SUFFIX}", f"web01{PANCBT_SUFFIX}"
    _vm_files(d1, 4 * MIB)
    shutil.copyfile(images[0], d1 / flat)
    (d1 / "web01.nvram").write_bytes(rnd.randbytes(8684))
    (d1 / "vmware.log").write_text("2026-11-20T01:00:00.000Z| vmx| I005: backup snapshot\n")

    _vm_files(d2, 4 * MIB)
    _link(d2 / f"{flat}.json", f"../../{DAYS[0]}/web01/{flat}", job="nightly")
    _pancbt(images[0], images[1], d2 / pancbt, f"{DAYS[0]}/web01/{flat}")

    _vm_files(d3, 6 * MIB)
    _link(d3 / f"{flat}.json", f"/{DAYS[1]}/web01/{flat}")  # day 2 as presented: merged
    _pancbt(images[1], images[2], d3 / pancbt, f"{DAYS[1]}/web01/{flat}")
    (root / DAYS[2] / "backup-info.json").write_text(
        json.dumps({"job": "nightly", "vms": ["web01"], "target": "not a link"}, indent=2) + "\n"
    )
    os.symlink(DAYS[2], root / "latest")


def _pancbt(base: Path, new: Path, out: Path, hint: str) -> None:
    create_pancbt(str(base), str(new), str(out), block_size=BLOCK, created=CREATED, base_hint=hint)


def _problems(root: Path, rnd: random.Random, scratch: Path) -> None:
    """One example of each case rule 5 withholds, a rule 6 clash, non-link .json files."""
    p = root / "problems"
    deep = p / "deep"
    deep.mkdir(parents=True)
    # Links: target missing, escaping (by .., absolute, through a symbolic
    # link), a directory, a pancbt, a link's own .json; a loop; 17 deep.
    _link(p / "missing-flat.vmdk.json", "no-such-flat.vmdk")
    _link(p / "escape-dotdot.json", "../../outside.img")
    _link(p / "escape-absolute.json", "/../outside.img")
    os.symlink("../..", p / "escape-symlink")  # a symbolic link leading outside the root
    _link(p / "escape-via-symlink.json", "escape-symlink/outside.img")
    _link(p / "to-directory.json", "deep")
    _link(p / "to-pancbt.json", f"corrupt{PANCBT_SUFFIX}")
    _link(p / "to-link-file.json", "loop-a.json")
    _link(p / "loop-a.json", "loop-b")
    _link(p / "loop-b.json", "loop-a")
    _link(p / "bad-name.json", "notes.txt", name="../sneaky")
    (deep / "disk.img").write_bytes(b"the end of a 17-link chain\n")
    for i in range(17):  # link-00 is 17 links deep: withheld; link-01 is 16: shown
        _link(deep / f"link-{i:02d}.json", f"link-{i + 1:02d}" if i < 16 else "disk.img")
    # Rule 6: a real file and a link presenting the same name.
    (p / "notes.txt").write_text("a real file wins over a link of the same name\n")
    _link(p / "notes.txt.json", f"../{DAYS[0]}/web01/web01.vmx")
    # Not links: ordinary files (rule 1).
    (p / "not-json.json").write_text('{"smartmotion": 1, "target": \n')
    (p / "no-marker.json").write_text('{"target": "notes.txt"}\n')
    # Merges that must not be shown: a corrupt pancbt, a base of the wrong
    # size, and a pancbt with nothing beside it.
    small = scratch / "small.img"
    small.write_bytes(rnd.randbytes(256 * KIB))
    changed = scratch / "changed.img"
    changed.write_bytes(small.read_bytes()[: 128 * KIB] + rnd.randbytes(128 * KIB))
    for name in ("corrupt", "resized", "orphan"):
        _pancbt(small, changed, p / f"{name}{PANCBT_SUFFIX}", str(small.name))
    shutil.copyfile(small, p / f"corrupt{FLAT_SUFFIX}")
    with open(p / f"corrupt{PANCBT_SUFFIX}", "r+b") as f:  # break the table CRC
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 0xFF]))
    (p / f"resized{FLAT_SUFFIX}").write_bytes(small.read_bytes() + bytes(BLOCK))
