"""The `instant` boot: the kernel client works read-write on an instant-recovery session.

The host starts a session of the merged web01 folder with ``recovery-fs
instant start`` in the server's state directory (the server finds it when
it starts, as after a restart), then boots the guest (sh/instant.sh): file
operations, then an fsx-style run of random writes, truncates and reads
over the merged disk image, checked against a model in the guest's memory.
Two seconds into that run, as soon as a WRITE is in flight, the host
SIGKILLs the server and starts it again (hard mount: the run must complete
and verify).  The guest mounts with ``nconnect`` (:data:`NCONNECT`): its
calls, a file's WRITEs and READs among them, go to both worker processes.

The storage is fingerprinted before and after (:func:`tree_digest`): every
entry's name, type, size, mode, mtime and ctime, and the bytes of every
file up to 64 MiB; a write to a larger file would change its ctime.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.tree_digest import tree_digest

from . import scenarios, servers
from .scenarios import Env, Run

FOLDER_PATH = "backups/2026-11-22T0100/web01"
FOLDER = "web01"
DISK = "web01-flat.vmdk"
VMX = "web01.vmx"
DESCRIPTOR = "web01.vmdk"
SESSION = "ir"
EXPORT = f"/recover/instant/{SESSION}"
QUOTA_MIB = 64
"""The session's quota: the guest rewrites 2.5 times as much (sh/instant.sh)."""
NCONNECT = 16
"""The guest's connections (``nconnect``): SO_REUSEPORT hashes each to one of the
server's 2 workers, so a file's calls are served by both processes, each with its
own store, group commit and map cache (all 16 on one worker: 2 runs in 65,536)."""


def state_dir(env: Env) -> Path:
    """The state directory of the server the guest mounts (its sessions)."""
    return env.work / "instant" / "server" / "state"


def logs_of_session(env: Env) -> tuple[int, int, int]:
    """The session's data logs now: bytes they hold, how many, how many were ever made."""
    (overlay,) = (state_dir(env) / "instant").glob(f"{SESSION}.*.d")
    conn = sqlite3.connect(f"file:{overlay / 'session.sqlite'}?mode=ro", uri=True)
    try:
        held, count = conn.execute("SELECT COALESCE(SUM(end), 0), COUNT(*) FROM logs").fetchone()
        made = conn.execute("SELECT value FROM meta WHERE key='log_seq'").fetchone()
    finally:
        conn.close()
    return held, count, made[0] if made else count


def start_session(env: Env, state: Path) -> str:
    """``recovery-fs instant start`` as an administrator would; its output."""
    cmd = [sys.executable, "-m", "nfsd.cli", "instant", "start", "--storage", str(env.exported)]
    cmd += ["--state-dir", str(state), "--name", SESSION, "--clients", "127.0.0.1(insecure)"]
    cmd += ["--quota", f"{QUOTA_MIB}M"]
    cmd += [FOLDER_PATH]
    env_vars = dict(os.environ)
    env_vars["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(servers.REPO), env_vars.get("PYTHONPATH")])
    )
    p = subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, cwd=servers.REPO, env=env_vars,
        check=False,
    )  # fmt: skip
    if p.returncode != 0:
        raise RuntimeError(f"instant start failed ({p.returncode}): {p.stdout}{p.stderr}")
    return p.stdout


def run_instant(env: Env, *, ops: int = 300, seed: int = 10, kill_after: float = 2.0) -> tuple[
    Run, str, str
]:  # fmt: skip
    """Boot the guest against a session; (run, storage digest before, after)."""
    before = tree_digest(env.exported)
    start_session(env, state_dir(env))
    run = scenarios._run(
        env,
        "instant",
        "instant",
        params={
            "EXPORT": EXPORT,
            "FOLDER": FOLDER,
            "DISK": DISK,
            "VMX": VMX,
            "DESCRIPTOR": DESCRIPTOR,
            "OPS": ops,
            "SEED": seed,
        },
        mount_extra=f",nconnect={NCONNECT}",
        actions={
            "BASE_SHA": {"do": "connections"},
            "FSX_STARTED": {"do": "restart_server", "delay": kill_after, "in_flight": "WRITE"},
        },
        timeout=600,
    )
    return run, before, tree_digest(env.exported)
