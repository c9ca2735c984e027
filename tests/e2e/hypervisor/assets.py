"""The hypervisor guest's kernel and initramfs: the kernel-client guest's kernel, block modules.

The VM boots the same Debian kernel as the kernel-client guest
(``tests/e2e/kernel/assets.py``), but needs other modules: ``virtio_blk`` for
its disk and ``ext4`` (with ``crc32c_generic``: TCG's default CPU has no
SSE 4.2, and the kernel cannot ask for the module itself) for the root file
system on it. Those are not in the kernel-client cache, so the very same
package version is downloaded once more (``apt-get download``, ~4 s) and
only these modules are kept, resolved from their ``.modinfo``:

    .cache/hypervisor-guest/<package>_<version>/modules/*.ko, modules.json
    .cache/hypervisor-guest/initramfs-<hash>.cpio.gz

The initramfs is the kernel-client guest's (busybox-static, the modules in
load order) with ``sh/initramfs-init.sh`` as ``/e2e/hv-init.sh``, booted
with ``rdinit=`` that; its one job is to find ``/dev/vda`` and
``switch_root`` to it: the root file system is the disk served over NFS,
never the initramfs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..kernel import assets as kernel_assets
from ..kernel.assets import AssetError

HERE = Path(__file__).resolve().parent
CACHE = kernel_assets.REPO / ".cache" / "hypervisor-guest"
INIT = HERE / "sh" / "initramfs-init.sh"
RDINIT = Path("/e2e/hv-init.sh")  # where INIT is in the initramfs: the kernel's rdinit=
WANTED_MODULES = ("virtio_pci", "virtio_blk", "crc32c_generic", "ext4")


@dataclass(frozen=True)
class Assets:
    kernel: Path
    initramfs: Path
    busybox: Path
    package: str
    modules: tuple[str, ...]


def _fetch_modules(package: str) -> Path:
    """The wanted modules of ``package`` (``name=version``), cached; the cache folder."""
    dest = CACHE / package.replace("=", "_")
    if (dest / "complete").exists():
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        tmpd = Path(tmp)
        tmpd.chmod(0o755)  # apt's sandbox user writes here
        kernel_assets._run(
            ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", package], cwd=tmpd
        )
        debs = list(tmpd.glob("*.deb"))
        if len(debs) != 1:
            raise AssetError(f"apt-get download {package} gave {debs}")
        tree = tmpd / "tree"
        kernel_assets._run(["dpkg", "-x", str(debs[0]), str(tree)])
        builtin: set[str] = set()
        for f in (tree / "lib" / "modules").glob("*/modules.builtin"):
            builtin |= {
                Path(x).name.split(".ko")[0].replace("-", "_") for x in f.read_text().split()
            }
        staged = tmpd / "out"
        (staged / "modules").mkdir(parents=True)
        order = kernel_assets._load_order(
            kernel_assets._module_files(tree), builtin, staged / "modules", WANTED_MODULES
        )
        (staged / "modules.json").write_text(json.dumps({"package": package, "order": order}))
        (staged / "complete").write_text("")
        staged.rename(dest)
    for old in CACHE.iterdir():  # modules of a kernel replaced in the archive
        if old.is_dir() and old != dest and (old / "complete").exists():
            shutil.rmtree(old, ignore_errors=True)
    return dest


def _build_initramfs(busybox: Path, mdir: Path, order: list[str], dest: Path) -> None:
    """The kernel-client guest's initramfs layout (busybox, modules in load order), these
    modules, and ``/e2e/hv-init.sh``: the kernel runs it (``rdinit=``), not that /init."""
    base = dest.with_suffix(".base")
    kernel_assets._build_initramfs(mdir.parent, busybox, order, base)
    kernel_assets.scenario_initrd(base, {RDINIT.name: INIT.read_bytes()}, dest)
    base.unlink()


def prepare() -> Assets:
    """Download and build what is not cached yet; the paths to boot the VM with."""
    base = kernel_assets.prepare()
    with kernel_assets._locked(CACHE / ".lock"):
        mdir = _fetch_modules(base.package) / "modules"
        order = json.loads((mdir.parent / "modules.json").read_text())["order"]
        busybox = kernel_assets.busybox_path()
        h = hashlib.sha256()
        for part in (INIT.read_bytes(), busybox.read_bytes(), base.package.encode()):
            h.update(part)
        h.update(" ".join(order).encode())
        initramfs = CACHE / f"initramfs-{h.hexdigest()[:16]}.cpio.gz"
        if not initramfs.exists():
            _build_initramfs(busybox, mdir, order, initramfs)
            for old in CACHE.glob("initramfs-*.cpio.gz"):
                if old != initramfs:
                    old.unlink()
    return Assets(
        kernel=base.kernel,
        initramfs=initramfs,
        busybox=busybox,
        package=base.package,
        modules=tuple(order),
    )
