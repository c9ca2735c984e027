"""The VM's disk and its two backups, built without mounting anything.

Day 1 is a raw ext4 image made by ``mke2fs -d`` from a folder holding
busybox-static (with its applet links), ``/sbin/init`` (``sh/vm-init.sh``)
and ``/etc/day1.txt``. Day 2 is a copy into which ``debugfs -w`` writes
``/etc/day2.txt``, as the guest would have between the backups. The storage
tree then holds what a backup product leaves:

    2026-03-01T0100/vm1/  vm1.vmx  vm1.vmdk  vm1-flat.vmdk           (full)
    2026-03-02T0100/vm1/  vm1.vmx  vm1.vmdk  vm1-flat.vmdk.json      (SmartMotion link to day 1)
                          vm1-pancbt.vmdk                           (day 2's changed 4 KiB blocks)

The pancbt is written by the tests' own writer (``support/pancbt.py``,
independent of ``merge/``) from a 4 KiB block diff of the two images, and
checked here to merge back into day 2 byte for byte, so a failure later is
the server's, not the fixture's.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..support import pancbt

HERE = Path(__file__).resolve().parent
VM_INIT = HERE / "sh" / "vm-init.sh"
BLOCK = 4096
DISK_MIB = 32
DAY1, DAY2 = "2026-03-01T0100", "2026-03-02T0100"
VM = "vm1"
DAY1_TEXT = "day 1: the full backup\n"
DAY2_TEXT = "day 2: written between the backups, carried by the pancbt\n"
# Fixed so that two builds of the fixture give the same bytes but for times.
FS_UUID = uuid.UUID("6d1a3c2e-0c9b-4a53-9b7e-2f1f0e6b5a10")


class DiskError(RuntimeError):
    pass


@dataclass(frozen=True)
class Backups:
    storage: Path
    day1_image: Path  # the day-1 disk, as written to the storage
    day2_image: Path  # what day 2's merged image must read (kept outside the storage)
    day2_folder: str  # the session's PATH, as presented under /recover/images
    changed_blocks: int


def _run(cmd: list[str], **kw: object) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False, **kw)  # type: ignore[call-overload]
    except FileNotFoundError as e:
        raise DiskError(f"{cmd[0]} is not installed (e2fsprogs, see tools/apt-test.txt)") from e
    if p.returncode != 0:
        raise DiskError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
    return str(p.stdout)


def _root_tree(root: Path, busybox: Path) -> None:
    """The VM's root file system as a folder: busybox, its applets, /sbin/init, /etc/day1.txt."""
    for d in ("bin", "sbin", "dev", "proc", "sys", "etc", "data", "tmp", "root"):
        (root / d).mkdir(parents=True)
    shutil.copyfile(busybox, root / "bin" / "busybox")
    (root / "bin" / "busybox").chmod(0o755)
    for applet in _run([str(busybox), "--list"]).split():
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    shutil.copyfile(VM_INIT, root / "sbin" / "init")
    (root / "sbin" / "init").chmod(0o755)
    (root / "etc" / "day1.txt").write_text(DAY1_TEXT)


def make_images(work: Path, busybox: Path) -> tuple[Path, Path]:
    """(day 1, day 2) raw ext4 images; day 2 is day 1 plus /etc/day2.txt."""
    tree = work / "rootfs"
    shutil.rmtree(tree, ignore_errors=True)
    _root_tree(tree, busybox)
    day1, day2 = work / "day1.img", work / "day2.img"
    day1.unlink(missing_ok=True)
    mke2fs = ["mke2fs", "-q", "-F", "-t", "ext4", "-b", str(BLOCK), "-L", "vm1root"]
    mke2fs += ["-U", str(FS_UUID), "-E", f"hash_seed={FS_UUID}", "-d", str(tree)]
    _run([*mke2fs, str(day1), f"{DISK_MIB}M"])
    shutil.copyfile(day1, day2)
    text = work / "day2.txt"
    text.write_text(DAY2_TEXT)
    cmds = work / "debugfs.cmds"
    cmds.write_text(f"cd /etc\nwrite {text} day2.txt\n")
    _run(["debugfs", "-w", "-f", str(cmds), str(day2)])
    listing = _run(["debugfs", "-R", "ls -l /etc", str(day2)])
    if "day2.txt" not in listing:
        raise DiskError(f"debugfs wrote no /etc/day2.txt into the day-2 image: {listing}")
    _run(["e2fsck", "-fn", str(day2)])
    return day1, day2


def changed_extents(old: Path, new: Path) -> list[tuple[int, bytes | int]]:
    """The 4 KiB blocks where ``new`` differs from ``old``: DATA, or ZERO when all zeros."""
    out: list[tuple[int, bytes | int]] = []
    with open(old, "rb") as a, open(new, "rb") as b:
        offset = 0
        while True:
            x, y = a.read(BLOCK), b.read(BLOCK)
            if not y:
                break
            if x != y:
                out.append((offset, len(y) if y.count(0) == len(y) else y))
            offset += len(y)
    return out


def _vmdk(size: int) -> bytes:
    return (
        '# Disk DescriptorFile\nversion=1\nencoding="UTF-8"\nCID=fffffffe\n'
        f'parentCID=ffffffff\ncreateType="vmfs"\n\n# Extent description\n'
        f'RW {size // 512} VMFS "{VM}-flat.vmdk"\n\n# The Disk Data Base\n#DDB\n\n'
        'ddb.adapterType = "pvscsi"\nddb.virtualHWVersion = "19"\n'
        f'ddb.uuid = "60 00 C2 9a 1b 2c 3d 4e-5f 60 71 82 93 a4 b5 c6"\n'
    ).encode()


def _vmx() -> bytes:
    return (
        f'.encoding = "UTF-8"\nconfig.version = "8"\nvirtualHW.version = "19"\n'
        f'displayName = "{VM}"\nguestOS = "other5xlinux-64"\nmemSize = "256"\n'
        f'scsi0.present = "TRUE"\nscsi0.virtualDev = "pvscsi"\n'
        f'scsi0:0.present = "TRUE"\nscsi0:0.fileName = "{VM}.vmdk"\n'
    ).encode()


def build_backups(work: Path, busybox: Path) -> Backups:
    """The storage tree of two daily backups of the VM; see the module's notes."""
    day1_img, day2_img = make_images(work, busybox)
    size = day1_img.stat().st_size
    extents = changed_extents(day1_img, day2_img)
    if not extents:
        raise DiskError("the day-2 image does not differ from day 1")
    overlay = pancbt.build(
        extents, size, base_size=size, block_size=BLOCK, base_hint=f"../../{DAY1}/{VM}"
    )
    if pancbt.merged_bytes(day1_img.read_bytes(), overlay) != day2_img.read_bytes():
        raise DiskError("the pancbt of the fixture does not merge into the day-2 image")
    storage = work / "storage"
    shutil.rmtree(storage, ignore_errors=True)
    d1, d2 = storage / DAY1 / VM, storage / DAY2 / VM
    d1.mkdir(parents=True)
    d2.mkdir(parents=True)
    shutil.copyfile(day1_img, d1 / f"{VM}-flat.vmdk")
    for d in (d1, d2):
        (d / f"{VM}.vmdk").write_bytes(_vmdk(size))
        (d / f"{VM}.vmx").write_bytes(_vmx())
    link = f'{{"smartmotion": 1, "target": "../../{DAY1}/{VM}/{VM}-flat.vmdk"}}'
    (d2 / f"{VM}-flat.vmdk.json").write_text(link)
    (d2 / f"{VM}-pancbt.vmdk").write_bytes(overlay)
    return Backups(
        storage=storage,
        day1_image=d1 / f"{VM}-flat.vmdk",
        day2_image=day2_img,
        day2_folder=f"{DAY2}/{VM}",
        changed_blocks=len(extents),
    )
