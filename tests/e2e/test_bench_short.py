"""``bench/run --short`` runs to the end and writes a complete table.

No timing is asserted: the benchmark's figures vary with the machine.  What
is checked is that every workload has a figure for both servers, that both
served the same bytes, and that the report and the plot were written.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
TOOLS = ("gcc", "ganesha.nfsd", "rpcbind", "unshare", "ip", "nfs-ls")


def test_bench_short_produces_a_complete_table(tmp_path):
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if os.geteuid() != 0:
        missing.append("root (unshare --net --mount --pid)")
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"prerequisites missing in CI: {missing}")
        pytest.skip(f"missing: {missing}")
    out = tmp_path / "out"
    argv = [sys.executable, str(REPO / "bench" / "run"), "--short", "--out", str(out)]
    res = subprocess.run(
        [*argv, "--data", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        cwd=REPO,
    )
    report = f"stdout:\n{res.stdout}\nstderr:\n{res.stderr[-6000:]}"
    assert res.returncode == 0, report
    results = json.loads((out / "results.json").read_text())
    assert results["errors"] == [], report
    for key, w in results["workloads"].items():
        for server in ("ganesha", "recovery-fs"):
            runs = w["runs"].get(server, [])
            assert len(runs) == results["runs"] >= 3, f"{key}: {server}: {len(runs)} runs"
            assert all(r["value"] > 0 for r in runs), f"{key}: {server}"
    for size, point in results["sweep"].items():
        assert set(point) == {"ganesha", "recovery-fs"}, f"sweep {size}: {point}"
    for key, points in results["conn_sweep"].items():
        assert sorted(points, key=int) == ["1", "2", "4", "8"], f"{key}: {points}"
        for n, point in points.items():
            assert point and all(len(v) == results["runs"] for v in point.values()), (key, n)
    assert results["recovery_processes"] >= 2, "recovery-fs ran without its workers"
    for path, sums in results["checksums"].items():
        assert len(sums) == 2 and len(set(sums.values())) == 1, f"{path}: {sums}"
    for server in ("ganesha", "recovery-fs"):
        scale = results["scale"][server]
        for key in ("startup_s", "first_listing_ms", "repeated_listing_ms", "peak_rss_mb"):
            assert scale[key] > 0, f"scale {key}: {server}"
    table = (out / "table.md").read_text()
    assert "FAILED" not in table and "ratio rf/g" in table
    assert "s/GiB" in table and "s/100k calls" in table
    for png in ("performance.png", "performance-conns.png"):
        assert (out / png).stat().st_size > 1000, png
