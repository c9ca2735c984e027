"""Fixtures of the kernel-client tests (tests/e2e/test_kernel_client.py).

`kernel_env` prepares, once per session, the guest's kernel and initramfs
(cached in .cache/kernel-guest/), the storage tree, and which server to run:
`KERNEL_E2E_SERVER=recovery-fs` (the default) or `ganesha` (the reference,
to check the harness itself). A missing prerequisite skips the tests, except
under CI=true, where it fails them.

The measured numbers (throughput, files and bytes compared, time per
scenario) are printed at the end of the session and kept in
.cache/kernel-guest/results.json.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .kernel import assets, scenarios, servers, storage

KERNEL_REPORT: list[str] = []


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _need(ok: object, why: str) -> None:
    if ok:
        return
    if _in_ci():
        pytest.fail(f"kernel-client prerequisite missing under CI=true: {why}", pytrace=False)
    pytest.skip(f"kernel-client prerequisite missing: {why}")


def _recovery_fs_serves() -> str | None:
    """None when `python -m nfsd.cli serve --help` works, else why not."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(assets.REPO), env.get("PYTHONPATH")]))
    try:
        p = subprocess.run(
            [sys.executable, "-m", "nfsd.cli", "serve", "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=assets.REPO,
            env=env,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    if p.returncode != 0 or "--no-portmap" not in p.stdout:
        return f"`python -m nfsd.cli serve --help` gave {p.returncode}: {p.stderr.strip()[-500:]}"
    return None


@pytest.fixture(scope="session")
def kernel_env(tmp_path_factory: pytest.TempPathFactory) -> scenarios.Env:
    kind = os.environ.get("KERNEL_E2E_SERVER", "recovery-fs")
    _need(kind in servers.KINDS, f"KERNEL_E2E_SERVER={kind!r} is none of {list(servers.KINDS)}")
    _need(os.geteuid() == 0, "root (unshare --net --mount --pid)")
    tools = ["qemu-system-x86_64", "unshare", "ip", "objcopy", "apt-get", "dpkg"]
    if kind == "ganesha":
        tools += ["ganesha.nfsd", "rpcbind"]
    missing = [t for t in tools if shutil.which(t) is None]
    _need(not missing, f"commands {missing} (tools/apt-test.txt)")
    if kind == "recovery-fs":
        why = _recovery_fs_serves()
        _need(why is None, f"recovery-fs serve: {why}")
    try:
        kernel = assets.prepare()
    except assets.AssetError as e:
        _need(False, str(e))
        raise
    base = tmp_path_factory.mktemp("kernel-client")
    layout = storage.build(base / "storage")
    exported = layout.materialize(base / "presented") if kind == "ganesha" else base / "storage"
    KERNEL_REPORT.append(
        f"kernel client: server {kind}, guest kernel {kernel.package}, "
        f"accel {scenarios.guest.choose_accel()}"
    )
    return scenarios.Env(kernel, layout, kind, exported, base / "runs")


@pytest.fixture(scope="session")
def kernel_report() -> list[str]:
    """Lines printed in the terminal summary (and by the tests themselves)."""
    return KERNEL_REPORT


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if KERNEL_REPORT:
        terminalreporter.section("kernel NFS client (QEMU guest)")
        for line in KERNEL_REPORT:
            terminalreporter.write_line(line)
        terminalreporter.write_line(f"results: {Path(assets.CACHE) / 'results.json'}")
