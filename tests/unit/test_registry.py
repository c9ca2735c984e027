"""The registry file, and logging that follows its debug level while running."""

from __future__ import annotations

import json
import logging
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nfsd.service.logsetup import RPC_LOGGER, LevelWatcher, LogSetup, levels_for
from nfsd.service.registry import DEBUG_LEVEL, Registry, RegistryError, setting
from nfsd.service.state import StateError


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry.json")


# --- the registry -------------------------------------------------------------


def test_default_when_absent(reg: Registry) -> None:
    assert reg.get(DEBUG_LEVEL) == 0
    assert reg.values() == {DEBUG_LEVEL: 0}
    assert reg.signature() is None


def test_set_then_get(reg: Registry) -> None:
    assert reg.set(DEBUG_LEVEL, "3") == 3
    assert reg.get(DEBUG_LEVEL) == 3
    assert json.loads(reg.path.read_text()) == {DEBUG_LEVEL: 3}
    assert reg.set(DEBUG_LEVEL, " 0 ") == 0
    assert Registry(reg.path).get(DEBUG_LEVEL) == 0


def test_written_atomically_and_private(reg: Registry) -> None:
    reg.set(DEBUG_LEVEL, 2)
    assert stat.S_IMODE(reg.path.stat().st_mode) == 0o600
    assert os.listdir(reg.path.parent) == ["registry.json"]  # no temporary left behind


@pytest.mark.parametrize("bad", ["-1", "10", "abc", "3.5", "", "0x3", True, None, 2.0])
def test_bad_values_are_refused_and_nothing_is_written(reg: Registry, bad: object) -> None:
    with pytest.raises(RegistryError, match=r"integer from 0 to 9"):
        reg.set(DEBUG_LEVEL, bad)
    assert not reg.path.exists()


def test_unknown_key(reg: Registry) -> None:
    with pytest.raises(RegistryError, match="unknown registry key"):
        reg.set("appliance.debug.lvl", "1")
    with pytest.raises(RegistryError, match=r"known: appliance\.debug\.level"):
        reg.get("nope")
    with pytest.raises(RegistryError):
        setting("x")


def test_keys_the_server_does_not_know_are_kept(reg: Registry) -> None:
    reg.path.write_text(json.dumps({"future.key": "x"}))
    reg.set(DEBUG_LEVEL, 1)
    assert json.loads(reg.path.read_text()) == {"future.key": "x", DEBUG_LEVEL: 1}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1]", "not a JSON object"),
        ('{"appliance.debug.level": -4}', "bad value"),
    ],
)
def test_a_damaged_file_is_reported(reg: Registry, content: str, message: str) -> None:
    reg.path.write_text(content)
    with pytest.raises(StateError, match=message):
        reg.get(DEBUG_LEVEL)


def test_signature_changes_with_every_write(reg: Registry) -> None:
    reg.set(DEBUG_LEVEL, 1)
    first = reg.signature()
    reg.set(DEBUG_LEVEL, 1)  # same content, new file
    assert reg.signature() != first


# --- levels -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "root", "rpc"),
    [
        (0, logging.WARNING, logging.WARNING),
        (1, logging.INFO, logging.INFO),
        (2, logging.DEBUG, logging.INFO),
        (3, logging.DEBUG, logging.DEBUG),
        (9, logging.DEBUG, logging.DEBUG),
    ],
)
def test_levels_for(level: int, root: int, rpc: int) -> None:
    assert levels_for(level) == (root, rpc)


@pytest.fixture
def logs(tmp_path: Path) -> Iterator[LogSetup]:
    setup = LogSetup(tmp_path / "logs" / "recovery_fs", debug_level=0)
    yield setup
    setup.close()


def test_log_file_format_and_parents(logs: LogSetup, tmp_path: Path) -> None:
    logging.getLogger("recovery_fs.test").warning("hello %d", 42)
    logging.getLogger("recovery_fs.test").info("not at level 0")
    for h in logs.handlers:
        h.flush()
    lines = (tmp_path / "logs" / "recovery_fs").read_text().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith(" WARNING recovery_fs.test: hello 42")
    time.strptime(lines[0][:19], "%Y-%m-%d %H:%M:%S")


def test_per_call_lines_only_from_level_3(logs: LogSetup) -> None:
    rpc, other = logging.getLogger(RPC_LOGGER), logging.getLogger("recovery_fs.nfs")
    logs.set_debug_level(2)
    assert other.isEnabledFor(logging.DEBUG) and not rpc.isEnabledFor(logging.DEBUG)
    assert rpc.isEnabledFor(logging.INFO)
    logs.set_debug_level(3)
    assert rpc.isEnabledFor(logging.DEBUG)
    logs.set_debug_level(0)
    assert not rpc.isEnabledFor(logging.INFO) and not other.isEnabledFor(logging.INFO)


def test_close_gives_back_the_former_levels(tmp_path: Path) -> None:
    root = logging.getLogger()
    before = (root.level, logging.getLogger(RPC_LOGGER).level, list(root.handlers))
    setup = LogSetup(tmp_path / "log", debug_level=3, stderr=True)
    setup.close()
    assert (root.level, logging.getLogger(RPC_LOGGER).level, list(root.handlers)) == before


def test_an_unwritable_log_file_falls_back_to_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("")
    setup = LogSetup(tmp_path / "file" / "log", debug_level=0)  # parent is a file
    try:
        assert setup.file_error is not None and "logging to stderr" in setup.file_error
        assert "cannot write the log file" in capsys.readouterr().err
        assert [type(h) for h in setup.handlers] == [logging.StreamHandler]
    finally:
        setup.close()


def test_a_log_directory_gets_a_file_in_it(tmp_path: Path) -> None:
    setup = LogSetup(tmp_path, debug_level=0)
    try:
        logging.getLogger("recovery_fs.test").error("in the folder")
        for h in setup.handlers:
            h.flush()
        assert "in the folder" in (tmp_path / "recovery_fs.log").read_text()
    finally:
        setup.close()


def test_level_changes_are_logged(logs: LogSetup, tmp_path: Path) -> None:
    logs.set_debug_level(1)
    logs.set_debug_level(0)
    for h in logs.handlers:
        h.flush()
    text = (tmp_path / "logs" / "recovery_fs").read_text()
    assert "debug level 0 -> 1" in text and "debug level 1 -> 0" in text


# --- the watcher ---------------------------------------------------------------


def test_watcher_poll_applies_a_changed_level(reg: Registry, logs: LogSetup) -> None:
    w = LevelWatcher(reg, logs)
    w.poll()
    assert logs.debug_level == 0
    reg.set(DEBUG_LEVEL, 3)
    w.poll()
    assert logs.debug_level == 3
    assert logging.getLogger(RPC_LOGGER).isEnabledFor(logging.DEBUG)
    reg.path.unlink()  # back to the default
    w.poll()
    assert logs.debug_level == 0


def test_watcher_keeps_the_level_when_the_file_is_damaged(reg: Registry, logs: LogSetup) -> None:
    reg.set(DEBUG_LEVEL, 2)
    w = LevelWatcher(reg, logs)
    logs.set_debug_level(2)
    reg.path.write_text("{")
    w.poll()
    assert logs.debug_level == 2


def test_a_running_watcher_follows_within_seconds(reg: Registry, logs: LogSetup) -> None:
    w = LevelWatcher(reg, logs)  # the default interval, about a second
    w.start()
    try:
        reg.set(DEBUG_LEVEL, 3)
        deadline = time.monotonic() + 5
        while logs.debug_level != 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert logs.debug_level == 3
        reg.set(DEBUG_LEVEL, 1)
        deadline = time.monotonic() + 5
        while logs.debug_level != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert logs.debug_level == 1
        assert logging.getLogger().level == logging.INFO
    finally:
        w.stop()
