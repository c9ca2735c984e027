"""``bench/instant_bench --short`` runs to the end: both servers wrote, every byte checked.

No timing is asserted (the figures move with the machine and its load).  What
is checked: every workload has a figure for each of its servers in every
round, each written file read back whole equals the file built locally from
nfsload's pattern (on ganesha and on the session), the read-only export
still serves the backup's bytes, the storage is unchanged, and the report
was written.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.support.prereq import require

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
TOOLS = ("gcc", "ganesha.nfsd", "rpcbind", "unshare", "ip")
SERVERS = {
    "rand_write_4k": {"ganesha", "recovery-fs session"},
    "seq_write_1m": {"ganesha", "recovery-fs session"},
    "read_unwritten": {"ganesha", "recovery-fs session", "recovery-fs read-only"},
    "read_rewritten": {"ganesha", "recovery-fs session", "recovery-fs read-only"},
}


def test_instant_bench_short_writes_and_verifies(tmp_path: Path) -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    require(not missing, f"missing: {missing}")
    require(os.geteuid() == 0, "root (unshare --net --mount --pid)")
    out, data = tmp_path / "out", tmp_path / "data"
    script = REPO / "bench" / "instant_bench"
    res = subprocess.run(
        [sys.executable, script, "--short", "--out", out, "--data", data],
        capture_output=True, text=True, timeout=300, check=False, cwd=REPO,
    )  # fmt: skip
    report = f"stdout:\n{res.stdout}\nstderr:\n{res.stderr[-6000:]}"
    assert res.returncode == 0, report
    results = json.loads((out / "results.json").read_text())
    assert results["errors"] == [], report
    assert set(results["workloads"]) == set(SERVERS)
    for key, w in results["workloads"].items():
        assert set(w["runs"]) == SERVERS[key], key
        for server, runs in w["runs"].items():
            assert len(runs) == results["runs"] >= 2, f"{key}: {server}"
            assert all(r["value"] > 0 and r["bytes"] > 0 for r in runs), f"{key}: {server}"
    verify = results["verify"]
    for server in ("ganesha", "recovery-fs session", "recovery-fs read-only"):
        for disk in ("disk-flat.vmdk", "data-flat.vmdk"):
            check = verify[server][disk]
            assert check["ok"] and check["expected"] == check["read"], (server, disk, check)
    # The random writes landed (the plain disk's expected file differs from the backup).
    for server in ("ganesha", "recovery-fs session"):
        assert verify[server]["random_slots_written"] > 0, server
        written = verify[server]["data-flat.vmdk"]["expected"]
        assert written != verify["recovery-fs read-only"]["data-flat.vmdk"]["expected"], server
    assert results["storage_unchanged"] is True
    table = (out / "table.md").read_text()
    assert "session / ganesha" in table and "same bytes" in table and "DIFFERENT" not in table
