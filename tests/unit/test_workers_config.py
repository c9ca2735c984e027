"""Settings of the supervised server: worker counts, shares of the limits, the secret,
the configuration a worker is handed, the mount list the workers share."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nfsd.cli.workers import worker_lines
from nfsd.programs.mountlist import MAX_MOUNT_LIST, SharedMountList
from nfsd.service.config import Config, ConfigError, load
from nfsd.service.limits import limits_for, share
from nfsd.service.secrets import fingerprint, install_secret, parse_secret, read_secret_file
from nfsd.service.state import StateDir
from nfsd.service.worker import config_from_json, config_to_json


@given(st.integers(1, 100_000), st.integers(1, 64))
def test_shares_add_up_to_the_total_the_operator_set(total: int, count: int) -> None:
    shares = [share(total, i, count) for i in range(count)]
    assert max(shares) - min(shares) <= 1
    assert sum(shares) == max(total, count)  # at least one each


def test_limits_per_worker() -> None:
    cfg = Config(max_connections=1024, max_unvalidated=64, idle_timeout=7.0)
    lim = [limits_for(cfg, i, 3) for i in range(3)]
    assert [x.max_connections for x in lim] == [342, 341, 341]
    assert [x.max_unvalidated for x in lim] == [22, 21, 21]
    assert all(x.idle_timeout == 7.0 for x in lim)
    assert limits_for(cfg).max_connections == 1024


def test_workers_and_proxy_from_settings(tmp_path: Path) -> None:
    conf = tmp_path / "c.conf"
    conf.write_text("[server]\nworkers = 3\nproxy-from = 10.0.0.5, 192.0.2.0/24\nsecret-file = s\n")
    cfg = load(conf, {})
    assert cfg.workers == 3 and cfg.worker_count() == 3
    assert cfg.proxy_from == ("10.0.0.5/32", "192.0.2.0/24")
    assert cfg.secret_file == tmp_path / "s"
    assert load(conf, {"workers": 1, "proxy_from": "::1"}).proxy_from == ("::1/128",)
    assert Config().worker_count() >= 1  # 0: the number of cores
    for bad in ({"workers": "x"}, {"workers": 999}, {"proxy_from": "10.0.0.0/33"}):
        with pytest.raises(ConfigError):
            load(None, bad)


def test_a_worker_gets_the_configuration_back_whole() -> None:
    cfg = Config(
        storage=Path("/s"),
        exports=Path("/e"),
        proxy_from=("10.0.0.0/8",),
        secret_file=Path("/k"),
        workers=4,
        max_connections=10,
    )
    assert config_from_json(config_to_json(cfg)) == cfg


def test_secret_text_or_bytes(tmp_path: Path) -> None:
    raw = bytes(range(32))
    assert parse_secret(raw, "x") == raw
    assert parse_secret(raw.hex().encode() + b"\n", "x") == raw
    for bad in (b"", b"zz" * 32, raw[:31], raw.hex().encode()[:63]):
        with pytest.raises(ConfigError):
            parse_secret(bad, "x")
    with pytest.raises(ConfigError, match="cannot read"):
        read_secret_file(tmp_path / "absent")
    (tmp_path / "hex").write_text(raw.hex())
    state = StateDir(tmp_path / "state")
    assert install_secret(tmp_path / "hex", state) == raw
    assert state.secret() == raw
    assert (state.secret_path.stat().st_mode & 0o777) == 0o600
    assert len(fingerprint(raw)) == 16 and raw.hex()[:16] not in fingerprint(raw)


def test_the_shared_mount_list(tmp_path: Path) -> None:
    d = tmp_path / "mounts"
    SharedMountList.reset(d)
    one, two = SharedMountList(d), SharedMountList(d)  # two worker processes
    one.add(b"10.0.0.1", b"/recover/images")
    two.add(b"10.0.0.2", b"/recover/images/dir")
    two.add(b"10.0.0.1", b"/recover/images")
    assert (
        one.entries()
        == two.entries()
        == [
            (b"10.0.0.1", b"/recover/images"),
            (b"10.0.0.2", b"/recover/images/dir"),
        ]
    )
    one.remove_host(b"10.0.0.2")
    two.remove(b"10.0.0.1", b"/recover/images")
    assert one.entries() == []
    for i in range(MAX_MOUNT_LIST + 5):
        one.add(f"h{i}".encode(), b"/p")
    assert len(two.entries()) == MAX_MOUNT_LIST
    SharedMountList.discard(d)
    assert not d.exists() and one.entries() == []


def test_status_lines_of_the_workers() -> None:
    st_ = {
        "listen_mode": "reuseport",
        "workers": [
            {"index": 0, "pid": 11, "ready": True, "connections": 2, "calls": 9, "rss": 3 << 20},
            {"index": 1, "pid": 12, "ready": False, "restarts": 1, "rss": 0},
        ],
        "transport": {"connections": 2, "calls": 9},
        "rss_total": 10 << 20,
    }
    lines = worker_lines(st_)
    assert lines[1] == "    worker 0: pid 11, 2 connections, 9 calls, RSS 3.0 MiB"
    assert (
        lines[2]
        == "    worker 1: pid 12 (starting), 0 connections, 0 calls, RSS 0.0 MiB, restarted 1x"
    )
    assert "2 connections, 9 calls, RSS 10.0 MiB" in lines[3]
    assert worker_lines({"pid": 1}) == []
