"""nfsd.cli.storage: ls, check, pancbt inspect/create and demo, run as a user would."""

from __future__ import annotations

import os
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from merge import build_namespace
from merge.demo import MARKER
from nfsd.cli.storage import storage_commands
from tests.unit.merge_helpers import DATA, MIB, ZERO, build, decode, naive_merged, read_all, write

COMMANDS = {c.name: c for c in storage_commands}


def run(*args: str, code: int = 0) -> tuple[str, str]:
    """Run a storage command; its stdout and stderr."""
    command = COMMANDS[args[0]]
    result = CliRunner().invoke(command, list(args[1:]), catch_exceptions=False)
    assert result.exit_code == code, result.output + result.stderr
    return result.stdout, result.stderr


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "storage"
    out, _ = run("demo", "--storage", str(root))
    assert out.startswith("wrote demo storage")
    return root


def test_commands_exported_for_the_main_cli() -> None:
    assert set(COMMANDS) == {"ls", "check", "pancbt", "demo"}
    assert all(isinstance(c, click.Command) for c in storage_commands)
    from nfsd.cli import main

    assert {"ls", "check", "pancbt", "demo"} <= set(main.list_commands(click.Context(main)))


# --- demo -----------------------------------------------------------------------------


def test_demo_is_idempotent_and_force_rebuilds(demo: Path) -> None:
    stamp = (demo / MARKER).stat().st_ino
    out, _ = run("demo", "--storage", str(demo))
    assert out.startswith("kept the demo storage") and (demo / MARKER).stat().st_ino == stamp
    before = {p.relative_to(demo): p.read_bytes() for p in demo.rglob("*") if p.is_file()}
    run("demo", "--storage", str(demo), "--force")
    after = {p.relative_to(demo): p.read_bytes() for p in demo.rglob("*") if p.is_file()}
    assert after == before  # the same bytes, every run
    assert sum(len(b) for b in after.values()) < 8 * MIB


def test_demo_never_touches_a_directory_that_is_not_a_demo(tmp_path: Path) -> None:
    write(tmp_path / "real" / "backup.vmdk", b"precious")
    _, err = run("demo", "--storage", str(tmp_path / "real"), "--force", code=2)
    assert (
        "not touching it" in err and (tmp_path / "real" / "backup.vmdk").read_bytes() == b"precious"
    )


def test_demo_shows_a_chain_of_three_backups(demo: Path) -> None:
    ns = build_namespace(str(demo))
    path = lambda day: (day, "web01", "web01-flat.vmdk")  # noqa: E731
    with ns.open(path("2026-11-20T0100")) as r:
        day1 = read_all(r)
    with ns.open(path("2026-11-21T0100")) as r:
        day2 = read_all(r)
    with ns.open(path("2026-11-22T0100")) as r:
        day3 = read_all(r)
    assert len(day1) == len(day2) == 4 * MIB and len(day3) == 6 * MIB  # grown
    assert day2 != day1 and day2[2 * MIB : 2 * MIB + 65536] == bytes(65536)  # trimmed range
    assert day3[100 * 1024 : 100 * 1024 + 10] == b"day three!"
    assert day3[: 4 * MIB][: 100 * 1024] == day2[: 100 * 1024]
    with ns.open(("latest", "web01", "web01-flat.vmdk")) as r:
        assert read_all(r) == day3
    pancbt = demo / "2026-11-21T0100" / "web01" / "web01-pancbt.vmdk"
    assert naive_merged(day1, pancbt.read_bytes()) == day2  # the independent reading agrees


# --- ls ----------------------------------------------------------------------------------


def test_ls_on_the_demo(demo: Path) -> None:
    out, err = run("ls", "--storage", str(demo))
    lines = out.splitlines()
    by_path = {line.split()[1]: line for line in lines}
    assert by_path["2026-11-20T0100/web01/web01-flat.vmdk"].split()[0] == str(4 * MIB)
    assert by_path["2026-11-20T0100/web01/web01-flat.vmdk"].endswith("passthrough")
    day3 = by_path["2026-11-22T0100/web01/web01-flat.vmdk"]
    assert day3.split()[0] == str(6 * MIB)
    assert "merged: base [link 2026-11-22T0100/web01/web01-flat.vmdk.json" in day3
    assert "-> /2026-11-21T0100/web01/web01-flat.vmdk] + pancbt" in day3
    assert (
        "problems/deep/link-16  link problems/deep/link-16.json -> /problems/deep/disk.img" in out
    )
    assert by_path["latest/"].endswith("directory -> 2026-11-22T0100")
    assert not any(p.endswith(("-pancbt.vmdk", "-flat.vmdk.json")) for p in by_path)
    assert "problems/deep/link-00" not in by_path and "problems/notes.txt" in by_path
    assert "withheld" in err and "see `check`" in err


def test_ls_of_a_subtree_and_of_nothing(demo: Path) -> None:
    out, _ = run("ls", "2026-11-21T0100", "--storage", str(demo))
    assert [line.split()[1] for line in out.splitlines()] == [
        "2026-11-21T0100/",
        "2026-11-21T0100/web01/",
        "2026-11-21T0100/web01/web01-flat.vmdk",
        "2026-11-21T0100/web01/web01.vmdk",
        "2026-11-21T0100/web01/web01.vmx",
    ]
    out, _ = run("ls", "2026-11-21T0100/web01/web01.vmx", "--storage", str(demo))
    assert out.split()[1] == "2026-11-21T0100/web01/web01.vmx"
    run("ls", "nope", "--storage", str(demo), code=1)
    run("ls", "--storage", str(demo / "no-such-dir"), code=2)


# --- check --------------------------------------------------------------------------------


def test_check_on_the_demo_lists_every_problem(demo: Path) -> None:
    out, err = run("check", "--storage", str(demo), code=1)
    lines = out.splitlines()
    assert all(line.startswith(("rule 5: ", "rule 6: ")) for line in lines)
    where = sorted(line.split(": ")[1].removeprefix(f"{os.path.realpath(demo)}/") for line in lines)
    assert where == [
        "problems/bad-name.json",
        "problems/corrupt-pancbt.vmdk",
        "problems/deep/link-00.json",
        "problems/escape-absolute.json",
        "problems/escape-dotdot.json",
        "problems/escape-symlink",
        "problems/escape-via-symlink.json",
        "problems/loop-a.json",
        "problems/loop-b.json",
        "problems/missing-flat.vmdk.json",
        "problems/notes.txt.json",
        "problems/orphan-pancbt.vmdk",
        "problems/resized-pancbt.vmdk",
        "problems/to-directory.json",
        "problems/to-link-file.json",
        "problems/to-pancbt.json",
    ]
    assert err.strip().endswith("16 problem(s)")


def test_check_on_a_clean_storage(tmp_path: Path) -> None:
    write(tmp_path / "d" / "x-flat.vmdk", b"\0" * 10)
    write(tmp_path / "d" / "x-pancbt.vmdk", build([(0, b"y")], 10, base_size=10))
    out, err = run("check", "--storage", str(tmp_path))
    assert out == "" and "0 problem(s)" in err


# --- pancbt ---------------------------------------------------------------------------------


def test_pancbt_inspect_valid(tmp_path: Path) -> None:
    f = write(
        tmp_path / "x-pancbt.vmdk",
        build([(1048576, b"a" * 4096), (2097152, 65536), (11534336, b"b" * 8192)], 12582912,
              base_size=10485760, base_hint=b"day one"),
    )  # fmt: skip
    out, _ = run("pancbt", "inspect", str(f), "--extents")
    assert "disk_size     12582912" in out and "base_size     10485760" in out
    assert "extents       3: 2 DATA, 1 ZERO" in out
    assert "DATA bytes    12288" in out and "ZERO bytes    65536" in out
    assert "table_offset  12800" in out and "base_hint     'day one'" in out
    assert "2097152 +65536        ZERO" in out
    assert out.rstrip().endswith("valid         yes (base size not checked)")
    write(tmp_path / "base", bytes(10485760))
    out, _ = run("pancbt", "inspect", str(f), "--base", str(tmp_path / "base"))
    assert out.rstrip().endswith("valid         yes")
    write(tmp_path / "other", bytes(10))
    out, _ = run("pancbt", "inspect", str(f), "--base", str(tmp_path / "other"), code=1)
    assert "valid         no: rule 8" in out


def test_pancbt_inspect_invalid(tmp_path: Path) -> None:
    raw = bytearray(build([(0, b"x")], 10))
    raw[-1] ^= 1
    f = write(tmp_path / "bad", bytes(raw))
    out, _ = run("pancbt", "inspect", str(f), code=1)
    assert "valid         no: rule 1: table_crc" in out and "disk_size     10" in out
    f = write(tmp_path / "junk", b"junk")
    out, _ = run("pancbt", "inspect", str(f), code=1)
    assert "valid         no: rule 1" in out


def test_pancbt_create_round_trip(tmp_path: Path) -> None:
    base = os.urandom(300_000)
    new = bytearray(base + os.urandom(10_000))
    new[70_000:140_000] = bytes(70_000)
    write(tmp_path / "old.img", base)
    write(tmp_path / "new.img", bytes(new))
    out, _ = run(
        "pancbt", "create", "--base", str(tmp_path / "old.img"), "--new", str(tmp_path / "new.img"),
        "-o", str(tmp_path / "out-pancbt.vmdk"), "--block-size", "4096",
    )  # fmt: skip
    pancbt = (tmp_path / "out-pancbt.vmdk").read_bytes()
    assert naive_merged(base, pancbt) == bytes(new)
    kinds = {kind for *_, kind in decode(pancbt)[1]}
    assert kinds == {DATA, ZERO}
    assert "disk_size 310000" in out and "ZERO bytes" in out


def test_pancbt_create_bad_block_size(tmp_path: Path) -> None:
    write(tmp_path / "a", b"a")
    _, err = run(
        "pancbt", "create", "--base", str(tmp_path / "a"), "--new", str(tmp_path / "a"),
        "-o", str(tmp_path / "o"), "--block-size", "1000", code=2,
    )  # fmt: skip
    assert "power of two" in err and not (tmp_path / "o").exists()


@pytest.mark.parametrize("which", ["--base", "--new"])
def test_pancbt_create_never_writes_over_its_input(tmp_path: Path, which: str) -> None:
    """``-o`` naming an input (or a link to it) is a usage error: it once replaced
    a 1 MiB image with its own 66 KB pancbt, exit 0 (found by a probe)."""
    base, new = os.urandom(65_536), os.urandom(65_536)
    write(tmp_path / "old.img", base)
    write(tmp_path / "new.img", new)
    target = tmp_path / ("old.img" if which == "--base" else "new.img")
    os.symlink(target, tmp_path / "alias")
    for out in (target, tmp_path / "alias"):
        _, err = run(
            "pancbt", "create", "--base", str(tmp_path / "old.img"),
            "--new", str(tmp_path / "new.img"), "-o", str(out), code=2,
        )  # fmt: skip
        assert which in err
    assert (tmp_path / "old.img").read_bytes() == base
    assert (tmp_path / "new.img").read_bytes() == new


def test_pancbt_create_to_a_folder_that_is_not_there_is_a_clear_error(tmp_path: Path) -> None:
    write(tmp_path / "a", b"a" * 4096)
    _, err = run(
        "pancbt", "create", "--base", str(tmp_path / "a"), "--new", str(tmp_path / "a"),
        "-o", str(tmp_path / "missing" / "out"), code=1,
    )  # fmt: skip
    assert "recovery-fs: cannot write" in err and "Traceback" not in err


def test_pancbt_commands_refuse_a_fifo_instead_of_blocking(tmp_path: Path) -> None:
    """A FIFO as the file to inspect or as an input: refused at once (it blocked
    for ever)."""
    os.mkfifo(tmp_path / "fifo")
    write(tmp_path / "a", b"a" * 4096)
    _, err = run("pancbt", "inspect", str(tmp_path / "fifo"), code=2)
    assert "not a regular file" in err
    _, err = run(
        "pancbt", "create", "--base", str(tmp_path / "fifo"), "--new", str(tmp_path / "a"),
        "-o", str(tmp_path / "o"), code=2,
    )  # fmt: skip
    assert "not a regular file" in err and not (tmp_path / "o").exists()


def test_check_and_ls_print_one_line_a_name_whatever_it_holds(tmp_path: Path) -> None:
    """Storage names may hold newlines and escapes: ``check`` prints one line a
    problem and ``ls`` one line an entry, the controls escaped (a FIFO named
    "evil\\n<a forged line>" made ``check`` print 4 lines for 2 problems)."""
    root = tmp_path / "storage"
    write(root / "d" / "ok\nrule 5: forged: a forged problem", b"x")
    os.mkfifo(root / "d" / "evil\n2026-12-03 09:00:00.000 ERROR forged")
    out, err = run("check", "--storage", str(root), code=1)
    assert out.count("\n") == 1 and "evil\\n2026-12-03" in out, out
    assert "1 problem(s)" in err
    out, _ = run("ls", "--storage", str(root))
    assert out.count("\n") == 2 and "ok\\nrule 5: forged" in out, out
