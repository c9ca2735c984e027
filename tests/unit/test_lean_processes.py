"""The supervisor's process stays lean (``nfsd.service.supervisor``'s notes).

``recovery-fs serve`` with workers is the supervisor for as long as the
server runs: it must not import what only serves calls (namespace, NFS
procedures) or what only other commands use (``cryptography`` for
``tls init``); and what it registers with the portmapper, without building
the programs, must be what the workers serve.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from merge import build_namespace
from nfsd.cli.commands import LAZY_COMMANDS, main
from nfsd.programs.build import build_programs
from nfsd.rpc import Program
from nfsd.service.supervisor import advertised_programs
from tests.proto.nfsclient import SECRET, open_access

SERVING_ONLY = (
    "merge",
    "instant",
    "construct",
    "cryptography",
    "nfsd.programs.build",
    "nfsd.programs.nfs3",
    "nfsd.service.serving",
)


def test_the_supervisor_imports_nothing_that_serves() -> None:
    code = "import sys, nfsd.cli, nfsd.service.supervisor; print(*sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    loaded = [m for m in out if any(m == p or m.startswith(p + ".") for p in SERVING_ONLY)]
    assert loaded == []


def _shape(programs: list[Program]) -> list[tuple[int, str, list[int], bool]]:
    return [(p.number, p.name, sorted(p.versions), p.udp) for p in programs]


@pytest.mark.parametrize("udp", [False, True])
def test_advertised_programs_are_the_served_ones(tmp_path: Path, udp: bool) -> None:
    (tmp_path / "file").write_bytes(b"x")
    served = build_programs(build_namespace(str(tmp_path)), SECRET, open_access(), udp=udp)
    assert _shape(advertised_programs(udp=udp)) == _shape(served)


def test_lazy_commands_load_when_named() -> None:
    for name in LAZY_COMMANDS:
        result = CliRunner().invoke(main, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert main.commands[name].name == name
