"""``bench/soak --short``: every hostile load of issue 7, scaled down, on both servers.

The run fails on any invariant recovery-fs breaks (a good-client answer
over 1 s or an error, a wrong byte, RSS over the bound, the server gone);
ganesha's figures are reported beside it, not judged.  The first tests
check the harness's own pieces without a server, so that a harness that
could no longer see a failure is caught too.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import random
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import soak_fuzz  # noqa: E402
import soak_probe  # noqa: E402

TOOLS = ("ganesha.nfsd", "rpcbind", "unshare", "ip")


def _soak():
    loader = importlib.machinery.SourceFileLoader("soak_main", str(REPO / "bench" / "soak"))
    spec = importlib.util.spec_from_loader("soak_main", loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak_main"] = module  # its dataclasses look their module up
    loader.exec_module(module)
    return module


def _record(body: bytes, last: bool = True) -> bytes:
    return struct.pack(">I", (0x80000000 if last else 0) | len(body)) + body


def test_reply_records_are_counted_across_any_split():
    stream = _record(b"abcd") + _record(b"xy", last=False) + _record(b"zz") + _record(b"")
    stream += _record(bytes(300))
    conn = soak_fuzz._Tcp.__new__(soak_fuzz._Tcp)
    conn.marker, conn.left, conn.last = b"", 0, False
    assert sum(conn.replies(stream[i : i + 1]) for i in range(len(stream))) == 4


def test_mutations_change_calls_and_poisoned_framing_is_flagged():
    handles = {"": b"r" * 32, "plain/big.img": b"p" * 32, "vm/disk-flat.vmdk": b"m" * 32}
    pool = soak_fuzz.seeds(handles)
    rnd = random.Random(3)
    bodies = [soak_fuzz.mutate(rnd, body, pool) for _, body in pool * 20]
    assert sum(b[4:] != s[4:] for b, (_, s) in zip(bodies, pool * 20, strict=True)) > 400
    framed = [soak_fuzz.frame(rnd, b"x" * 80) for _ in range(5000)]
    poisoned = [data for data, bad in framed if bad]
    assert 30 < len(poisoned) < 200
    clean = [data for data, bad in framed if not bad]
    assert all(d == _record(b"x" * 80) for d in clean if len(d) == 84)


def test_wrong_bytes_and_percentiles():
    assert soak_probe.wrong_bytes(b"abcd", b"abcd") == 0
    assert soak_probe.wrong_bytes(b"abXd", b"abcd") == 1
    assert soak_probe.wrong_bytes(b"ab", b"abcd") == 2
    assert soak_probe.percentile([float(i) for i in range(1, 101)], 99) == 99.0
    assert soak_probe.percentile([], 50) is None


def test_violations_name_each_broken_invariant():
    soak = _soak()
    probe = {
        "null": {"n": 100, "p50_ms": 0.1, "p99_ms": 1.0, "max_ms": 1500.0},
        "read": {"n": 100, "p50_ms": 0.1, "p99_ms": 1.0, "max_ms": 2.0},
        "errors": 1,
        "error_samples": ["EOFError"],
        "wrong_bytes": 0,
    }
    res = {
        "probe": probe,
        "loads": {"readers": {"wrong_bytes": 3}},
        "peak": {"rss_mb": 300.0},
        "alive": False,
        "answers_after": False,
        "exit_status": -9,
    }
    results = {"loads": ["readers"], "servers": {"recovery-fs": {"loads": {"readers": res}}}}
    found = "\n".join(soak.violations(results, 256.0))
    for words in ("NULL answered in 1500 ms", "1 errors", "3 wrong bytes", "RSS 300 MB", "exited"):
        assert words in found
    res |= {"alive": True, "answers_after": True, "peak": {"rss_mb": 10.0}, "loads": {}}
    res["probe"] = probe | {"errors": 0, "null": probe["read"]}
    assert soak.violations(results, 256.0) == []


@pytest.mark.e2e
@pytest.mark.slow
def test_soak_short_recovery_fs_holds_and_ganesha_is_measured(tmp_path):
    lacking = [t for t in TOOLS if shutil.which(t) is None] + (["root"] if os.geteuid() else [])
    if lacking and os.environ.get("CI") == "true":
        pytest.fail(f"prerequisites missing in CI: {lacking}")
    if lacking:
        pytest.skip(f"missing: {lacking} (root: for unshare --net --mount --pid)")
    out, data = tmp_path / "out", tmp_path / "data"
    argv = [str(REPO / "bench" / "soak"), "--short", "--out", str(out), "--data", str(data)]
    res = subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, timeout=600, cwd=REPO, check=False
    )
    report = f"stdout:\n{res.stdout}\nstderr:\n{res.stderr[-4000:]}"
    results = json.loads((out / "results.json").read_text())
    assert results["violations"]["recovery-fs"] == [], report
    assert res.returncode == 0, report
    for name in ("recovery-fs", "ganesha"):
        loads = results["servers"][name]["loads"]
        assert list(loads) == ["fuzz", "trickle_idle", "readers", "flood", "all"], name
        fuzz = loads["fuzz"]["loads"]["fuzz"]
        assert fuzz["inputs"] >= 100_000 or fuzz["seconds"] >= 19, (name, fuzz)
        assert fuzz["udp_sent"] > 0, (name, fuzz)
        assert loads["readers"]["loads"]["readers"]["bytes_verified"] > 0, name
        assert loads["flood"]["loads"]["flood"]["established"] > 0, name
        for load, r in loads.items():
            assert r["probe"]["read"]["n"] >= 10, (name, load)
    table = (out / "table.md").read_text()
    assert table.count("| recovery-fs |") == 5 and table.count("| ganesha |") == 5
