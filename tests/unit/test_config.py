"""Settings: defaults, the INI file, the command line, and their precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from nfsd.service import config
from nfsd.service.config import Config, ConfigError, load


@pytest.fixture(autouse=True)
def no_system_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The machine's /etc/recovery_fs.conf must not leak into the tests."""
    monkeypatch.setattr(config, "DEFAULT_CONFIG_FILE", tmp_path / "absent.conf")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults() -> None:
    c = load(None, {})
    assert c == Config()
    assert (c.storage, c.bind, c.port, c.portmap) == (Path("/storage"), "0.0.0.0", 2049, True)
    assert c.state_dir == Path("/var/lib/recovery_fs")
    assert c.log_file == Path("/var/log/recovery_fs")
    assert c.export_path == "/recover/images"


def test_file_values(tmp_path: Path) -> None:
    f = write(
        tmp_path / "r.conf",
        "[server]\nstorage = /data/backups\nbind = 127.0.0.1\nport = 20490\n"
        "portmap = no\nstate-dir = /tmp/st\nlog_file = /tmp/log\n",
    )
    c = load(f, {})
    assert c.storage == Path("/data/backups")
    assert (c.bind, c.port, c.portmap) == ("127.0.0.1", 20490, False)
    assert (c.state_dir, c.log_file) == (Path("/tmp/st"), Path("/tmp/log"))


def test_command_line_overrides_the_file(tmp_path: Path) -> None:
    f = write(tmp_path / "r.conf", "[server]\nport = 20490\nbind = 127.0.0.1\nportmap = no\n")
    c = load(f, {"port": 3049, "bind": None, "portmap": True})
    assert c.port == 3049  # given: wins
    assert c.bind == "127.0.0.1"  # not given (None): the file's
    assert c.portmap is True


def test_the_default_file_is_read_when_present(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    f = write(tmp_path / "etc.conf", "[server]\nport = 1234\n")
    monkeypatch.setattr(config, "DEFAULT_CONFIG_FILE", f)
    assert load(None, {}).port == 1234
    assert load(None, {"port": 99}).port == 99


def test_an_explicit_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "missing.conf", {})


def test_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "etc").mkdir()
    f = write(tmp_path / "etc" / "r.conf", "[server]\nstorage = ../data\n")
    assert load(f, {}).storage == tmp_path / "etc" / ".." / "data"  # from the file's folder
    monkeypatch.chdir(tmp_path)
    assert load(None, {"state_dir": Path("st")}).state_dir == tmp_path / "st"  # from the cwd


def test_an_empty_file_or_section_is_fine(tmp_path: Path) -> None:
    assert load(write(tmp_path / "a.conf", ""), {}) == Config()
    assert load(write(tmp_path / "b.conf", "[server]\n# nothing\n"), {}) == Config()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nprot = 1\n", "unknown setting"),
        ("[server]\nport = http\n", "not a number"),
        ("[server]\nport = 70000\n", r"not in 0\.\.65535"),
        ("[server]\nbind = localhost\n", "not an IP address"),
        ("[server]\nportmap = maybe\n", "portmap"),
        ("[server]\nstorage =\n", "empty path"),
        ("[nfs]\nport = 1\n", r"unknown section \[nfs\]"),
        ("port = 1\n", "not a valid INI file"),
        ("[server]\nport = 1\nport = 2\n", "not a valid INI file"),
    ],
)
def test_file_errors_name_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    f = write(tmp_path / "bad.conf", text)
    with pytest.raises(ConfigError, match=message) as e:
        load(f, {})
    assert str(f) in str(e.value)


def test_command_line_errors() -> None:
    with pytest.raises(ConfigError, match="not an IP address"):
        load(None, {"bind": "nowhere"})
    with pytest.raises(ConfigError, match="not in"):
        load(None, {"port": -1})


def test_ipv6_and_bracketed_binds() -> None:
    assert load(None, {"bind": "::"}).bind == "::"
    assert load(None, {"bind": "[::1]"}).bind == "::1"
    assert load(None, {"bind": "0:0::0:1"}).bind == "::1"


def test_unreadable_file(tmp_path: Path) -> None:
    f = write(tmp_path / "bin.conf", "")
    f.write_bytes(b"[server]\nport = \xff\n")
    with pytest.raises(ConfigError, match="not a valid INI"):
        load(f, {})


# --- the storage check ------------------------------------------------------


def test_storage_must_exist_and_be_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Config(storage=tmp_path / "nope").check_storage()
    write(tmp_path / "file", "x")
    with pytest.raises(ConfigError, match="not a directory"):
        Config(storage=tmp_path / "file").check_storage()
    Config(
        storage=tmp_path, state_dir=tmp_path.parent / "st", log_file=tmp_path.parent / "l"
    ).check_storage()


@pytest.mark.parametrize("inside", ["state_dir", "log_file"])
def test_nothing_may_be_written_into_the_storage(tmp_path: Path, inside: str) -> None:
    (tmp_path / "storage").mkdir()
    paths = {"state_dir": tmp_path / "st", "log_file": tmp_path / "log"}
    paths[inside] = tmp_path / "storage" / "sub"
    c = Config(tmp_path / "storage", state_dir=paths["state_dir"], log_file=paths["log_file"])
    with pytest.raises(ConfigError, match="never writes into the storage"):
        c.check_storage()


def test_limits_from_the_file_and_the_command_line(tmp_path: Path) -> None:
    f = tmp_path / "c.conf"
    f.write_text("[server]\nmax-connections = 10\nidle_timeout = 2.5\nmax-unsent = 65536\n")
    c = load(f, {"max_unvalidated": 3})
    assert (c.max_connections, c.idle_timeout, c.max_unsent, c.max_unvalidated) == (
        10,
        2.5,
        65536,
        3,
    )
    assert c.record_timeout == 30.0 and c.max_inflight == 16  # the defaults
    for bad in ("max-connections = 0", "record-timeout = soon", "max-inflight = -1"):
        f.write_text(f"[server]\n{bad}\n")
        with pytest.raises(ConfigError, match=bad.split(" ")[0].replace("_", "-")):
            load(f, {})
