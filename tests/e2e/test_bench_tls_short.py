"""``bench/tls_read.py --short``: plain and TLS reads of the same file, every byte checked.

No timing is asserted (the figures move with the machine); what is checked is
that both transports read the whole file with the right bytes (the script
asserts the SHA-256 of each run) and that the TLS run really was TLS 1.3.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def test_tls_read_benchmark_short_form(tmp_path: Path) -> None:
    out = tmp_path / "tls.json"
    res = subprocess.run(
        [sys.executable, str(REPO / "bench" / "tls_read.py"), "--short", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPO,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["size_MiB"] == 64
    assert r["plain"]["MB_per_s"] > 0 and r["tls"]["MB_per_s"] > 0
    assert r["plain"]["cipher"] == "-"
    assert r["tls"]["cipher"].startswith("TLS_AES_") or r["tls"]["cipher"].startswith("TLS_CHACHA")
    assert r["ratio_tls_plain"] == r["tls"]["MB_per_s"] / r["plain"]["MB_per_s"]
    assert "TLS / plain throughput" in res.stdout
