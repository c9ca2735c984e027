"""Storage commands of ``recovery-fs``: ls, check, pancbt inspect/create, demo.

They work on a storage directory directly, with no server: the same
namespace stack the server builds (``merge.stack``), so ``ls`` shows what a
client would see.  The logic lives in ``merge`` (``report``, ``create``,
``demo``); this module only parses options and prints.

Exit status follows ``nfsd.cli``: 0 done, 1 failed (``check``: problems
found; ``pancbt inspect``: the file is invalid), 2 usage error (a storage
directory that does not exist, a bad option).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, NoReturn, cast

import click

from merge import report
from merge.create import DEFAULT_BLOCK_SIZE, create_pancbt
from merge.demo import DemoError, make_demo
from merge.namespace import NamespaceError
from merge.pancbt import (
    HEADER_SIZE,
    ExtentKind,
    PancbtError,
    check_base_size,
    parse_header,
    read_pancbt,
)
from merge.stack import Stack, build_stack
from nfsd.service.logline import printable

EXIT_FAILED = 1
EXIT_USAGE = 2

_storage_option = click.option(
    "--storage",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The storage directory (what the server exports).",
)


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"recovery-fs: {message}", err=True)
    raise click.exceptions.Exit(code)


def _stack(storage: Path) -> Stack:
    try:
        return build_stack(str(storage))
    except OSError as e:
        _fail(str(e), EXIT_USAGE)


@click.command("ls")
@click.argument("path", default="")
@_storage_option
def ls_command(path: str, storage: Path) -> None:
    """List the presented tree at PATH (default: all) with sizes and origins.

    One line an entry: size in bytes (- for a directory), presented path,
    and where the bytes come from: passthrough, a SmartMotion link and its
    target, or a merge of a base and a pancbt.  Entries withheld by rule 5
    are not listed: see `check`.
    """
    stack = _stack(storage)
    start = tuple(p for p in path.split("/") if p)
    with report.quiet():
        try:
            for line in report.ls_lines(stack, start):
                click.echo(printable(line))
        except NamespaceError as e:
            _fail(f"{path}: not a presented path ({type(e).__name__})", EXIT_FAILED)
        finally:
            stack.close()
        withheld = len(stack.problems.all())
    if withheld:
        click.echo(f"({withheld} storage entries withheld or ignored: see `check`)", err=True)


@click.command("check")
@_storage_option
def check_command(storage: Path) -> None:
    """Report every storage entry that is not presented, and why.

    One line a problem: storage path, reason, rule (5: withheld, 6: a link
    ignored for a name clash).  Exit status 1 when there is any.
    """
    stack = _stack(storage)
    with report.quiet():
        try:
            if sys.stdout.isatty():
                total = len(stack.top.listing(()).entries)
                with click.progressbar(length=total, label="checking", file=sys.stderr) as bar:
                    problems = report.check(stack, bar.update)
            else:
                problems = report.check(stack)
        finally:
            stack.close()
    for problem in problems:
        click.echo(printable(str(problem)))
    click.echo(f"{len(problems)} problem(s)", err=True)
    if problems:
        raise click.exceptions.Exit(EXIT_FAILED)


@click.group("pancbt")
def pancbt_group() -> None:
    """Inspect and create -pancbt.vmdk files (shared/spec/pancbt.md)."""


@pancbt_group.command("inspect")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--base",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The base image, to check its size against base_size (rule 8).",
)
@click.option("--extents", "show_extents", is_flag=True, help="Also list every extent.")
def inspect_command(file: Path, base: Path | None, show_extents: bool) -> None:
    """Show a pancbt file's header and extents, and whether it is valid.

    Exit status 1 when the file breaks a rule of "What a valid file is".
    """
    with _regular(file, "rb") as f:
        size = os.fstat(f.fileno()).st_size

        def pread(pos: int, n: int) -> bytes:
            return os.pread(f.fileno(), n, pos)

        click.echo(f"file          {file} ({size} bytes)")
        try:
            pancbt = read_pancbt(pread, size, str(file))
        except PancbtError as e:
            _show_header(pread, size)
            click.echo(f"valid         no: rule {e.rule}: {e.message}")
            raise click.exceptions.Exit(EXIT_FAILED) from None
    h = pancbt.header
    created = datetime.datetime.fromtimestamp(h.created, datetime.UTC).isoformat()
    data = [ext for ext in pancbt.extents if ext.kind == ExtentKind.DATA]
    click.echo(f"version       {h.version}, flags {h.flags}, header_size {h.header_size}")
    click.echo(f"disk_size     {h.disk_size}")
    click.echo(f"base_size     {h.base_size}{' (not checked)' if h.base_size == 0 else ''}")
    click.echo(f"block_size    {h.block_size}")
    click.echo(f"created       {h.created} ({created})")
    click.echo(f"base_hint     {h.hint!r}")
    click.echo(f"table_offset  {h.table_offset}")
    click.echo(
        f"extents       {len(pancbt.extents)}: {len(data)} DATA, "
        f"{len(pancbt.extents) - len(data)} ZERO"
    )
    click.echo(f"DATA bytes    {pancbt.data_bytes}")
    click.echo(f"ZERO bytes    {pancbt.zero_bytes}")
    if show_extents:
        for ext in pancbt.extents:
            kind = ExtentKind(ext.kind).name
            click.echo(
                f"  {ext.offset:>14} +{ext.length:<12} {kind:<4} data_offset {ext.data_offset}"
            )
    if base is not None:
        try:
            check_base_size(pancbt, base.stat().st_size, str(file))
        except PancbtError as e:
            click.echo(f"valid         no: rule {e.rule}: {e.message}")
            raise click.exceptions.Exit(EXIT_FAILED) from None
    click.echo("valid         yes" + ("" if base is not None else " (base size not checked)"))


def _show_header(pread: Callable[[int, int], bytes], size: int) -> None:
    """The header fields of an invalid file, when they can be read at all."""
    try:
        h = parse_header(pread(0, HEADER_SIZE), size, "-")
    except PancbtError:
        return
    click.echo(f"disk_size     {h.disk_size}")
    click.echo(f"base_size     {h.base_size}")
    click.echo(f"extents       {h.extent_count} at {h.table_offset}")


@contextlib.contextmanager
def _regular(path: Path, mode: str) -> Iterator[BinaryIO]:
    """``path`` opened if it is a regular file, else a usage error: a FIFO would
    block the command for ever (opened without waiting, then checked)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise click.BadParameter(f"{path}: {e.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise click.BadParameter(f"{path} is not a regular file")
    os.set_blocking(fd, True)
    with os.fdopen(fd, mode) as f:
        yield cast(BinaryIO, f)


@pancbt_group.command("create")
@click.option(
    "--base",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The older raw image (what the pancbt is applied to).",
)
@click.option(
    "--new",
    "new",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The newer raw image (what base + pancbt must read as).",
)
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False))
@click.option(
    "--block-size",
    default=DEFAULT_BLOCK_SIZE,
    show_default=True,
    type=int,
    help="Comparison granularity: a power of two from 512 to 64 MiB.",
)
def create_command(base: Path, new: Path, out: str, block_size: int) -> None:
    """Write OUT, the pancbt of NEW over BASE, comparing them block by block.

    Streams: memory does not depend on the images' size.  Changed blocks
    become DATA extents, blocks now all zeros ZERO extents; neighbours are
    coalesced.  base_size is set, so the file is refused over another base.
    """
    if not 512 <= block_size <= 64 * 1024 * 1024 or block_size & (block_size - 1):
        raise click.BadParameter("not a power of two from 512 to 64 MiB", param_hint="--block-size")
    for given, what in ((base, "--base"), (new, "--new")):
        with _regular(given, "rb"):
            pass
        if os.path.exists(out) and os.path.samefile(given, out):
            raise click.BadParameter(f"{out} is the {what} image", param_hint="-o")
    total = new.stat().st_size
    try:
        with click.progressbar(length=total, label="comparing", file=sys.stderr) as bar:
            header = create_pancbt(
                str(base), str(new), out, block_size=block_size, progress=bar.update
            )
    except OSError as e:
        _fail(f"cannot write {out}: {e.strerror or e}", EXIT_FAILED)
    size = os.path.getsize(out)
    with open(out, "rb") as f:
        pancbt = read_pancbt(lambda p, n: os.pread(f.fileno(), n, p), size, out)
    click.echo(
        f"{out}: {size} bytes, disk_size {header.disk_size}, {header.extent_count} extents, "
        f"{pancbt.data_bytes} DATA bytes, {pancbt.zero_bytes} ZERO bytes"
    )


@click.command("demo")
@click.option(
    "--storage",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write the demo storage.",
)
@click.option("--force", is_flag=True, help="Rebuild it even if a demo storage is there.")
def demo_command(storage: Path, force: bool) -> None:
    """Write a small demo storage (a few MB) showing every rule of namespace.md.

    Idempotent: a directory already holding a demo storage is left alone
    unless --force; a non-empty directory that is not one is never touched.
    """
    try:
        made = make_demo(storage, force=force)
    except DemoError as e:
        _fail(str(e), EXIT_USAGE)
    click.echo(f"{'wrote' if made else 'kept the'} demo storage in {storage}")


storage_commands: list[click.Command] = [
    ls_command,
    check_command,
    pancbt_group,
    demo_command,
]
