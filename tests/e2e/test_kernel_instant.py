"""Instant recovery with the real Linux NFS client: a session mounted read-write (one boot).

The guest (tests/e2e/kernel/sh/instant.sh) creates, appends, renames (within
and across folders, over a base file), removes a base file, makes and
removes a folder, a symbolic link, a sparse 2 GiB swap file, truncates up
and down; then runs 300 random writes (half O_DIRECT), truncates and
verified reads over the merged disk image against a model in its memory,
while the host SIGKILLs and restarts the server; mounted with ``nconnect``,
so both worker processes serve the guest's calls; then 1,200 scattered 4 KiB
writes to one file through both.  The storage tree is
fingerprinted before and after.
"""

from __future__ import annotations

import hashlib

import pytest

from .kernel import instant_scenario as ir
from .kernel import scenarios


@pytest.fixture(scope="module")
def instant_run(kernel_env: scenarios.Env) -> tuple[scenarios.Run, str, str]:
    if kernel_env.kind != "recovery-fs":
        pytest.skip("instant recovery is recovery-fs's own")
    return ir.run_instant(kernel_env)


@pytest.mark.e2e
@pytest.mark.slow
def test_session_mounts_and_file_operations(instant_run, kernel_env) -> None:
    run, _, _ = instant_run
    r = run.result
    problems = scenarios.mount_problems(run, explicit=True)
    ops = {line.split(" ")[0]: line for line in r.values("OP")}
    expected_ok = [
        "create", "append", "mkdir", "create2", "rename-in", "rename-across",
        "rename-over-base", "remove-base", "rmdir", "symlink", "swap", "read-vmx",
        "readlink", "truncate-up",
    ]  # fmt: skip
    for name in expected_ok:
        line = ops.get(name)
        if line is None or line.split(" ")[1] != "rc=0":
            problems.append(f"{name}: {line}")
    if "hello world" not in ops.get("read-vmx", ""):
        problems.append(f"the renamed file reads {ops.get('read-vmx')}")
    hard = ops.get("hardlink-refused", "")
    if "rc=0" in hard.split(" ")[1:2] or "made" in hard:
        problems.append(f"a hard link was made: {hard}")
    want_t = hashlib.sha256(b"ab" + bytes(8190)).hexdigest()
    if r.one("TSHA") != want_t:
        problems.append(f"truncated down then up reads {r.one('TSHA')}, want zeros after 2 bytes")
    after = scenarios.entries(run, "AFTER")
    for gone in (f"{ir.FOLDER}/{ir.DESCRIPTOR}", f"{ir.FOLDER}/sub", f"{ir.FOLDER}/new.txt"):
        if gone in after:
            problems.append(f"{gone} still listed")
    swap = after.get(f"{ir.FOLDER}/vm.vswp")
    if swap is None or swap.size != 2 << 30:
        problems.append(f"swap file: {swap}")
    assert not problems, run.fail("file operations", problems)


@pytest.mark.e2e
@pytest.mark.slow
def test_merged_image_random_writes_across_a_server_kill(instant_run, kernel_env, kernel_report):
    run, _, _ = instant_run
    r = run.result
    problems = []
    exp = kernel_env.layout.files[f"{ir.FOLDER_PATH}/{ir.DISK}"]
    if r.one("BASE_SHA") != exp.sha256():
        problems.append(
            f"the session's disk read {r.one('BASE_SHA')}, the merged image is {exp.sha256()}"
        )
    done = (r.one("FSX_DONE") or "").split(" ")
    if done[:2] != ["ops=300", "bad=0"]:
        problems.append(f"fsx: {done}")
    problems += [f"FSX_MISMATCH {v}" for v in r.values("FSX_MISMATCH")]
    problems += [f"FSX_ERR {v}" for v in r.values("FSX_ERR")]
    final = (r.one("FSX_FINAL") or "").split(" ")
    if len(final) < 4 or final[0] != final[1] or final[2] != final[3]:
        problems.append(f"after the run, model and server differ: {final}")
    held = next((e for _, e in r.events if e.startswith("connections held by")), "")
    if len(set(held.split()[4:])) < 2:
        problems.append(f"the guest's connections were not spread over both workers: {held!r}")
    killed = r.event_time("server killed")
    restarted = [t for t, e in r.events if e.startswith("server started")]
    finished = r.time_of("FSX_DONE")
    if killed is None or len(restarted) < 2 or finished is None or not killed < finished:
        problems.append(f"the server was not killed during the run: events {r.events}")
    # LINK is refused by design (NFS3ERR_NOTSUPP): the one error reply asked for.
    problems += [p for p in scenarios.rpc_problems(run) if not ("LINK" in p and "NOTSUPP" in p)]
    again = r.rpc.get("retransmitted", [])
    kill = next((e for _, e in r.events if e.startswith("server kill pid")), "no kill")
    kernel_report.append(
        f"instant: 300 fsx ops over the merged image ({held}), {kill} at {killed} s, "
        f"done at {finished} s, {len(again)} calls retransmitted"
    )
    assert not problems, run.fail("fsx over the merged image", problems)


@pytest.mark.e2e
@pytest.mark.slow
def test_rewriting_in_place_past_the_quota(instant_run, kernel_env, kernel_report) -> None:
    """160 MiB of 1 MiB O_DIRECT writes over one 4 MiB region of a 64 MiB session:
    every one accepted and the last pass read back (the cleaning gave the
    overwritten bytes back; without it the 15th pass got ENOSPC)."""
    run, _, _ = instant_run
    done = (run.result.one("REWRITE_DONE") or "").split(" ")
    problems = [f"REWRITE_ERR {v}" for v in run.result.values("REWRITE_ERR")]
    if done[:2] != ["passes=40", "errors=0"] or len(done) < 4 or done[2] != done[3]:
        problems.append(f"rewrite: {done}")
    held, count, made = ir.logs_of_session(kernel_env)
    if held > ir.QUOTA_MIB << 20 or made <= count:
        problems.append(f"logs: {held} bytes in {count} logs, {made} ever made")
    kernel_report.append(
        f"instant: 160 MiB rewritten in a {ir.QUOTA_MIB} MiB session, "
        f"{held >> 20} MiB held in {count} logs after, {made - count} logs emptied and removed"
    )
    assert not problems, run.fail("rewriting past the quota", problems)


@pytest.mark.e2e
@pytest.mark.slow
def test_scattered_writes_through_both_workers(instant_run, kernel_report) -> None:
    """1,200 random 4 KiB O_DIRECT writes to one 8 MiB file over the 16 connections
    (both workers): ~900 pieces, more than a writer keeps whole after another
    process's change (``PARTIAL_MIN``), read back after dropping the guest's cache."""
    run, _, _ = instant_run
    done = (run.result.one("SCATTER_DONE") or "").split(" ")
    problems = [f"SCATTER_ERR {v}" for v in run.result.values("SCATTER_ERR")]
    if done[:2] != ["writes=1200", "errors=0"] or len(done) < 4 or done[2] != done[3]:
        problems.append(f"scatter: {done}")
    kernel_report.append(f"instant: 1,200 scattered 4 KiB writes through both workers: {done[:2]}")
    assert not problems, run.fail("scattered writes", problems)


@pytest.mark.e2e
@pytest.mark.slow
def test_storage_untouched(instant_run) -> None:
    run, before, after = instant_run
    assert before == after, run.fail("storage changed", [f"{before} before, {after} after"])
