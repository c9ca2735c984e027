"""End-to-end: a large folder the workers watch (inotify, ``merge.watch``) still shows
every change within rule 8's seconds, as ``nfs-ls`` (libnfs-utils) lists it.

The server runs with its two workers over a folder of 1,200 files on the
test's (local) file system.  The folder is listed until the workers watch it
(an inotify descriptor open in a worker), then each kind of change is made
in the storage and the folder listed again until it shows, within 3 s.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.support.prereq import require as _require
from tests.e2e.support.server import Server, recovery_fs_command

pytestmark = pytest.mark.e2e

COUNT = 1200
SHOWN_WITHIN = 3.0  # seconds: rule 8's "a few"; the ttl is 1 s


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _require(shutil.which("nfs-ls") is not None, "nfs-ls (Debian package libnfs-utils)")
    _require(recovery_fs_command() is not None, "the recovery-fs command (pip install -e .)")
    root = tmp_path_factory.mktemp("storage")
    root.chmod(0o755)
    many = root / "many"
    many.mkdir()
    for i in range(COUNT):
        (many / f"f{i:05d}").write_bytes(b"x" * (i % 7))
    (many / "sub").mkdir()
    (root / "elsewhere").mkdir()
    (root / "elsewhere" / "in").write_bytes(b"moved in")
    return root


@pytest.fixture(scope="module")
def server(storage: Path, tmp_path_factory: pytest.TempPathFactory):
    srv = Server(storage, tmp_path_factory.mktemp("server"))
    yield srv
    alive = srv.alive()
    srv.stop()
    assert alive, f"the server died\n{srv.diagnostics()}"


def listing(srv: Server) -> dict[str, tuple[str, str, int]]:
    """``nfs-ls`` of ``many``: name -> (mode string, nlink, size)."""
    res = subprocess.run(["nfs-ls", srv.url("many")], capture_output=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr.decode() + srv.diagnostics()
    out = {}
    for line in res.stdout.decode().splitlines():
        mode, nlink, _uid, _gid, size, name = line.split(None, 5)
        out[name] = (mode, nlink, int(size))
    return out


def inotify_in_a_worker(srv: Server) -> bool:
    children = Path(f"/proc/{srv.proc.pid}/task/{srv.proc.pid}/children").read_text().split()
    for pid in children:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:inotify":
                    return True
        except OSError:
            continue
    return False


def shows(srv: Server, check, what: str) -> None:
    deadline = time.monotonic() + SHOWN_WITHIN
    while True:
        seen = listing(srv)
        if check(seen):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not shown within {SHOWN_WITHIN} s\n{srv.diagnostics()}")
        time.sleep(0.1)


def test_changes_show_in_a_watched_folder(server: Server, storage: Path) -> None:
    many = storage / "many"
    first = listing(server)
    assert len(first) == COUNT + 1
    for _ in range(6):  # each worker lists it, after the ttl, then watches it
        time.sleep(0.55)
        assert listing(server) == first
    assert inotify_in_a_worker(server), "no worker watches the folder"

    (many / "new").write_bytes(b"12345")
    shows(server, lambda s: s.get("new", (0, 0, -1))[2] == 5, "a file created")
    (many / "f00001").unlink()
    shows(server, lambda s: "f00001" not in s, "a file deleted")
    os.rename(many / "f00002", many / "renamed")
    shows(server, lambda s: "f00002" not in s and "renamed" in s, "a file renamed")
    os.rename(storage / "elsewhere" / "in", many / "in")
    shows(server, lambda s: "in" in s, "a file moved in")
    os.rename(many / "f00003", storage / "elsewhere" / "out")
    shows(server, lambda s: "f00003" not in s, "a file moved out")
    (many / "f00004").write_bytes(b"a longer content")
    shows(server, lambda s: s["f00004"][2] == 16, "a file rewritten")
    with open(many / "f00005", "ab") as f:
        f.write(b"+appended")
    shows(server, lambda s: s["f00005"][2] == 5 + 9, "a file appended to")
    os.truncate(many / "f00006", 0)
    shows(server, lambda s: s["f00006"][2] == 0, "a file truncated")
    os.chmod(many / "f00008", 0o700)
    shows(server, lambda s: s["f00008"][0] != first["f00008"][0], "a file's mode")
    nlink = listing(server)["sub"][1]
    (many / "sub" / "deeper").mkdir()
    shows(server, lambda s: s["sub"][1] != nlink, "a folder made in a subfolder")
    assert server.alive()
