"""A real hypervisor boots a VM from an instant-recovery session (issue 10).

QEMU, with Debian's libnfs block driver (``qemu-block-extra``), boots a
small Linux VM whose root file system is the backed-up ``vm1-flat.vmdk`` of
day 2 (day 1's full disk behind a SmartMotion link, day 2's changed blocks
in a pancbt), opened read-write over NFS from ``/recover/instant/ir1``:

- the VM sees day 2's file (the merged image), writes files, syncs and
  reboots; a second QEMU on the same session finds them; the server is
  SIGKILLed and restarted while the VM's writes are in flight;
- ``instant export`` of the session gives an image that passes ``e2fsck``
  and holds the written file;
- after ``instant stop ir1`` a new session ``ir2`` of the same folder is the
  backup again (day 2's file, not the written ones);
- the storage tree is byte-identical before and after.

The pieces are in ``tests/e2e/hypervisor/`` (disk.py: the images and the
storage tree, built without mounting; assets.py: the kernel and initramfs;
runner.py: the server, the sessions and the boots in a private network
namespace, with NFS on 2049 and a portmapper on 111, which QEMU's driver
needs). Logs of the last run: ``.cache/hypervisor-guest/last-run/``.
About 25-40 s on 2 shared cores with TCG.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from .hypervisor import assets, disk, runner
from .kernel import guest
from .kernel.instant_scenario import tree_digest
from .support.prereq import require

TOOLS = ("qemu-system-x86_64", "unshare", "ip", "mke2fs", "debugfs", "e2fsck", "nfs-ls", "nfs-cat")
WRITTEN = ("/data/written.txt", "/data/written.bin")
WRITTEN_BIN_SIZE = 16 << 20  # sh/vm-init.sh: dd bs=64k count=256 conv=fsync


@dataclass
class Run:
    backups: disk.Backups
    outcome: runner.Outcome
    before: str
    after: str
    work: Path

    def context(self) -> str:
        o = self.outcome
        parts = [f"work: {self.work} (kept in {assets.CACHE / 'last-run'})"]
        if o.error:
            parts.append(f"runner error: {o.error}")
        parts.append("events:\n" + "\n".join(f"  {t:7.2f}s {e}" for t, e in o.events))
        for b in o.boots:
            parts.append(f"boot {b.step} ({b.session}): rc={b.qemu_rc} timed_out={b.timed_out}")
            parts += [f"  {ln}" for ln in b.lines]
            if not b.values("END"):
                parts.append("  console tail:\n" + b.console_tail)
        parts.append(f"rpc errors: {o.rpc.get('errors')}")
        parts.append("server log:\n" + o.server_log)
        return "\n".join(parts)

    def boot(self, step: str) -> runner.Boot:
        b = self.outcome.boot(step)
        assert b is not None and b.values("END"), f"boot {step} did not finish\n{self.context()}"
        return b


def _files(b: runner.Boot) -> dict[str, str]:
    """name -> 'sha256 size' or 'absent', as the VM reported them."""
    return {name: rest for name, _, rest in (v.partition(" ") for v in b.values("FILE"))}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _keep_logs(work: Path) -> None:
    dest = assets.CACHE / "last-run"
    shutil.rmtree(dest, ignore_errors=True)
    for p in work.rglob("*"):
        if p.is_file() and p.suffix in (".log", ".json", ".cmd", ".out"):
            target = dest / p.relative_to(work)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, target)


@pytest.fixture(scope="module")
def hv_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    require(os.geteuid() == 0, "root (unshare --net --mount --pid)")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    require(not missing, f"commands {missing} (tools/apt-test.txt)")
    nfs_driver = list(Path("/usr/lib").glob("*/qemu/block-nfs.so"))
    require(bool(nfs_driver), "QEMU's NFS block driver (qemu-block-extra)")
    try:
        a = assets.prepare()
    except assets.AssetError as e:
        require(False, str(e))
        raise
    work = tmp_path_factory.mktemp("hypervisor")
    backups = disk.build_backups(work / "disk", a.busybox)
    before = tree_digest(backups.storage)
    scale = float(os.environ.get("KERNEL_E2E_TIMEOUT_SCALE", "1"))
    spec = runner.Spec(
        kernel=str(a.kernel),
        initramfs=str(a.initramfs),
        storage=str(backups.storage),
        folder=backups.day2_folder,
        work=str(work / "run"),
        accel=guest.choose_accel(),
        boot_timeout=60 * scale,
    )
    outcome = runner.run(spec, timeout=240 * scale)
    _keep_logs(work)
    return Run(backups, outcome, before, tree_digest(backups.storage), work)


@pytest.mark.e2e
@pytest.mark.slow
def test_vm_boots_from_the_merged_day2_disk(hv_run: Run) -> None:
    o = hv_run.outcome
    assert o.error is None, hv_run.context()
    day2 = _sha(hv_run.backups.day2_image.read_bytes())
    assert o.disk_sha.get("ir1") == day2, (
        "the session's disk is not day 2's image\n" + hv_run.context()
    )
    b = hv_run.boot("write")
    root = b.values("ROOT")
    assert root and root[0].startswith("/dev/vda / ext4 rw"), f"root: {root}\n{hv_run.context()}"
    files = _files(b)
    assert files["/etc/day1.txt"] == f"{_sha(disk.DAY1_TEXT.encode())} {len(disk.DAY1_TEXT)}"
    assert files["/etc/day2.txt"] == f"{_sha(disk.DAY2_TEXT.encode())} {len(disk.DAY2_TEXT)}", (
        hv_run.context()
    )
    assert all(files[f] == "absent" for f in WRITTEN), hv_run.context()
    assert len(b.values("WROTE")) == 2, hv_run.context()
    assert b.qemu_rc == 0, hv_run.context()


@pytest.mark.e2e
@pytest.mark.slow
def test_written_files_survive_a_reboot(hv_run: Run) -> None:
    wrote = dict(v.split(" ") for v in hv_run.boot("write").values("WROTE"))
    b = hv_run.boot("verify")
    files = _files(b)
    for name in WRITTEN:
        assert files[name].split(" ")[0] == wrote[name], f"{name}\n{hv_run.context()}"
    assert files["/data/written.bin"].split(" ")[1] == str(WRITTEN_BIN_SIZE)
    assert "written written by the VM booted from session ir1" in b.values("TEXT")
    # The guest's writes reached the server as WRITEs, its syncs as COMMITs (not a
    # QEMU-side cache or snapshot).
    counts = hv_run.outcome.rpc.get("counts", {})
    assert counts.get("NFS WRITE", 0) >= 1 and counts.get("NFS COMMIT", 0) >= 1, counts


@pytest.mark.e2e
@pytest.mark.slow
def test_server_killed_mid_write_loses_nothing(hv_run: Run) -> None:
    """The server SIGKILLed (the supervisor and its workers) while the VM's dd has
    a WRITE in flight, then started again: QEMU's libnfs reconnects and sends its
    WRITEs again; the written file reads back whole after the reboot (above)."""
    events = hv_run.outcome.event_texts()
    kill = next((e for e in events if e.startswith("server kill on WRITING")), "")
    assert "with WRITE in flight" in kill, hv_run.context()
    order = [e for e in events if e.startswith(("server started again", "boot write ended"))]
    assert order and order[0] == "server started again", hv_run.context()
    rpc = hv_run.outcome.rpc
    again = rpc.get("retransmitted", [])
    cut = kill.split("xid ", 1)[1].split(", ")
    for xid in cut:  # each WRITE the kill cut was sent again and answered
        assert any(f"xid={xid} " in c and " WRITE(" in c for c in again), (xid, again)
    assert all("-> NFS3_OK" in c for c in again), again
    lost = [c for c in rpc.get("unanswered", []) if " WRITE(" in c or " COMMIT(" in c]
    assert not lost, f"calls never answered: {lost}"
    hv_run.boot("verify")


@pytest.mark.e2e
@pytest.mark.slow
def test_exported_session_is_a_clean_file_system_with_the_writes(hv_run: Run) -> None:
    hv_run.boot("verify")
    image = hv_run.work / "run" / "exported" / disk.VM / f"{disk.VM}-flat.vmdk"
    assert image.is_file(), hv_run.context()
    fsck = subprocess.run(
        ["e2fsck", "-fn", str(image)], capture_output=True, text=True, check=False
    )
    assert fsck.returncode == 0, f"e2fsck -fn: {fsck.stdout}{fsck.stderr}"
    cat = subprocess.run(
        ["debugfs", "-R", "cat /data/written.txt", str(image)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert cat.stdout == "written by the VM booted from session ir1\n", cat.stderr


@pytest.mark.e2e
@pytest.mark.slow
def test_a_new_session_is_the_backup_again(hv_run: Run) -> None:
    o = hv_run.outcome
    stopped = [e for e in o.event_texts() if e.startswith("ir1 gone after stop")]
    assert stopped and stopped[0].startswith("ir1 gone after stop: True"), hv_run.context()
    day2 = _sha(hv_run.backups.day2_image.read_bytes())
    assert o.disk_sha.get("ir2") == day2, "ir2's disk is not day 2's image\n" + hv_run.context()
    b = hv_run.boot("fresh")
    files = _files(b)
    assert all(files[f] == "absent" for f in WRITTEN), hv_run.context()
    assert files["/etc/day2.txt"] == f"{_sha(disk.DAY2_TEXT.encode())} {len(disk.DAY2_TEXT)}"
    assert b.qemu_rc == 0, hv_run.context()


@pytest.mark.e2e
@pytest.mark.slow
def test_no_error_replies_and_storage_untouched(hv_run: Run) -> None:
    # The one error expected: nfs-ls's MNT of the stopped session ir1 (MNT3ERR_ACCES,
    # as mountd answers a path with no export entry for this host: a session that
    # does not exist and one the host may not mount are answered alike).
    stopped = "MNT(/recover/instant/ir1/vm1/) -> MNT3ERR 13 "
    errors = [e for e in hv_run.outcome.rpc.get("errors", []) if stopped not in e]
    assert not errors, hv_run.context()
    assert hv_run.before == hv_run.after, "the storage tree changed\n" + hv_run.context()
