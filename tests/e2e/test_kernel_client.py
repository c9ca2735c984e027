"""The real Linux NFS client, in a QEMU guest, against the server under test.

How to run (root, Debian 12; `make deps-test` installs QEMU, busybox-static...):

    pytest -m e2e tests/e2e/test_kernel_client.py -v          # recovery-fs
    KERNEL_E2E_SERVER=ganesha pytest tests/e2e/test_kernel_client.py   # the reference

Five guest boots, each against a fresh server in a private namespace
(tests/e2e/kernel/guest.py): `main` (explicit ports, no `noacl`: throughput,
the whole tree, contents, the recovery rules, write attempts), `portmap` (no
port options), `restart` (the server is killed and restarted during a read),
`access` (the exports file: refused, allowed by a reload, revoked while
mounted), `hang` (a harness self-test: a dead server must end in a host
timeout). The tests of one boot share it through a module fixture.
"""

from __future__ import annotations

import re

import pytest

from .kernel import pancbt, scenarios, storage
from .kernel.pancbt import Change

# ---------------------------------------------------------------- the tests' own pancbt


def test_pancbt_writer_matches_worked_example() -> None:
    """The worked example of pancbt.md, written by the tests' writer and read back."""
    changes = [
        Change(1048576, 4096, b"\x11" * 4096),
        Change(2097152, 65536),
        Change(11534336, 8192, b"\x22" * 8192),
    ]
    data = pancbt.encode(12582912, changes, base_size=10485760)
    p = pancbt.parse(data)
    assert p.disk_size == 12582912
    assert [(e.offset, e.length, e.data_offset, e.kind) for e in p.extents] == [
        (1048576, 4096, 512, 1),
        (2097152, 65536, 0, 2),
        (11534336, 8192, 4608, 1),
    ]
    assert int.from_bytes(data[40:48], "little") == 12800  # table_offset
    base = bytes(range(256)) * 40960
    merged = pancbt.naive_merge(base, data)
    read = merged[1044480 : 1044480 + 1048576]
    assert read == base[1044480:1048576] + b"\x11" * 4096 + base[1052672:2093056]
    with pytest.raises(pancbt.Invalid):
        pancbt.naive_merge(base[:-1], data)  # rule 8


# ---------------------------------------------------------------- main boot


@pytest.fixture(scope="module")
def main_run(kernel_env: scenarios.Env) -> scenarios.Run:
    return scenarios.run_main(kernel_env)


@pytest.mark.e2e
@pytest.mark.slow
def test_mount_explicit_ports_without_noacl(main_run: scenarios.Run) -> None:
    problems = scenarios.mount_problems(main_run, explicit=True)
    assert not problems, main_run.fail("mount", problems)


@pytest.mark.e2e
@pytest.mark.slow
def test_whole_tree_listed_with_sizes(main_run, kernel_env) -> None:
    problems = scenarios.listing_problems(main_run, kernel_env.layout)
    assert not problems, main_run.fail("listing", problems)


@pytest.mark.e2e
@pytest.mark.slow
def test_file_contents_match_storage(main_run, kernel_env, kernel_report) -> None:
    problems, files, nbytes = scenarios.check_problems(main_run, {"tree", "big"})
    kernel_report.append(f"main: tree files compared {files}, {nbytes} bytes")
    assert not problems, main_run.fail("contents", problems)
    assert files >= 200


@pytest.mark.e2e
@pytest.mark.slow
def test_reads_past_4_gib(main_run, kernel_env) -> None:
    problems, files, _ = scenarios.check_problems(main_run, {"large4g"})
    seen = scenarios.entries(main_run).get(storage.HUGE)
    if seen is None or seen.size != storage.HUGE_SIZE:
        problems.append(f"{storage.HUGE}: listed as {seen}, expected {storage.HUGE_SIZE} bytes")
    assert not problems, main_run.fail("reads past 4 GiB", problems)
    assert files == 1


@pytest.mark.e2e
@pytest.mark.slow
def test_writes_fail_read_only(main_run, kernel_env) -> None:
    problems = scenarios.read_only_problems(main_run, kernel_env.layout, "tree/sizes/s4097.bin")
    assert not problems, main_run.fail("write attempts", problems)


@pytest.mark.e2e
@pytest.mark.slow
def test_chain_of_backups_presents_merged_images(main_run, kernel_env, kernel_report) -> None:
    problems, files, nbytes = scenarios.check_problems(main_run, {"chain"})
    kernel_report.append(f"main: recovery-rule files compared {files}, {nbytes} bytes")
    assert not problems, main_run.fail("merged images and links", problems)


@pytest.mark.e2e
@pytest.mark.slow
def test_pancbt_and_link_files_hidden(main_run, kernel_env) -> None:
    listed = scenarios.entries(main_run)
    problems = [
        f"listed: {p}"
        for p in listed
        if p.endswith("-pancbt.vmdk") or p in set(kernel_env.layout.hidden)
    ]
    problems += scenarios.lookup_problems(main_run, kernel_env.layout)
    assert not problems, main_run.fail("hidden names", problems)


@pytest.mark.e2e
@pytest.mark.slow
def test_every_call_answered(main_run) -> None:
    """No RPC left unanswered, no error reply beyond those the scenario provokes
    (NOENT for hidden names, ROFS for writes, PROG_UNAVAIL for NFSACL)."""
    problems = scenarios.rpc_problems(main_run)
    assert not problems, main_run.fail("RPC trace", problems)


@pytest.mark.e2e
@pytest.mark.slow
def test_throughput_reported(main_run, kernel_env, kernel_report) -> None:
    main_run.result.require_completed()
    tp = scenarios.throughput(main_run)
    assert tp is not None, main_run.fail("throughput", ["no THROUGHPUT line"])
    _, files, nbytes = scenarios.check_problems(main_run)
    timings = scenarios.guest_timings(main_run)
    line = (
        f"main: dd bs=1M of {tp['file']} ({tp['bytes']} bytes, cold): {tp['MB_per_s']} MB/s "
        f"({tp['MiB_per_s']} MiB/s); files compared {files}, bytes compared {nbytes}; "
        f"boot {main_run.result.wall_s:.0f} s"
    )
    kernel_report.append(line)
    print(line)
    after = next((a for a in main_run.result.values("AFTER") if a.startswith("size ")), "")
    scenarios.write_results(
        kernel_env.kind,
        "main",
        {
            "readdir_lists_dot_entries": " entries . .. " in f"{after} ",
            "throughput": tp,
            "files_compared": files,
            "bytes_compared": nbytes,
            "timings": timings,
        },
    )
    assert tp["bytes"] == storage.STREAM_SIZE
    assert tp["MB_per_s"] > 1, main_run.fail("throughput", [f"only {tp['MB_per_s']} MB/s"])


# ---------------------------------------------------------------- portmapper boot


@pytest.mark.e2e
@pytest.mark.slow
def test_mount_without_ports_through_portmapper(kernel_env, kernel_report) -> None:
    run = scenarios.run_portmap(kernel_env)
    problems = scenarios.mount_problems(run, explicit=False)
    problems += scenarios.listing_problems(run, kernel_env.layout)
    check, files, nbytes = scenarios.check_problems(run)
    problems += check + scenarios.rpc_problems(run)
    kernel_report.append(
        f"portmap: files compared {files}, {nbytes} bytes; boot {run.result.wall_s:.0f} s"
    )
    scenarios.write_results(
        kernel_env.kind,
        "portmap",
        {"files_compared": files, "bytes_compared": nbytes, **scenarios.guest_timings(run)},
    )
    assert not problems, run.fail("mount through the portmapper", problems)
    run.result.require_completed()


# ---------------------------------------------------------------- restart boot


@pytest.mark.e2e
@pytest.mark.slow
def test_read_continues_across_server_restart(kernel_env, kernel_report) -> None:
    run = scenarios.run_restart(kernel_env)
    r = run.result
    problems = scenarios.mount_problems(run, explicit=True)
    exp = kernel_env.layout.files[storage.RESTART]
    read = (r.one("RESTART_READ") or "").split(" ")
    sha = (r.one("RESTART_SHA") or "").split(" ")
    if read == [""]:
        problems.append("the read across the restart never finished")
    elif read[0] != "rc=0":
        problems.append(f"the read across the restart failed: {' '.join(read)}")
    if sha[:2] != ["rc=0", exp.sha256()]:
        problems.append(f"bytes read across the restart: {sha}; expected sha256 {exp.sha256()}")
    killed = r.event_time("server killed")
    restarted = [t for t, e in r.events if e.startswith("server started")]
    done = r.time_of("RESTART_READ")
    if killed is None or len(restarted) < 2:
        problems.append(f"the server was not killed and restarted: events {r.events}")
    elif done is None or not killed < done:
        problems.append(
            f"the server was killed at {killed:.2f} s, the read had finished at {done} s: "
            "no restart happened during the read"
        )
    # The same file ids after the restart (namespace.md, rule 7), on a fresh listing.
    before, after = scenarios.entries(run, "ENTRY"), scenarios.entries(run, "ENTRY2")
    if not after:
        problems.append("no listing after the restart")
    for path, e in sorted(before.items()):
        a = after.get(path)
        if a is None:
            problems.append(f"{path}: gone after the restart")
        elif (a.inode, a.size) != (e.inode, e.size):
            problems.append(
                f"{path}: file id/size {e.inode}/{e.size} before, {a.inode}/{a.size} after"
            )
    check, files, _ = scenarios.check_problems(run)
    problems += check + scenarios.rpc_problems(run)
    problems += [f"guest console: {ln}" for ln in r.console_lines(r"[Ss]tale|fileid changed")]
    secs = float(read[2]) - float(read[1]) if len(read) > 2 else float("nan")
    kill = next((e for _, e in r.events if e.startswith("server kill pid")), "no kill")
    again = r.rpc.get("retransmitted", [])
    kernel_report.append(
        f"restart: {exp.size} bytes read by dd across a kill -9 + restart in {secs:.1f} s "
        f"(server down {restarted[-1] - killed if killed and restarted else float('nan'):.2f} s; "
        f"{kill}; {len(again)} call(s) retransmitted after it: {'; '.join(again)[:400]}); "
        f"guest console: {'; '.join(r.console_lines('nfs: '))[:300] or 'no nfs messages'}"
    )
    scenarios.write_results(
        kernel_env.kind,
        "restart",
        {
            "read": " ".join(read),
            "sha256_ok": sha[1:2] == [exp.sha256()],
            "events": r.events,
            "files_compared": files + (1 if sha[1:2] == [exp.sha256()] else 0),
            **scenarios.guest_timings(run),
        },
    )
    assert not problems, run.fail("read across a restart", problems)
    r.require_completed()


@pytest.mark.e2e
@pytest.mark.slow
def test_read_continues_across_a_worker_kill(kernel_env, kernel_report) -> None:
    """A worker of the supervised server (2 workers) killed with SIGKILL while
    dd reads 128 MiB over a hard mount: replaced within a second, the read
    completes byte-exact through the retransmissions."""
    if kernel_env.kind != "recovery-fs":
        pytest.skip("worker processes are recovery-fs's")
    run = scenarios.run_worker_kill(kernel_env)
    r = run.result
    problems = scenarios.mount_problems(run, explicit=True)
    exp = kernel_env.layout.files[storage.RESTART]
    read = (r.one("RESTART_READ") or "").split(" ")
    sha = (r.one("RESTART_SHA") or "").split(" ")
    if read[:1] != ["rc=0"]:
        problems.append(f"the read across the worker kill failed: {' '.join(read)}")
    if sha[:2] != ["rc=0", exp.sha256()]:
        problems.append(f"bytes read across the worker kill: {sha}; expected {exp.sha256()}")
    killed = next((e for _, e in r.events if " killed" in e and e.startswith("worker ")), "")
    m = re.search(r"replaced by pid \d+ within ([0-9.]+) s", killed)
    if m is None or float(m.group(1)) >= 1.0:
        problems.append(f"the worker was not replaced within a second: events {r.events}")
    done = r.time_of("RESTART_READ")
    at = r.event_time("worker kill")
    if at is None or done is None or not at < done:
        problems.append(f"no worker was killed during the read (events {r.events})")
    check, _, _ = scenarios.check_problems(run)
    problems += check + scenarios.rpc_problems(run)
    secs = float(read[2]) - float(read[1]) if len(read) > 2 else float("nan")
    again = r.rpc.get("retransmitted", [])
    kernel_report.append(
        f"worker kill: {exp.size} bytes read by dd across it in {secs:.1f} s ({killed}; "
        f"{len(again)} call(s) retransmitted after it)"
    )
    scenarios.write_results(
        kernel_env.kind,
        "worker-kill",
        {"read": " ".join(read), "sha256_ok": sha[1:2] == [exp.sha256()], "events": r.events},
    )
    assert not problems, run.fail("read across a worker kill", problems)
    r.require_completed()


# ---------------------------------------------------------------- access boot


@pytest.fixture(scope="module")
def access_run(kernel_env: scenarios.Env) -> scenarios.Run:
    if kernel_env.kind != "recovery-fs":
        pytest.skip(f"the access boot drives recovery-fs's exports file, not {kernel_env.kind}")
    return scenarios.run_access(kernel_env)


@pytest.mark.e2e
@pytest.mark.slow
def test_mount_refused_cleanly_when_not_listed(access_run) -> None:
    """Not in the exports file: the mount fails with "Permission denied" at once, no hang."""
    problems = scenarios.access_refused_problems(access_run)
    assert not problems, access_run.fail("refused mount", problems)


@pytest.mark.e2e
@pytest.mark.slow
def test_mount_allowed_after_a_reload(access_run, kernel_env) -> None:
    problems = scenarios.access_allowed_problems(access_run, kernel_env.layout)
    assert not problems, access_run.fail("mount once allowed", problems)


@pytest.mark.e2e
@pytest.mark.slow
def test_revoked_while_mounted_gets_errors_never_data(access_run, kernel_env, kernel_report):
    problems, seen = scenarios.access_revoked_problems(access_run, kernel_env.layout)
    r = access_run.result
    refused = [v for v in r.values("ACCESS_MOUNT") if not v.startswith("allowed rc=0")]
    kernel_report.append(f"access: after the revocation the guest saw: {'; '.join(seen)}")
    scenarios.write_results(
        kernel_env.kind,
        "access",
        {"mounts": r.values("ACCESS_MOUNT"), "revoked": seen, "refused": refused},
    )
    assert not problems, access_run.fail("revoked while mounted", problems)
    r.require_completed()


# ---------------------------------------------------------------- the harness itself


@pytest.mark.e2e
@pytest.mark.slow
def test_dead_server_ends_in_host_timeout(kernel_env) -> None:
    """A hard mount whose server is gone hangs forever: the harness must end it, and say so."""
    run = scenarios.run_hang(kernel_env, hang=12)
    r = run.result
    assert r.one("UNEXPECTED") is None, r.context()
    assert (r.one("MOUNT") or "").startswith("ok"), r.context()
    assert r.timed_out, r.context()
    killed, ended = r.event_time("server killed"), r.event_time("host timeout: killing qemu")
    assert killed is not None and ended is not None, r.context()
    assert 11 < ended - killed < 20, r.context()
    ctx = r.context()
    assert "HOST TIMEOUT" in ctx and "hanging-read" in ctx and "console tail" in ctx, ctx
