"""The short fuzz run of ``make test``: atheris over the sans-IO path, no crash.

libFuzzer runs in a subprocess (it owns the process: signals, exit codes),
from the seeds of ``tests/fuzz/corpus`` into a scratch corpus, for
``FUZZ_SHORT_SECONDS`` (30 by default).  A crash fails the test with the
input in hex and its file, to be kept in ``tests/fuzz/crashes/``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECONDS = int(os.environ.get("FUZZ_SHORT_SECONDS", "30"))


@pytest.mark.slow
def test_a_short_fuzz_run_finds_no_crash(tmp_path: Path) -> None:
    work, artifacts = tmp_path / "corpus", tmp_path / "artifacts"
    work.mkdir()
    artifacts.mkdir()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.fuzz.fuzz_rpc",
            f"-max_total_time={SECONDS}",
            f"-artifact_prefix={artifacts}/",
            "-rss_limit_mb=1024",
            "-timeout=10",
            "-print_final_stats=1",
            str(work),
            str(ROOT / "tests" / "fuzz" / "corpus"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=SECONDS + 120,
        check=False,
    )
    found = sorted(artifacts.iterdir())
    report = "\n".join(f"{f.name}: {f.read_bytes()[:4096].hex()}" for f in found)
    assert run.returncode == 0 and not found, (
        f"exit {run.returncode}\n{report}\n{run.stderr[-6000:]}"
    )
    runs = [
        line
        for line in run.stderr.splitlines()
        if line.startswith("stat::number_of_executed_units")
    ]
    assert runs and int(runs[0].split(":")[-1]) > 1000, run.stderr[-2000:]
