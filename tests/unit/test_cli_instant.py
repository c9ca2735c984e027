"""``recovery-fs instant``: start, list, stop, export, against a running server."""

from __future__ import annotations

import hashlib
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
