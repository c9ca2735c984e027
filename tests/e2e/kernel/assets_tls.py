"""The TLS guest: Debian 13's kernel (6.12) and Debian 13's tlshd, cached once.

Design notes
------------
The Linux NFS client does RPC-with-TLS from kernel 6.5 on, with the TLS
handshake done in user space by ``tlshd`` (ktls-utils), which the kernel
calls through the ``handshake`` generic-netlink family.  Debian 12 has
neither, so this guest boots Debian 13 ("trixie") packages, fetched the way
``assets.py`` fetches Debian 12's kernel, but through a *private* apt
configuration: its own sources.list, lists and cache under
``.cache/kernel-guest-tls/apt/`` (``apt-get -o Dir::Etc::sourcelist=...
update`` and ``apt-get download``).  The host's apt configuration is never
read for sources nor written, and nothing is installed on the host.

    apt/                                  the private apt state (sources, lists, cache)
    kernel/<package>_<version>/vmlinuz    the trixie kernel, never installed
                       modules/*.ko       virtio, nfsv3, tls and their .modinfo dependencies
                       modules.json       load order, release, kernel config checks
    tlshd/<version>/root/                 tlshd, its shared libraries resolved from
                                          DT_NEEDED (readelf -d) in the trixie packages,
                                          and the trixie dynamic loader
    initramfs-<hash>.cpio.gz              assets.py's initramfs (busybox, modules, /init)
                                          followed by a second archive holding tlshd

The kernel's crypto for kTLS (AES-GCM, ChaCha20-Poly1305) is modules too,
loaded by hand.  What the kernel must have built in, checked in its ``/boot/config-*``:
``CONFIG_NET_HANDSHAKE=y`` (the netlink upcall; not a module) and
``CONFIG_SUNRPC``'s TLS support (``CONFIG_TLS`` as a module is loaded by
hand, as ``nfsv3`` is: the guest has no modprobe).  tlshd's libraries come
from the packages of its dependency closure (``apt-cache depends
--recurse``); only the files its ELF ``DT_NEEDED`` entries name, recursively,
go into the initramfs.

Run ``python -m tests.e2e.kernel.assets_tls`` to prepare the cache.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import assets, cpio
from .assets import AssetError, Assets, _locked, _run

CACHE = assets.REPO / ".cache" / "kernel-guest-tls"
APT = CACHE / "apt"
SUITE = "trixie"
MIRROR = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
META_PACKAGE = "linux-image-amd64"
TLSHD_PACKAGE = "ktls-utils"
# tls: the kernel's TLS records once tlshd hands the socket back.  The ciphers kTLS
# allocates by name ("gcm(aes)", "rfc7539(chacha20,poly1305)") are modules in Debian's
# kernel and are request_module()d, which this guest cannot do: they are loaded by hand
# (without them tlshd logs "The kernel does not support the requested algorithm").
WANTED_MODULES = (
    "virtio_pci", "virtio_net", "nfsv3", "tls",
    "gcm", "ghash_generic", "chacha20poly1305", "chacha_generic", "poly1305_generic",
)  # fmt: skip
REQUIRED_CONFIG = {"CONFIG_NET_HANDSHAKE": "y", "CONFIG_SUNRPC": "m", "CONFIG_TLS": "m"}
LISTS_MAX_AGE = 24 * 3600  # seconds before the private package lists are fetched again
LIB_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "usr/lib64")


# ---------------------------------------------------------------- the private apt


def apt_options() -> list[str]:
    """`-o` options that make apt use only the private sources, lists and cache."""
    etc = APT / "etc"
    return [
        f"-oDir::Etc::sourcelist={etc / 'sources.list'}",
        f"-oDir::Etc::sourceparts={etc / 'sources.list.d'}",
        f"-oDir::Etc::preferences={etc / 'preferences'}",
        f"-oDir::Etc::preferencesparts={etc / 'preferences.d'}",
        f"-oDir::State::Lists={APT / 'lists'}",
        f"-oDir::Cache={APT / 'cache'}",
        "-oDir::State::status=/dev/null",
        "-oAPT::Architecture=amd64",
        "-oAPT::Architectures::=amd64",
        "-oAcquire::Languages=none",
        "-oAPT::Sandbox::User=root",
    ]


def _apt_setup() -> None:
    etc = APT / "etc"
    for d in (etc / "sources.list.d", etc / "preferences.d", APT / "lists" / "partial"):
        d.mkdir(parents=True, exist_ok=True)
    (APT / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    (etc / "sources.list").write_text(f"deb [signed-by={KEYRING}] {MIRROR} {SUITE} main\n")


def _lists_fresh() -> bool:
    release = list((APT / "lists").glob(f"*_dists_{SUITE}_InRelease"))
    return bool(release) and (os.path.getmtime(release[0]) > time.time() - LISTS_MAX_AGE)


def apt_update() -> bool:
    """Fetch the trixie package lists into the private state; False if that failed."""
    _apt_setup()
    if _lists_fresh():
        return True
    try:
        _run(["apt-get", *apt_options(), "-q", "update"], timeout=600)
    except AssetError:
        return bool(list((APT / "lists").glob("*_Packages")))
    return True


def apt_cache(*args: str) -> str:
    return _run(["apt-cache", *apt_options(), *args]).stdout


def version_of(pkg: str) -> str:
    m = re.search(r"^Version: (\S+)", apt_cache("show", "--no-all-versions", pkg), re.M)
    if not m:
        raise AssetError(f"{SUITE}: no version of {pkg}")
    return m.group(1)


def download(pkgs: list[str], dest: Path) -> list[Path]:
    """`apt-get download` of `pkgs` (pinned or not) into `dest`; the .deb files."""
    dest.mkdir(parents=True, exist_ok=True)
    os.chmod(dest, 0o755)
    _run(["apt-get", *apt_options(), "-q", "download", *pkgs], cwd=dest, timeout=900)
    return sorted(dest.glob("*.deb"))


def depends_closure(pkg: str) -> list[str]:
    """`pkg` and every package its Depends/PreDepends reach (no virtual packages)."""
    out = apt_cache(
        "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
        "--no-breaks", "--no-replaces", "--no-enhances", pkg,
    )  # fmt: skip
    names = {line.strip() for line in out.splitlines() if line and not line[0].isspace()}
    return sorted(n for n in names if not n.startswith("<"))


# ---------------------------------------------------------------- the kernel


def _kernel_config(tree: Path, release: str) -> dict[str, str]:
    config = tree / "boot" / f"config-{release}"
    found = {}
    for line in config.read_text().splitlines():
        m = re.match(r"(CONFIG_\w+)=(\S+)", line)
        if m:
            found[m.group(1)] = m.group(2)
    return found


def _fetch_kernel(pkg: str, version: str) -> Path:
    dest = CACHE / "kernel" / f"{pkg}_{version}"
    if (dest / "complete").exists():
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        tmpd = Path(tmp)
        debs = download([f"{pkg}={version}"], tmpd / "debs")
        if len(debs) != 1:
            raise AssetError(f"apt-get download {pkg} gave {debs}")
        tree = tmpd / "tree"
        _run(["dpkg", "-x", str(debs[0]), str(tree)])
        vmlinuz = sorted((tree / "boot").glob("vmlinuz-*"))
        if len(vmlinuz) != 1:
            raise AssetError(f"{pkg}: expected one /boot/vmlinuz-*, found {vmlinuz}")
        release = vmlinuz[0].name.removeprefix("vmlinuz-")
        config = _kernel_config(tree, release)
        wrong = {k: config.get(k) for k, v in REQUIRED_CONFIG.items() if config.get(k) != v}
        if wrong:
            raise AssetError(f"{pkg}: kernel configuration {wrong}, wanted {REQUIRED_CONFIG}")
        # trixie's packages have merged /usr: modules are under /usr/lib/modules.
        root = tree / "usr" if (tree / "usr" / "lib" / "modules").is_dir() else tree
        builtin_file = root / "lib" / "modules" / release / "modules.builtin"
        builtin = {
            Path(line).name.split(".ko")[0].replace("-", "_")
            for line in builtin_file.read_text().split()
        }
        staged = tmpd / "out"
        (staged / "modules").mkdir(parents=True)
        order = assets._load_order(
            assets._module_files(root), builtin, staged / "modules", WANTED_MODULES
        )
        shutil.copyfile(vmlinuz[0], staged / "vmlinuz")
        meta = {
            "release": release,
            "package": pkg,
            "version": version,
            "order": order,
            "config": {k: config.get(k) for k in REQUIRED_CONFIG},
        }
        (staged / "modules.json").write_text(json.dumps(meta))
        (staged / "complete").write_text("")
        dest.parent.mkdir(parents=True, exist_ok=True)
        staged.rename(dest)
    return dest


# ---------------------------------------------------------------- tlshd and its libraries


def _elf_needed(path: Path) -> list[str]:
    out = _run(["readelf", "-d", "-W", str(path)]).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def _elf_interpreter(path: Path) -> str:
    out = _run(["readelf", "-l", "-W", str(path)]).stdout
    m = re.search(r"Requesting program interpreter: ([^\]]+)\]", out)
    if not m:
        raise AssetError(f"{path} names no program interpreter")
    return m.group(1)


def in_tree(tree: Path, guest_path: str) -> Path:
    """The file `guest_path` names in the unpacked `tree`, symbolic links followed inside
    the tree (an absolute link must not reach the host's own files), merged /usr too."""
    parts = [p for p in guest_path.split("/") if p]
    for _ in range(40):
        at = tree
        for i, part in enumerate(parts):
            at = at / part
            if at.is_symlink():
                target = os.readlink(at)
                base = [] if target.startswith("/") else parts[:i]
                parts = [*base, *[p for p in target.split("/") if p], *parts[i + 1 :]]
                break
        else:
            if at.exists():
                return at
            if parts[:1] != ["usr"]:
                parts = ["usr", *parts]
                continue
            raise AssetError(f"{guest_path} is not in the unpacked packages")
        parts = [p for p in os.path.normpath("/" + "/".join(parts)).split("/") if p]
    raise AssetError(f"{guest_path}: too many symbolic links")


def _find_library(tree: Path, soname: str) -> Path:
    for d in LIB_DIRS:
        try:
            return in_tree(tree, f"/{d}/{soname}")
        except AssetError:
            pass
    raise AssetError(f"{soname} is not in the {SUITE} packages of {TLSHD_PACKAGE}'s closure")


def collect_binary(tree: Path, binary: Path) -> dict[str, Path]:
    """Guest path -> file in `tree` for `binary`, its loader and every DT_NEEDED, recursively."""
    files = {"/" + str(binary.relative_to(tree)): binary}
    interp = _elf_interpreter(binary)
    files[interp] = in_tree(tree, interp)
    todo = list(_elf_needed(binary))
    seen: set[str] = set()
    while todo:
        soname = todo.pop()
        if soname in seen:
            continue
        seen.add(soname)
        lib = _find_library(tree, soname)
        files[f"/lib/x86_64-linux-gnu/{soname}"] = lib
        todo.extend(_elf_needed(lib))
    return files


def _fetch_tlshd(version: str) -> Path:
    dest = CACHE / "tlshd" / version
    if (dest / "complete").exists():
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        tmpd = Path(tmp)
        pkgs = depends_closure(TLSHD_PACKAGE)
        debs = download(pkgs, tmpd / "debs")
        tree = tmpd / "tree"
        for deb in debs:
            _run(["dpkg", "-x", str(deb), str(tree)])
        binary = tree / "usr" / "sbin" / "tlshd"
        if not binary.exists():
            raise AssetError(f"{TLSHD_PACKAGE} {version} has no /usr/sbin/tlshd")
        staged = tmpd / "out"
        files = collect_binary(tree, binary)
        for guest_path, src in files.items():
            target = staged / "root" / guest_path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
            os.chmod(target, 0o755)
        (staged / "files.json").write_text(
            json.dumps({"version": version, "packages": pkgs, "files": sorted(files)})
        )
        (staged / "complete").write_text("")
        dest.parent.mkdir(parents=True, exist_ok=True)
        staged.rename(dest)
    return dest


# ---------------------------------------------------------------- initramfs


@dataclass(frozen=True)
class TlsAssets:
    """The assets to boot (as ``assets.Assets``) and what went in."""

    boot: Assets
    tlshd_version: str
    tlshd_files: tuple[str, ...]


def _tlshd_archive(tlshd: Path) -> bytes:
    a = cpio.Archive()
    root = tlshd / "root"
    dirs = sorted({p.parent.relative_to(root) for p in root.rglob("*") if p.is_file()})
    made: set[str] = set()
    for d in dirs:
        parts = d.parts
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if sub not in made and sub not in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "lib"):
                a.directory(sub)
            made.add(sub)
    a.directory("etc/tlshd")
    for p in sorted(root.rglob("*")):
        if p.is_file():
            a.file(str(p.relative_to(root)), p.read_bytes(), 0o755)
    return gzip.compress(a.data(), compresslevel=6, mtime=0)


def prepare() -> TlsAssets:
    """Download and build whatever is not cached yet; return what to boot."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with _locked(CACHE / ".lock"):
        online = apt_update()
        if online:
            deps = apt_cache("depends", META_PACKAGE)
            m = re.search(r"Depends: (linux-image-\S+)", deps)
            if not m:
                raise AssetError(f"{SUITE}: {META_PACKAGE} depends on no kernel")
            kdir = _fetch_kernel(m.group(1), version_of(m.group(1)))
            tdir = _fetch_tlshd(version_of(TLSHD_PACKAGE))
        else:
            kernels = sorted(CACHE.glob("kernel/*/complete"))
            tools = sorted(CACHE.glob("tlshd/*/complete"))
            if not (kernels and tools):
                raise AssetError(f"no {SUITE} package lists and nothing cached in {CACHE}")
            kdir, tdir = kernels[-1].parent, tools[-1].parent
        meta = json.loads((kdir / "modules.json").read_text())
        tmeta = json.loads((tdir / "files.json").read_text())
        busybox = assets.busybox_path()
        h = hashlib.sha256()
        for part in (
            assets.INIT.read_bytes(),
            busybox.read_bytes(),
            kdir.name.encode(),
            str(meta["order"]).encode(),
            tdir.name.encode(),
            Path(__file__).read_bytes(),
        ):
            h.update(part)
        initramfs = CACHE / f"initramfs-{h.hexdigest()[:16]}.cpio.gz"
        if not initramfs.exists():
            base = initramfs.with_suffix(".base")
            assets._build_initramfs(kdir, busybox, meta["order"], base)
            data = base.read_bytes()
            base.unlink()
            tmp = initramfs.with_suffix(".tmp")
            tmp.write_bytes(data + _tlshd_archive(tdir))
            tmp.rename(initramfs)
            for old in CACHE.glob("initramfs-*.cpio.gz"):
                if old != initramfs:
                    old.unlink()
        boot = Assets(
            kernel=kdir / "vmlinuz",
            initramfs=initramfs,
            kernel_release=meta["release"],
            package=f"{meta['package']}={meta['version']}",
            modules=tuple(meta["order"]),
        )
        return TlsAssets(boot, tmeta["version"], tuple(tmeta["files"]))


def main() -> int:
    try:
        a = prepare()
    except AssetError as e:
        print(f"TLS guest assets: {e}", file=sys.stderr)
        return 1
    b = a.boot
    print(
        f"kernel    {b.kernel} ({b.package}, {b.kernel_release}, {b.kernel.stat().st_size} bytes)"
    )
    print(f"initramfs {b.initramfs} ({b.initramfs.stat().st_size} bytes)")
    print(f"modules   {' '.join(b.modules)}")
    print(f"tlshd     {a.tlshd_version}: {' '.join(a.tlshd_files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
