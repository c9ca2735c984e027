"""The storage tree the kernel-client tests export, and what it must look like.

`build(root)` writes a storage tree and returns a `Layout`: every directory and
file the export `/recover/images` must present (namespace.md), with the
source of each file's expected bytes, and the names that must not exist.

- `tree/`: passthrough files of awkward sizes and names, 200 small files in
  one directory (several READDIRPLUS replies), JSON files that are not links.
- `big/`: a 256 MiB file (throughput, sampled ranges), a 128 MiB one (the
  restart test) and a sparse 5 GiB + 12345 byte file with distinct data
  around and past 4 GiB.
- `backups/`: a chain of backups as vmPRO writes them (a full `-flat.vmdk`,
  then `-flat.vmdk.json` SmartMotion links with `-pancbt.vmdk` overlays, one
  link to a merged image, one link with a `"name"`, a pancbt with no
  extents), plain link chains, a name clash, and a folder of invalid cases
  that must all be hidden.

Expected merged images come from `pancbt.naive_merge` (the tests' own
reader) and are cross-checked against the disk the generator meant.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from . import pancbt
from .pancbt import Change

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
FULL_HASH_LIMIT = 16 * MiB  # files up to this size are hashed whole in the guest
STREAM, STREAM_SIZE = "big/stream.bin", 256 * MiB
RESTART, RESTART_SIZE = "big/restart.bin", 128 * MiB
HUGE = "big/huge-flat.vmdk"
HUGE_SIZE = 5 * GiB + 12345


@dataclass
class Expected:
    size: int
    path: Path | None = None  # bytes are those of this host file ...
    data: bytes | None = None  # ... or these
    group: str = "tree"

    def read(self, offset: int, length: int) -> bytes:
        if self.data is not None:
            return self.data[offset : offset + length]
        assert self.path is not None
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read(max(0, min(length, self.size - offset)))

    def sha256(self, offset: int = 0, length: int | None = None) -> str:
        length = self.size - offset if length is None else length
        h = hashlib.sha256()
        pos, end = offset, min(offset + length, self.size)
        while pos < end:
            chunk = self.read(pos, min(8 * MiB, end - pos))
            h.update(chunk)
            pos += len(chunk)
        return h.hexdigest()


@dataclass
class Check:
    id: str
    path: str
    offset: int | None  # None: the whole file
    length: int
    group: str
    sha256: str
    nbytes: int  # bytes the range holds (less than length at the end of the file)


@dataclass
class Layout:
    root: Path
    dirs: set[str] = field(default_factory=lambda: {"."})
    files: dict[str, Expected] = field(default_factory=dict)
    hidden: list[str] = field(default_factory=list)  # presented paths that must not exist
    ranges: dict[str, list[tuple[int, int]]] = field(default_factory=dict)

    def add(self, rel: str, exp: Expected) -> None:
        self.files[rel] = exp
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            self.dirs.add("/".join(parts[:i]))

    def checks(self, groups: set[str] | None = None, paths: set[str] | None = None) -> list[Check]:
        """Content checks: whole files up to FULL_HASH_LIMIT, chosen ranges of bigger ones."""
        out: list[Check] = []
        for rel in sorted(self.files):
            exp = self.files[rel]
            if (groups and exp.group not in groups) or (paths and rel not in paths):
                continue
            if rel in self.ranges:
                for off, length in self.ranges[rel]:
                    sha = exp.sha256(off, length)
                    n = max(0, min(length, exp.size - off))
                    out.append(Check(f"c{len(out)}", rel, off, length, exp.group, sha, n))
            elif exp.size <= FULL_HASH_LIMIT:
                sha = exp.sha256()
                out.append(Check(f"c{len(out)}", rel, None, exp.size, exp.group, sha, exp.size))
        return out

    def materialize(self, dest: Path) -> Path:
        """Write the tree as recovery-fs must present it (read-only modes), for servers
        that know no recovery rules (nfs-ganesha). Sparse files stay sparse."""
        marker = dest.with_name(dest.name + ".complete")
        if marker.exists():
            return dest
        shutil.rmtree(dest, ignore_errors=True)
        for d in sorted(self.dirs):
            (dest / d).mkdir(parents=True, exist_ok=True)
        for rel, exp in self.files.items():
            target = dest / rel
            if exp.data is not None:
                target.write_bytes(exp.data)
            else:
                assert exp.path is not None
                _copy_sparse(exp.path, target)
            target.chmod(0o444)
        for d in sorted(self.dirs, reverse=True):
            (dest / d).chmod(0o555)
        marker.touch()
        return dest


def _copy_sparse(src: Path, dst: Path) -> None:
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        size = os.fstat(fi.fileno()).st_size
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fi.fileno(), pos, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fi.fileno(), start, os.SEEK_HOLE)
            fi.seek(start)
            fo.seek(start)
            left = end - start
            while left:
                chunk = fi.read(min(left, 8 * MiB))
                fo.write(chunk)
                left -= len(chunk)
            pos = end
        fo.truncate(size)


def _random(seed: str, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _write_random(path: Path, size: int, seed: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, MiB)
            f.write(rng.randbytes(n))
            left -= n


class _Builder:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.layout = Layout(root)

    def raw(self, rel: str, data: bytes) -> Path:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        return p

    def passthrough(self, rel: str, data: bytes, group: str = "tree") -> None:
        p = self.raw(rel, data)
        self.layout.add(rel, Expected(len(data), path=p, group=group))

    def link(self, rel: str, target: str, **extra) -> None:
        """A SmartMotion link file; the file itself is never presented."""
        self.raw(rel, json.dumps({"smartmotion": 1, "target": target, **extra}).encode())
        self.layout.hidden.append(rel)

    # -- tree/
    def tree(self) -> None:
        self.passthrough("tree/empty.txt", b"")
        self.passthrough("tree/one.txt", b"1")
        self.passthrough("tree/a/b/c/deep.txt", _random("deep", 4097))
        for n in (511, 4095, 4096, 4097, 65537, 131071, 131073, MiB - 1, MiB + 3, 3 * MiB + 17):
            self.passthrough(f"tree/sizes/s{n}.bin", _random(f"s{n}", n))
        self.passthrough("tree/names/with space.txt", b"space\n")
        self.passthrough("tree/names/ünïcödé.txt", "ünïcödé\n".encode())
        self.passthrough("tree/names/.hidden", b"dot\n")
        for i in range(200):
            self.passthrough(f"tree/many/f{i:03d}.txt", f"file {i}\n".encode() * (i % 7 + 1))
        self.passthrough("tree/vm/vm.vmx", b'displayName = "vm"\nmemsize = "1024"\n')
        self.passthrough("tree/vm/notes.json", b'{"smartmotion": 2, "target": "vm.vmx"}')
        self.passthrough("tree/vm/nolink.json", b'{"target": "vm.vmx"}')
        self.passthrough("tree/vm/broken.json", b'{"smartmotion": 1, "target": ')
        (self.root / "tree/emptydir").mkdir(parents=True)
        self.layout.dirs.add("tree/emptydir")

    # -- big/
    def big(self) -> None:
        for rel, size in ((STREAM, STREAM_SIZE), (RESTART, RESTART_SIZE)):
            _write_random(self.root / rel, size, rel)
            self.layout.add(rel, Expected(size, path=self.root / rel, group="big"))
        s = STREAM_SIZE
        self.layout.ranges[STREAM] = [
            (0, MiB),
            (MiB - 1, 2),
            (7 * MiB + 12345, 200 * KiB + 7),
            (100 * MiB - 3, 64 * KiB),
            (200 * MiB + 1, 3 * MiB),
            (s - 1000, 1000),
            (s - 500, 1000),  # crosses the end: 500 bytes
            (s + 10, 100),  # past the end: nothing
        ]
        rng = random.Random("stream ranges")
        for _ in range(8):
            length = rng.randrange(1, 300 * KiB)
            self.layout.ranges[STREAM].append((rng.randrange(0, s - length), length))
        # A sparse file over 4 GiB with distinct data on both sides of 4 GiB.
        huge = self.root / HUGE
        regions = [
            (0, 64 * KiB),
            (4 * GiB - 96 * KiB, 192 * KiB),  # across the 4 GiB boundary
            (4 * GiB + 512 * MiB + 777, 300 * KiB),
            (HUGE_SIZE - 100 * KiB, 100 * KiB),
        ]
        with open(huge, "wb") as f:
            for off, length in regions:
                f.seek(off)
                f.write(_random(f"huge {off}", length))
            f.truncate(HUGE_SIZE)
        self.layout.add(HUGE, Expected(HUGE_SIZE, path=huge, group="large4g"))
        self.layout.ranges[HUGE] = [
            (0, 64 * KiB),
            (2 * GiB, MiB),  # hole below 4 GiB: zeros
            (4 * GiB - 64 * KiB, 128 * KiB),  # data across 4 GiB
            (4 * GiB, 64 * KiB),
            (4 * GiB + 12345678, 4096),  # hole past 4 GiB
            (4 * GiB + 512 * MiB, MiB),  # hole into data past 4 GiB
            (4 * GiB + 512 * MiB + 777 + 100 * KiB, 100 * KiB + 1),
            (HUGE_SIZE - 100 * KiB - 1000, 100 * KiB + 1000),  # to the end
            (HUGE_SIZE - 10, 1000),  # across the end
        ]

    # -- backups/
    def backups(self) -> None:
        b = "backups"
        day = [f"{b}/2026-11-{d}T0100" for d in (20, 21, 22, 23, 24)]
        for d in day[:4]:
            self.passthrough(
                f"{d}/web01/web01.vmx", f'displayName = "web01 {d}"\n'.encode(), "chain"
            )
            self.passthrough(f"{d}/web01/web01.vmdk", _descriptor("web01"), "chain")

        # v0: a full image.
        v0 = _random("web01 v0", 8 * MiB)
        self.passthrough(f"{day[0]}/web01/web01-flat.vmdk", v0, "chain")

        # v1: grown to 10 MiB; unaligned, adjacent, large and tail extents.
        r = random.Random("web01 v1")
        c1 = [
            Change(0, 4096, r.randbytes(4096)),
            Change(MiB + 1, 3, r.randbytes(3)),
            Change(2 * MiB, 64 * KiB),
            Change(2 * MiB + 64 * KiB, 4096, r.randbytes(4096)),
            Change(3 * MiB - 100, 2 * MiB + 200, r.randbytes(2 * MiB + 200)),
            Change(8 * MiB - 4096, 8192, r.randbytes(8192)),  # across the old end
            Change(9 * MiB + 512, 8192, r.randbytes(8192)),  # in the grown tail
        ]
        v1 = self.merged(
            f"{day[1]}/web01",
            "web01",
            v0,
            10 * MiB,
            c1,
            link=("web01-flat.vmdk.json", "../../2026-11-20T0100/web01/web01-flat.vmdk", {}),
            base_size=8 * MiB,
        )

        # v2: shrunk to an odd size, table first, data stored in reverse; the link
        # names the merged v1 from the storage root.
        r = random.Random("web01 v2")
        size2 = 9 * MiB + 4096 + 7
        c2 = [
            Change(0, 512),
            Change(5 * MiB, MiB, r.randbytes(MiB)),
            Change(6 * MiB + 3, 5, r.randbytes(5)),
            Change(size2 - 1000, 1000, r.randbytes(1000)),  # ends at disk_size
        ]
        v2 = self.merged(
            f"{day[2]}/web01",
            "web01",
            v1,
            size2,
            c2,
            link=("web01-flat.vmdk.json", f"/{day[1]}/web01/web01-flat.vmdk", {}),
            table_first=True,
            reverse_data=True,
        )

        # v3: no changes at all (an empty extent table); a link with "name" and an
        # unknown key.
        v3 = self.merged(
            f"{day[3]}/web01",
            "web01",
            v2,
            size2,
            [],
            link=(
                "disk.json",
                "../../2026-11-22T0100/web01/web01-flat.vmdk",
                {"name": "web01-flat.vmdk", "comment": "unknown keys are ignored"},
            ),
            base_size=size2,
        )
        assert v3 == v2

        # db01: a full image, a link to it, a link to that link (no pancbt).
        db = _random("db01", MiB + 333)
        self.passthrough(f"{day[0]}/db01/db01-flat.vmdk", db, "chain")
        self.passthrough(f"{day[0]}/db01/db01.vmdk", _descriptor("db01"), "chain")
        self.link(f"{day[1]}/db01/db01-flat.vmdk.json", "../../2026-11-20T0100/db01/db01-flat.vmdk")
        self.layout.add(f"{day[1]}/db01/db01-flat.vmdk", Expected(len(db), data=db, group="chain"))
        self.link(f"{day[2]}/db01/db01-flat.vmdk.json", "../../2026-11-21T0100/db01/db01-flat.vmdk")
        self.layout.add(f"{day[2]}/db01/db01-flat.vmdk", Expected(len(db), data=db, group="chain"))

        # A chain of 8 links, each to the one before.
        hops = f"{day[4]}/hops"
        self.passthrough(f"{hops}/hop0.img", _random("hop", 5000), "chain")
        for i in range(1, 9):
            self.link(f"{hops}/hop{i}.img.json", f"hop{i - 1}.img")
            self.layout.add(
                f"{hops}/hop{i}.img", Expected(5000, data=_random("hop", 5000), group="chain")
            )

        # Name clash: the real file wins over the link.
        self.passthrough(f"{day[4]}/clash/clash-flat.vmdk", _random("clash", 7000), "chain")
        self.link(f"{day[4]}/clash/clash-flat.vmdk.json", "../hops/hop0.img")
        self.broken(f"{day[4]}/broken")

    def merged(
        self,
        folder: str,
        name: str,
        base: bytes,
        disk_size: int,
        changes: list[Change],
        *,
        link: tuple[str, str, dict],
        base_size: int = 0,
        **kw,
    ) -> bytes:
        """Write a link to the base and a pancbt; the presented NAME-flat.vmdk is expected."""
        link_name, target, extra = link
        self.link(f"{folder}/{link_name}", target, **extra)
        data = pancbt.encode(disk_size, changes, base_size=base_size, base_hint=target, **kw)
        self.raw(f"{folder}/{name}-pancbt.vmdk", data)
        image = pancbt.naive_merge(base, data)
        assert image == pancbt.apply_changes(base, disk_size, changes), f"{folder}: self-check"
        self.layout.add(
            f"{folder}/{name}-flat.vmdk", Expected(len(image), data=image, group="chain")
        )
        self.layout.hidden.append(f"{folder}/{name}-pancbt.vmdk")
        return image

    def broken(self, d: str) -> None:
        """Entries that cannot be presented correctly: all hidden (rule 5), or shown as
        their real selves (rule 6)."""
        self.passthrough(f"{d}/okfile.txt", b"this folder is listed\n", "chain")
        hide = self.layout.hidden
        self.link(f"{d}/missing-flat.vmdk.json", "nothere-flat.vmdk")
        hide.append(f"{d}/missing-flat.vmdk")

        good = pancbt.encode(MiB, [Change(0, 10, b"0123456789")], base_size=MiB)
        self.raw(f"{d}/bad-flat.vmdk", _random("bad", MiB))
        bad = bytearray(good)
        bad[100] ^= 1  # header CRC no longer matches
        self.raw(f"{d}/bad-pancbt.vmdk", bytes(bad))
        hide += [f"{d}/bad-flat.vmdk", f"{d}/bad-pancbt.vmdk"]

        self.raw(f"{d}/size-flat.vmdk", _random("size", MiB - 1))  # base_size says 1 MiB
        self.raw(f"{d}/size-pancbt.vmdk", good)
        hide += [f"{d}/size-flat.vmdk", f"{d}/size-pancbt.vmdk"]

        # Overlapping extents with correct CRCs: only rule 4 is broken.
        overlap = [Change(0, 10, b"0123456789"), Change(5, 10, b"abcdefghij")]
        self.raw(f"{d}/overlap-flat.vmdk", _random("overlap", MiB))
        self.raw(f"{d}/overlap-pancbt.vmdk", pancbt.encode(MiB, overlap, base_size=MiB))
        hide += [f"{d}/overlap-flat.vmdk", f"{d}/overlap-pancbt.vmdk"]

        self.raw(f"{d}/orphan-pancbt.vmdk", good)
        hide += [f"{d}/orphan-pancbt.vmdk", f"{d}/orphan-flat.vmdk"]

        self.link(f"{d}/escape-flat.vmdk.json", "../../../../../../../../../../etc/hostname")
        self.link(f"{d}/absescape-flat.vmdk.json", "/../../../../etc/hostname")
        self.link(f"{d}/topancbt-flat.vmdk.json", "bad-pancbt.vmdk")
        self.link(f"{d}/tojson-flat.vmdk.json", "missing-flat.vmdk.json")
        self.link(f"{d}/loop-a.json", "loop-b")
        self.link(f"{d}/loop-b.json", "loop-a")
        for n in ("escape", "absescape", "topancbt", "tojson"):
            hide.append(f"{d}/{n}-flat.vmdk")
        hide += [f"{d}/loop-a", f"{d}/loop-b"]


def _descriptor(name: str) -> bytes:
    return (
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        f'createType="vmfs"\n\nRW 20971520 VMFS "{name}-flat.vmdk"\n'
    ).encode()


def build(root: Path) -> Layout:
    """Write the storage tree under `root` (which must not exist yet)."""
    root.mkdir(parents=True)
    b = _Builder(root)
    b.tree()
    b.big()
    b.backups()
    for d in sorted(b.layout.dirs):
        (root / d).mkdir(parents=True, exist_ok=True)
    return b.layout
