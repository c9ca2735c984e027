"""``recovery-fs instant``: start, list, stop, export, against a running server."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from merge.demo import make_demo
from nfsd.cli import commands as cli
from nfsd.cli.instant import parse_size
from nfsd.service.app import Service
from nfsd.service.config import Config
from nfsd.transport.rpcclient import RpcClient, auth_sys
from xdr.base import Packer, Unpacker

MOUNT = 100005
NFS = 100003


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "storage"
    make_demo(root)
    return root


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        h.update(f"{p.relative_to(root)} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns}".encode())
        if p.is_file() and not p.is_symlink():
            h.update(p.read_bytes())
    return h.hexdigest()


def mnt(port: int, path: bytes) -> tuple[int, bytes]:
    p = Packer()
    p.pack_string(path)
    with RpcClient("127.0.0.1", port, cred=auth_sys()) as c:
        r = c.call(MOUNT, 3, 1, p.get_buffer())
    u = Unpacker(r.body)
    status = u.unpack_uint()
    return status, (u.unpack_opaque() if status == 0 else b"")


def invoke(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(cli.main, list(args))
    return r.exit_code, r.output


def test_parse_size() -> None:
    assert parse_size("20G") == 20 << 30
    assert parse_size("500MiB") == 500 << 20
    assert parse_size("4096") == 4096


@pytest.mark.parametrize("quota", ["0", "1K", "99999999999P", "9E"])
def test_a_quota_out_of_bounds_is_a_usage_error(tmp_path: Path, demo: Path, quota: str) -> None:
    """From 1 MiB (room for a record) to 2^63 - 1 (FSSTAT's fields, sqlite's sizes)."""
    state = str(tmp_path / "state")
    code, out = invoke(
        "instant", "start", "--storage", str(demo), "--state-dir", state, "--quota", quota,
        "latest/web01",
    )  # fmt: skip
    assert code == 2, out
    assert not (tmp_path / "state" / "instant").exists() or not any(
        (tmp_path / "state" / "instant").iterdir()
    )


def test_overlapping_folders_are_a_usage_error(tmp_path: Path, demo: Path) -> None:
    """``latest`` is a link to a day that holds web01: the same files twice."""
    state = str(tmp_path / "state")
    day = os.readlink(demo / "latest")
    code, out = invoke(
        "instant", "start", "--storage", str(demo), "--state-dir", state, "latest", f"{day}/web01"
    )  # fmt: skip
    assert code == 2, out
    assert "overlap" in out
    assert "Traceback" not in out


def test_a_state_dir_inside_the_storage_is_a_usage_error(tmp_path: Path, demo: Path) -> None:
    """Refused in a line, as ``--cache-dir`` there is (a ConfigError's traceback before),
    and nothing made in the storage."""
    before = digest(demo)
    args = ["instant", "start", "--storage", str(demo), "--state-dir", str(demo / "state")]
    r = CliRunner().invoke(cli.main, [*args, "latest/web01"])
    assert r.exit_code == 2, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert "inside the storage" in r.output
    assert digest(demo) == before


def test_start_list_export_stop_while_serving(tmp_path: Path, demo: Path) -> None:
    before = digest(demo)
    state = tmp_path / "state"
    service = Service(
        Config(storage=demo, bind="127.0.0.1", port=0, portmap=False, state_dir=state,
               log_file=tmp_path / "log", workers=1)
    )  # fmt: skip
    service.start()
    try:
        assert service.port
        common = ["--state-dir", str(state)]
        code, out = invoke(
            "instant", "start", "--storage", str(demo), *common, "--quota", "1G",
            "--clients", "127.0.0.1(insecure)", "latest/web01",
        )  # fmt: skip
        assert code == 0, out
        assert "web01-ir" in out and "2026-11-22T0100/web01" in out  # latest pinned
        deadline = time.monotonic() + 5
        status, fh = mnt(service.port, b"/recover/instant/web01-ir")
        while status != 0 and time.monotonic() < deadline:
            time.sleep(0.1)
            status, fh = mnt(service.port, b"/recover/instant/web01-ir")
        assert status == 0 and fh[0] == 2  # a session handle, within seconds
        code, out = invoke("instant", "start", "--storage", str(demo), *common, "latest/web01")
        assert code == 0 and "web01-ir-2" in out, out
        code, out = invoke("instant", "start", "--storage", str(demo), *common, "nowhere")
        assert code == 2, out
        code, out = invoke("instant", "list", *common)
        assert code == 0 and "web01-ir " in out and "web01-ir-2" in out, out
        target = tmp_path / "out"
        code, out = invoke(
            "instant", "export", "web01-ir", "--to", str(target), "--storage", str(demo), *common
        )
        assert code == 0, out
        presented = demo / "2026-11-22T0100" / "web01" / "web01.vmx"
        assert (target / "web01" / "web01.vmx").read_bytes() == presented.read_bytes()
        assert (target / "web01" / "web01-flat.vmdk").stat().st_size == 6 << 20
        code, out = invoke("instant", "stop", "web01-ir", *common)
        assert code == 0, out
        assert mnt(service.port, b"/recover/instant/web01-ir")[0] != 0
        code, out = invoke("instant", "stop", "web01-ir", *common)
        assert code == 2
        code, out = invoke("instant", "export", "web01-ir-2", "--to", str(demo / "x"), *common)
        assert code == 2 and "inside the storage" in out, out
    finally:
        service.stop()
    assert digest(demo) == before


def test_sizes_are_parsed_exactly() -> None:
    """In integers: through a float, 2^53 + 1 became 2^53 and the largest quota
    the message names was refused."""
    assert parse_size("9007199254740993") == 2**53 + 1
    assert parse_size("9223372036854775807") == 2**63 - 1
    assert parse_size("1.5T") == 3 << 39
    assert parse_size("0.5K") == 512


def _start(demo: Path, state: Path, *args: str) -> tuple[int, str]:
    return invoke(
        "instant", "start", "--storage", str(demo), "--state-dir", str(state), *args,
        "latest/web01",
    )  # fmt: skip


def test_an_empty_name_or_client_list_is_refused_not_taken_for_the_default(
    tmp_path: Path, demo: Path
) -> None:
    """A script's unset ``$NAME`` must not make a session under a name it does not know."""
    state = tmp_path / "state"
    for args in (("--name", ""), ("--clients", ""), ("--clients", "  ")):
        code, out = _start(demo, state, *args)
        assert code == 2, (args, out)
    assert not list((state / "instant").glob("*.json"))


def test_names_that_are_no_session_name_reach_no_file(tmp_path: Path, demo: Path) -> None:
    """``instant stop ../../x`` named a file outside the sessions' folder and removed
    the folder it pointed to; ``export`` read it."""
    state = tmp_path / "state"
    other = tmp_path / "other" / "instant"
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep").write_text("mine")
    other.mkdir(parents=True)
    forged = {"name": "x", "key": "k", "roots": {}, "created": 0, "overlay": str(precious),
              "clients": "127.0.0.1", "quota": None, "sources": {}, "storage": ""}  # fmt: skip
    (other / "x.json").write_text(json.dumps(forged))
    assert _start(demo, state, "--name", "real")[0] == 0
    for name in ("../../other/instant/x", "../instant/real", "real/.", ""):
        code, out = invoke("instant", "stop", name, "--state-dir", str(state))
        assert code == 2 and "no session named" in out, (name, out)
        code, out = invoke(
            "instant", "export", name, "--to", str(tmp_path / "t"), "--state-dir", str(state)
        )
        assert code == 2 and "no session named" in out, (name, out)
    assert (precious / "keep").read_text() == "mine"
    assert (other / "x.json").exists() and (state / "instant" / "real.json").exists()


def test_a_relative_cache_dir_is_kept_absolute(
    tmp_path: Path, demo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The servers (a daemon runs in /) read the overlay's path from the session's file."""
    monkeypatch.chdir(tmp_path)
    state = tmp_path / "state"
    assert _start(demo, state, "--name", "rel", "--cache-dir", "cache")[0] == 0
    overlay = Path(json.loads((state / "instant" / "rel.json").read_text())["overlay"])
    assert overlay.is_absolute() and overlay.parent == tmp_path / "cache" and overlay.is_dir()
    monkeypatch.chdir("/")
    assert invoke("instant", "stop", "rel", "--state-dir", str(state))[0] == 0
    assert not overlay.exists()


def test_a_new_state_directory_is_private(tmp_path: Path, demo: Path) -> None:
    """As ``serve`` makes it: 0700, and its ``instant`` folder too."""
    state = tmp_path / "new" / "state"
    assert _start(demo, state, "--name", "p")[0] == 0
    assert (state.stat().st_mode & 0o777, (state / "instant").stat().st_mode & 0o777) == (
        0o700,
        0o700,
    )


def test_export_of_a_session_whose_overlay_is_missing_fails_and_makes_nothing(
    tmp_path: Path, demo: Path
) -> None:
    """Its disk not mounted, say: an export that wrote the backup unchanged and said
    so would let ``instant stop`` discard the changes it was meant to keep."""
    state, cache = tmp_path / "state", tmp_path / "cachedisk"
    assert _start(demo, state, "--name", "gone", "--cache-dir", str(cache))[0] == 0
    cache.rename(tmp_path / "unmounted")
    target = tmp_path / "exported"
    code, out = invoke(
        "instant", "export", "gone", "--to", str(target), "--storage", str(demo),
        "--state-dir", str(state),
    )  # fmt: skip
    assert code != 0 and "missing" in out, out
    assert not cache.exists() and not target.exists()


def test_list_says_which_session_files_it_cannot_read(tmp_path: Path, demo: Path) -> None:
    """A damaged (or, for another user, unreadable) file: never "no sessions"."""
    state = tmp_path / "state"
    assert _start(demo, state, "--name", "good")[0] == 0
    (state / "instant" / "broken.json").write_text("{not json")
    r = CliRunner().invoke(cli.main, ["instant", "list", "--state-dir", str(state)])
    assert r.exit_code == 0 and "good" in r.stdout, r.output
    assert "cannot be read" in r.stderr and "broken" in r.stderr, r.stderr
    (state / "instant" / "good.json").write_text("")
    r = CliRunner().invoke(cli.main, ["instant", "list", "--state-dir", str(state)])
    assert r.exit_code == 1 and "broken, good" in r.stderr, r.output


def test_stop_removes_a_damaged_session_file_and_says_what_is_left(
    tmp_path: Path, demo: Path
) -> None:
    """A file no server can read serves nothing: ``stop`` takes it away (it said
    "no session named", while ``start --name`` said the name was taken)."""
    state = tmp_path / "state"
    assert _start(demo, state, "--name", "dmg")[0] == 0
    (overlay,) = (state / "instant").glob("dmg.*.d")
    (state / "instant" / "dmg.json").write_text("{damaged")
    code, out = invoke("instant", "stop", "dmg", "--state-dir", str(state))
    assert code == 0 and "damaged" in out and str(overlay) in out, out
    assert not (state / "instant" / "dmg.json").exists() and overlay.is_dir()
    assert _start(demo, state, "--name", "dmg")[0] == 0  # the name is free again
