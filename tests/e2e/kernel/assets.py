"""The guest's kernel and base initramfs, prepared once and cached.

Everything lives under `.cache/kernel-guest/` of the repository (git-ignored):

    kernel/<package>_<version>/vmlinuz        the Debian kernel, never installed on the host
    kernel/<package>_<version>/modules/*.ko   only the modules the guest loads, uncompressed
    kernel/<package>_<version>/modules.json   their load order, resolved from .modinfo
    initramfs-<hash>.cpio.gz                  busybox-static, those modules and /init

The kernel is the one `linux-image-amd64` depends on (`apt-get download` and
`dpkg -x`, about 5 s). When apt cannot resolve it (no package lists, no
network) the newest complete cached kernel is used. The initramfs name hashes
all of its inputs, so a changed init, busybox or kernel makes a new one.

Run `python -m <this module>` to prepare the cache ahead of the tests.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import cpio

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
CACHE = REPO / ".cache" / "kernel-guest"
INIT = HERE / "sh" / "init.sh"
META_PACKAGE = "linux-image-amd64"
# What the guest needs; their dependencies are read from each module's .modinfo.
# nfsv3 must be loaded by hand: the guest has no modprobe for request_module().
WANTED_MODULES = ("virtio_pci", "virtio_net", "nfsv3")


class AssetError(RuntimeError):
    """A prerequisite of the kernel guest is missing or broken."""


@dataclass(frozen=True)
class Assets:
    kernel: Path
    initramfs: Path
    kernel_release: str
    package: str
    modules: tuple[str, ...]


def _run(cmd: list[str], timeout: float = 600, **kw) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            cmd, check=True, text=True, capture_output=True, timeout=timeout, **kw
        )
    except FileNotFoundError as e:
        raise AssetError(f"{cmd[0]} is not installed (see tools/apt-test.txt)") from e
    except subprocess.TimeoutExpired as e:
        raise AssetError(f"{' '.join(cmd)} took more than {timeout:.0f} s") from e
    except subprocess.CalledProcessError as e:
        raise AssetError(f"{' '.join(cmd)} failed ({e.returncode}): {e.stderr.strip()}") from e


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ---------------------------------------------------------------- the kernel


def _resolve_package() -> tuple[str, str] | None:
    """(package, version) of the kernel `linux-image-amd64` depends on, or None."""
    for attempt in range(2):
        try:
            deps = _run(["apt-cache", "depends", META_PACKAGE]).stdout
            m = re.search(r"Depends: (linux-image-\S+)", deps)
            if m:
                pkg = m.group(1)
                show = _run(["apt-cache", "show", "--no-all-versions", pkg]).stdout
                v = re.search(r"^Version: (\S+)", show, re.M)
                if v:
                    return pkg, v.group(1)
        except AssetError:
            pass
        if attempt == 0 and os.geteuid() == 0:
            # A fresh machine may have no package lists yet.
            subprocess.run(
                ["apt-get", "update", "-q"], capture_output=True, check=False, timeout=600
            )
    return None


def _kernel_dirs() -> list[Path]:
    root = CACHE / "kernel"
    if not root.is_dir():
        return []
    return sorted(
        (d for d in root.iterdir() if (d / "complete").exists()),
        key=lambda d: d.stat().st_mtime,
    )


def _module_files(tree: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for p in (tree / "lib" / "modules").glob("*/kernel/**/*.ko*"):
        name = p.name.split(".ko")[0].replace("-", "_")
        found[name] = p
    return found


def _read_module(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".ko"):
        return data
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if path.name.endswith(".ko.zst"):
        return _run_bytes(["zstd", "-dc"], data)
    raise AssetError(f"unknown module compression: {path.name}")


def _run_bytes(cmd: list[str], data: bytes) -> bytes:
    try:
        return subprocess.run(cmd, input=data, capture_output=True, check=True, timeout=60).stdout
    except (FileNotFoundError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        raise AssetError(f"{' '.join(cmd)} failed: {e}") from e


def _depends(ko: Path) -> list[str]:
    """The `depends=` entry of a module's .modinfo section, read with objcopy."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "modinfo"
        _run(["objcopy", "-O", "binary", "--only-section=.modinfo", str(ko), str(out)])
        for entry in out.read_bytes().split(b"\0"):
            if entry.startswith(b"depends="):
                return [d.replace("-", "_") for d in entry[8:].decode().split(",") if d]
    return []


def _load_order(
    modules: dict[str, Path],
    builtin: set[str],
    work: Path,
    wanted: tuple[str, ...] = WANTED_MODULES,
) -> list[str]:
    """Uncompress the wanted modules and their dependencies into `work`; return load order."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order or name in builtin:
            return
        if name in visiting:
            raise AssetError(f"module dependency loop at {name}")
        if name not in modules:
            raise AssetError(f"kernel module {name} not found in the kernel package")
        visiting.add(name)
        ko = work / f"{name}.ko"
        ko.write_bytes(_read_module(modules[name]))
        for dep in _depends(ko):
            visit(dep)
        visiting.discard(name)
        order.append(name)

    for name in wanted:
        visit(name)
    return order


def _fetch_kernel(pkg: str, version: str) -> Path:
    dest = CACHE / "kernel" / f"{pkg}_{version}"
    if (dest / "complete").exists():
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        tmpd = Path(tmp)
        os.chmod(tmpd, 0o755)
        _run(
            ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", f"{pkg}={version}"],
            cwd=tmpd,
        )
        debs = list(tmpd.glob("*.deb"))
        if len(debs) != 1:
            raise AssetError(f"apt-get download {pkg} gave {debs}")
        tree = tmpd / "tree"
        _run(["dpkg", "-x", str(debs[0]), str(tree)])
        vmlinuz = sorted((tree / "boot").glob("vmlinuz-*"))
        if len(vmlinuz) != 1:
            raise AssetError(f"{pkg}: expected one /boot/vmlinuz-*, found {vmlinuz}")
        release = vmlinuz[0].name.removeprefix("vmlinuz-")
        builtin_file = tree / "lib" / "modules" / release / "modules.builtin"
        builtin = {
            Path(line).name.split(".ko")[0].replace("-", "_")
            for line in builtin_file.read_text().split()
        }
        staged = tmpd / "out"
        (staged / "modules").mkdir(parents=True)
        order = _load_order(_module_files(tree), builtin, staged / "modules")
        for extra in set(p.stem for p in (staged / "modules").iterdir()) - set(order):
            (staged / "modules" / f"{extra}.ko").unlink()
        shutil.copyfile(vmlinuz[0], staged / "vmlinuz")
        (staged / "modules.json").write_text(
            json.dumps({"release": release, "package": pkg, "version": version, "order": order})
        )
        (staged / "complete").write_text("")
        dest.parent.mkdir(parents=True, exist_ok=True)
        staged.rename(dest)
    return dest


# ---------------------------------------------------------------- initramfs


def busybox_path() -> Path:
    """The statically linked busybox of Debian's busybox-static package."""
    try:
        files = _run(["dpkg-query", "-L", "busybox-static"]).stdout.split()
    except AssetError as e:
        raise AssetError("busybox-static is not installed (see tools/apt-test.txt)") from e
    for f in files:
        if f.endswith("/bin/busybox") and Path(f).is_file():
            return Path(f)
    raise AssetError("busybox-static installs no bin/busybox")


def _build_initramfs(kdir: Path, busybox: Path, order: list[str], dest: Path) -> None:
    a = cpio.Archive()
    for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "mnt", "etc"):
        a.directory(d)
    a.directory("tmp", 0o1777)
    a.directory("lib")
    a.directory("lib/modules")
    a.directory("e2e")
    a.char_device("dev/console", 5, 1)
    a.char_device("dev/null", 1, 3, 0o666)
    a.file("bin/busybox", busybox.read_bytes(), 0o755)
    a.symlink("bin/sh", "busybox")
    a.file("init", INIT.read_bytes(), 0o755)
    a.file("etc/modules.order", "".join(f"{m}\n" for m in order).encode())
    for m in order:
        a.file(f"lib/modules/{m}.ko", (kdir / "modules" / f"{m}.ko").read_bytes())
    tmp = dest.with_suffix(".tmp")
    tmp.write_bytes(gzip.compress(a.data(), compresslevel=6, mtime=0))
    tmp.rename(dest)


def prepare(*, offline_ok: bool = True) -> Assets:
    """Download and build whatever is not cached yet; return the paths to boot."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with _locked(CACHE / ".lock"):
        resolved = _resolve_package()
        if resolved:
            kdir = _fetch_kernel(*resolved)
            for old in _kernel_dirs():  # an older kernel, replaced in the archive
                if old != kdir:
                    shutil.rmtree(old, ignore_errors=True)
        else:
            cached = _kernel_dirs()
            if not (cached and offline_ok):
                raise AssetError(
                    f"cannot resolve {META_PACKAGE} with apt-cache and no kernel is cached "
                    f"in {CACHE}"
                )
            kdir = cached[-1]
        meta = json.loads((kdir / "modules.json").read_text())
        order = meta["order"]
        busybox = busybox_path()
        h = hashlib.sha256()
        for part in (INIT.read_bytes(), busybox.read_bytes(), kdir.name.encode(), str(order)):
            h.update(part if isinstance(part, bytes) else part.encode())
        initramfs = CACHE / f"initramfs-{h.hexdigest()[:16]}.cpio.gz"
        if not initramfs.exists():
            _build_initramfs(kdir, busybox, order, initramfs)
            for old in CACHE.glob("initramfs-*.cpio.gz"):
                if old != initramfs:
                    old.unlink()
        return Assets(
            kernel=kdir / "vmlinuz",
            initramfs=initramfs,
            kernel_release=meta["release"],
            package=f"{meta['package']}={meta['version']}",
            modules=tuple(order),
        )


def scenario_initrd(base: Path, files: dict[str, bytes], dest: Path) -> Path:
    """Write `dest`: the base initramfs followed by an archive of `files` (under /e2e)."""
    a = cpio.Archive()
    for name, data in sorted(files.items()):
        a.file(f"e2e/{name}", data, 0o755 if name.endswith(".sh") else 0o644)
    with open(dest, "wb") as out:
        base_data = base.read_bytes()
        out.write(base_data + b"\0" * (-len(base_data) % 512))
        out.write(a.data())
    return dest


def main() -> int:
    try:
        assets = prepare()
    except AssetError as e:
        print(f"kernel guest assets: {e}", file=sys.stderr)
        return 1
    print(f"kernel    {assets.kernel} ({assets.package}, {assets.kernel_release})")
    print(f"initramfs {assets.initramfs} ({assets.initramfs.stat().st_size} bytes)")
    print(f"modules   {' '.join(assets.modules)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
