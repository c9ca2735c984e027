"""Scale-out: the Linux kernel client through HAProxy to two recovery-fs instances.

Two instances (2 workers each) in two network namespaces serve one storage
with one secret; Debian's HAProxy balances them in TCP mode with the PROXY
protocol (v2), and the instances admit only the client HAProxy names (the
exports list lists 127.0.0.1, the guest behind QEMU's NAT; HAProxy's own
address is not listed).  The guest mounts the balanced address with
``nconnect=4``, lists the tree, reads a 97 MiB merged image with dd, and
instance a is killed (its whole process group, SIGKILL) mid-read: the hard
mount reconnects through HAProxy to instance b, the read completes
byte-exact, and the listing after is the listing before.
"""

from __future__ import annotations

import re
import shutil

import pytest

from .kernel import balanced, scenarios
from .support.prereq import require


@pytest.mark.e2e
@pytest.mark.slow
def test_balanced_read_survives_an_instance_kill(kernel_env, kernel_report) -> None:  # type: ignore[no-untyped-def]
    if kernel_env.kind != "recovery-fs":
        pytest.skip("the balanced instances are recovery-fs")
    require(shutil.which("haproxy") is not None, "haproxy (tools/apt-test.txt)")
    run, layout = scenarios.run_balanced(kernel_env)
    r = run.result
    problems = scenarios.mount_problems(run, explicit=True)
    info = r.one("MOUNTINFO") or ""
    if "nconnect=4" not in info:
        problems.append(f"not mounted with nconnect=4: {info}")
    exp = layout.files[scenarios.BALANCED_IMAGE]
    read = (r.one("RESTART_READ") or "").split(" ")
    sha = (r.one("RESTART_SHA") or "").split(" ")
    if read[:1] != ["rc=0"]:
        problems.append(f"the read across the instance kill failed: {' '.join(read)}")
    if sha[:2] != ["rc=0", exp.sha256()]:
        problems.append(f"bytes of the merged image: {sha}; expected sha256 {exp.sha256()}")
    spread = next((e for _, e in r.events if e.startswith("backend connections")), "")
    numbers = [int(n) for n in re.findall(r"'\w+': (\d+)", spread)]
    if len(numbers) != len(balanced.INSTANCES) or not all(numbers):
        problems.append(f"nconnect's connections not spread over both instances: {spread!r}")
    killed_at = r.event_time("instance kill")
    done = r.time_of("RESTART_READ")
    if killed_at is None or done is None or not killed_at < done:
        problems.append(f"instance a was not killed during the read: events {r.events}")
    before, after = scenarios.entries(run, "ENTRY"), scenarios.entries(run, "ENTRY2")
    if not before or before != after:
        changed = sorted(set(before.items()) ^ set(after.items()))[:10]
        problems.append(f"ls -lR differs after the kill ({len(before)} entries): {changed}")
    check, files, _ = scenarios.check_problems(run)
    problems += check + scenarios.rpc_problems(run)
    secs = float(read[2]) - float(read[1]) if len(read) > 2 else float("nan")
    kernel_report.append(
        f"balanced: {exp.size} bytes of a merged image read by dd through HAProxy in "
        f"{secs:.1f} s, instance a killed mid-read; {spread}; {len(before)} entries listed "
        f"alike before and after; {files} files compared; "
        f"{len(r.rpc.get('retransmitted', []))} call(s) retransmitted after the kill"
    )
    assert not problems, run.fail("read through HAProxy across an instance kill", problems)
    r.require_completed()
