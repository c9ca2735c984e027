"""One log file for several processes: whole lines, never interleaved; rotation noticed."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from nfsd.service.logline import PIPE_BUF, AppendLineHandler, chunks, printable
from nfsd.service.logsetup import LogSetup


@given(st.lists(st.binary(max_size=6000).map(lambda b: b.replace(b"\n", b"")), max_size=8))
def test_chunks_hold_whole_lines_under_pipe_buf(lines: list[bytes]) -> None:
    data = b"".join(line + b"\n" for line in lines)
    pieces = chunks(data)
    assert all(0 < len(p) <= PIPE_BUF and p.endswith(b"\n") for p in pieces)
    out = b"".join(pieces).split(b"\n")[:-1]
    assert len(out) == len(lines)
    for got, want in zip(out, lines, strict=True):
        assert got == want or (len(want) > len(got) and got.endswith(b" [...]"))


WRITER = """
import logging, sys
from pathlib import Path
from nfsd.service.logline import AppendLineHandler
name, path = sys.argv[1], Path(sys.argv[2])
h = AppendLineHandler(path)
h.setFormatter(logging.Formatter(f"{name} %(message)s"))
log = logging.getLogger("w"); log.addHandler(h); log.setLevel(logging.INFO)
for i in range(1500):
    size = (i * 977) % 5000  # up to beyond PIPE_BUF: long lines are cut, never split
    log.info("%d %s.", i, name[-1] * size)
"""


def test_four_processes_never_interleave_a_line(tmp_path: Path) -> None:
    path = tmp_path / "shared.log"
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, f"proc{i}", str(path)]) for i in range(4)
    ]
    for p in procs:
        assert p.wait(60) == 0
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    pattern = re.compile(rb"^proc(\d) (\d+) (\d*)\.$|^proc(\d) (\d+) (\d+) \[\.\.\.\]$")
    seen: dict[bytes, int] = {}
    for line in lines[:-1]:
        m = pattern.match(line)
        assert m is not None, line[:100]
        who = m.group(1) or m.group(4)
        body = m.group(3) if m.group(1) else m.group(6)
        assert set(body) <= {who[0]}, line[:100]  # only its own process's digit
        seen[who] = seen.get(who, 0) + 1
    assert seen == {b"0": 1500, b"1": 1500, b"2": 1500, b"3": 1500}


def test_a_moved_log_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "r.log"
    h = AppendLineHandler(path)
    h.setFormatter(logging.Formatter("%(message)s"))
    rec = logging.LogRecord("x", logging.WARNING, __file__, 1, "%s", ("one",), None)
    h.emit(rec)
    path.rename(tmp_path / "r.log.1")  # logrotate without copytruncate
    rec.args = ("two",)
    h.emit(rec)
    h.close()
    assert (tmp_path / "r.log.1").read_text() == "one\n"
    assert path.read_text() == "two\n"


def test_the_tag_names_the_process_on_each_line(tmp_path: Path) -> None:
    setup = LogSetup(tmp_path / "t.log", debug_level=0, tag="worker 3 pid 77")
    try:
        logging.getLogger("recovery_fs.test").warning("hello")
    finally:
        setup.close()
    line = (tmp_path / "t.log").read_text()
    assert re.match(r"^\S+ \S+ WARNING worker 3 pid 77 recovery_fs.test: hello\n$", line), line


def test_a_name_holding_a_newline_cannot_forge_a_log_line(tmp_path: Path) -> None:
    """A warning naming a storage file called "evil\\n<a whole forged line>" is one
    line, the name's control characters escaped; a traceback still follows on its
    own lines (found by a probe: the forged ERROR line appeared in the log)."""
    forged = "2026-12-03 09:00:00.000 ERROR recovery_fs.rpc: FORGED LOG LINE"
    setup = LogSetup(tmp_path / "t.log", debug_level=0)
    try:
        log = logging.getLogger("recovery_fs.merge")
        log.warning("not presented: %s", f"/storage/evil\n{forged}\r\x1b[2K")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("with a traceback")
    finally:
        setup.close()
    lines = (tmp_path / "t.log").read_text().splitlines()
    assert lines[0].endswith(f"not presented: /storage/evil\\n{forged}\\r\\x1b[2K"), lines[0]
    assert not any(line.startswith("2026-12-03 09:00:00.000") for line in lines)
    assert lines[1].endswith("with a traceback") and lines[2].startswith("Traceback")
    assert lines[-1] == "ValueError: boom"


@given(st.text(), st.text())
def test_printable_is_one_line_and_tells_names_apart(text: str, other: str) -> None:
    """Any text escapes to one line without a control character, and two texts
    never to the same."""
    out = printable(text)
    assert len(out.splitlines()) <= 1
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in out)
    assert (printable(other) == out) == (other == text)
