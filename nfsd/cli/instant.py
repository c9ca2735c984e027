"""``recovery-fs instant start|list|stop|export``: instant-recovery sessions.

A session is made and published here (``instant.sessions``); a running
server, every worker process of it, finds it within a second and serves it
read-write at ``/recover/instant/NAME``.  Nothing needs the server to be
running: a session started while it is down is served when it starts,
and sessions survive restarts.

PATH is a folder of ``/recover/images`` as presented (``latest/web01``,
``/recover/images/latest/web01``) or the same folder by its storage path
(``/storage/2026-11-22T0100/web01``).  Symbolic links in it are resolved
at start (``latest`` is pinned to the dated folder it names then), so a
new backup landing under ``latest`` does not change a running session.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import click

from instant.errors import MAX_FILE_SIZE
from instant.export import export_tree, total_bytes
from instant.namespace import SessionNamespace
from instant.sessions import (
    SessionError,
    SessionRegistry,
    create_session,
    usage,
)
from merge import build_namespace
from merge.namespace import Kind, Namespace, NamespaceError, PresentedPath
from nfsd.cli.commands import EXIT_FAILED, EXIT_USAGE, fail, load_config, state_options
from nfsd.programs import EXPORT_PATH
from nfsd.service.config import Config, ConfigError

QUOTA_MIN = 1 << 20
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGTP]?)(i?B?)?", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``10G``, ``500MiB``, ``1.5T`` or a number of bytes (powers of 1024)."""
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise click.BadParameter(f"{text!r} is not a size (e.g. 20G, 500M)")
    power = " KMGTP".index((m.group(2) or " ").upper())
    whole, _, frac = m.group(1).partition(".")
    # In integers: through a float, sizes past 2^53 bytes lost their last digits.
    return int(whole) * 1024**power + int(frac or "0") * 1024**power // 10 ** len(frac)


def parse_quota(text: str) -> int:
    """A session's quota: a size (:func:`parse_size`) from 1 MiB (room for a
    write's record) to the largest file size (FSSTAT's fields, sqlite's sizes)."""
    n = parse_size(text)
    if not QUOTA_MIN <= n <= MAX_FILE_SIZE:
        raise click.BadParameter(f"{text!r}: a quota is from 1M to {MAX_FILE_SIZE} bytes")
    return n


def human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def resolve_folder(storage: Path, base: Namespace, text: str) -> PresentedPath:
    """The presented path of a folder given as presented or by storage path, links resolved."""
    root = Path(os.path.realpath(storage))
    if text.startswith(EXPORT_PATH + "/"):
        candidate = root / text[len(EXPORT_PATH) + 1 :]
    elif os.path.isabs(text):
        candidate = Path(text)
    else:
        candidate = root / text
    real = Path(os.path.realpath(candidate))
    if real != root and root not in real.parents:
        raise SessionError(f"{text}: not a folder of the storage {storage}")
    presented = real.relative_to(root).parts
    if not presented:
        raise SessionError(f"{text}: the whole storage cannot be a session folder")
    try:
        if base.getattr(presented).kind != Kind.DIR:
            raise SessionError(f"{text}: not a folder")
    except NamespaceError as e:
        raise SessionError(f"{text}: not a presented folder ({e})") from None
    return presented


def _config(config_file: Path | None, **overrides: Any) -> Config:
    return load_config(config_file, overrides)


def storage_option(f: Any) -> Any:
    return click.option(
        "--storage",
        type=click.Path(file_okay=False, path_type=Path),
        help="Storage directory (read only).  [default: /storage]",
    )(f)


@click.group("instant")
def instant_group() -> None:
    """Instant recovery: writable sessions over backup folders, served read-write."""


@instant_group.command("start")
@state_options
@storage_option
@click.option("--name", help="Session name (the export is /recover/instant/NAME).")
@click.option("--quota", help="Most bytes the session may write, e.g. 20G.  [default: none]")
@click.option(
    "--clients",
    help="Who may mount, exports(5) syntax, options default rw,no_root_squash, "
    "e.g. '10.0.0.5 esxi*.example(insecure)'.  [default: loopback]",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the overlay goes.  [default: the state directory]",
)
@click.argument("paths", nargs=-1, required=True)
def instant_start(
    *,
    config_file: Path | None,
    state_dir: Path | None,
    storage: Path | None,
    name: str | None,
    quota: str | None,
    clients: str | None,
    cache_dir: Path | None,
    paths: tuple[str, ...],
) -> None:
    """Start a session holding each PATH's folder under its own name."""
    cfg = _config(config_file, state_dir=state_dir, storage=storage)
    limit = parse_quota(quota) if quota is not None else None
    try:
        cfg.check_storage()
        base = build_namespace(str(cfg.storage))
        roots: dict[str, PresentedPath] = {}
        sources: dict[str, str] = {}
        for text in paths:
            presented = resolve_folder(cfg.storage, base, text)
            folder = presented[-1]
            if folder in roots:
                raise SessionError(f"two folders named {folder}")
            roots[folder], sources[folder] = presented, text
        registry = SessionRegistry(cfg.state_dir)
        if name is None:  # not given; an empty one ("$NAME" unset) is refused below
            name = _free_name(registry, f"{next(iter(roots))}-ir")
        if clients is not None and not clients.strip():
            raise SessionError("an empty client list (--clients): no one could mount it")
        if cache_dir is not None:
            _outside(cfg.storage, cache_dir)
        info = create_session(
            registry, base, name, roots, cache_dir=cache_dir, clients=clients, quota=limit,
            sources=sources, storage=str(cfg.storage.resolve()),
        )  # fmt: skip
    except (SessionError, ConfigError) as e:
        fail(str(e), EXIT_USAGE)
    except OSError as e:
        fail(f"cannot make the session: {e}", EXIT_FAILED)
    click.echo(f"session {info.name}: {info.export_path}")
    for folder, where in info.roots.items():
        click.echo(f"  {folder}/  from /recover/images/{'/'.join(where)}")
    click.echo(f"  clients: {info.clients}")
    if info.quota:
        click.echo(f"  quota: {human(info.quota)}")


def _free_name(registry: SessionRegistry, wanted: str) -> str:
    name, n = wanted, 1
    while registry.get(name) is not None:
        n += 1
        name = f"{wanted}-{n}"
    return name


def _outside(storage: Path, path: Path) -> None:
    root = Path(os.path.realpath(storage))
    real = Path(os.path.realpath(path))
    if real == root or root in real.parents:
        raise SessionError(f"{path} is inside the storage: recovery-fs never writes there")


@instant_group.command("list")
@state_options
def instant_list(config_file: Path | None, state_dir: Path | None) -> None:
    """Every session: folders, age, bytes written, quota used, clients seen lately."""
    cfg = _config(config_file, state_dir=state_dir)
    registry = SessionRegistry(cfg.state_dir)
    try:
        files = registry.names()
    except OSError as e:
        fail(f"cannot read the sessions in {registry.dir}: {e.strerror}", EXIT_FAILED)
    sessions = [info for n in files if (info := registry.get(n)) is not None]
    unread = sorted(set(files) - {s.name for s in sessions})
    if unread:  # not the server's user, or a damaged file: never "no sessions"
        click.echo(
            f"recovery-fs: {len(unread)} session file(s) in {registry.dir} cannot be read "
            f"(permissions, or damaged): {', '.join(unread)}",
            err=True,
        )
    if not sessions:
        click.echo("no instant-recovery sessions")
        if unread:
            raise click.exceptions.Exit(EXIT_FAILED)
        return
    click.echo(f"{'NAME':<20} {'CREATED':<20} {'WRITTEN':>10} {'QUOTA USED':>12}  FOLDERS; CLIENTS")
    for info in sessions:
        u = usage(registry, info)
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.created))
        used = f"{100 * u.held / info.quota:.0f}%" if info.quota else "-"
        folders = ",".join(info.roots)
        who = ",".join(u.clients) or "none"
        click.echo(
            f"{info.name:<20} {created:<20} {human(u.written):>10} {used:>12}  {folders}; {who}"
        )


@instant_group.command("stop")
@state_options
@click.argument("name")
def instant_stop(config_file: Path | None, state_dir: Path | None, name: str) -> None:
    """Stop a session: its export goes, its overlay (every change) is discarded."""
    cfg = _config(config_file, state_dir=state_dir)
    registry = SessionRegistry(cfg.state_dir)
    try:
        info = registry.remove(name)
    except SessionError as e:
        fail(str(e), EXIT_USAGE)
    if info is None:  # a damaged file: nothing served it; its overlay is not known
        left = ", ".join(map(str, registry.damaged_overlays(name))) or "none found"
        click.echo(
            f"session {name}: its file was damaged and is removed; its overlay is left "
            f"for you to remove (in the sessions' folder: {left})"
        )
        return
    click.echo(f"session {info.name} stopped; its changes are discarded")


@instant_group.command("export")
@state_options
@storage_option
@click.argument("name")
@click.option(
    "--to",
    "target",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="An empty (or new) folder to write the session's folders into.",
)
def instant_export(
    config_file: Path | None, state_dir: Path | None, storage: Path | None, name: str, target: Path
) -> None:
    """Write a session's folders as plain files with every change applied."""
    registry = SessionRegistry(_config(config_file, state_dir=state_dir).state_dir)
    info = registry.get(name)
    if info is None:
        fail(f"no session named {name}", EXIT_USAGE)
    # The storage the session was made from, unless told otherwise.
    cfg = _config(config_file, state_dir=state_dir, storage=storage or info.storage or None)
    try:
        _outside(cfg.storage, target)
        base = build_namespace(str(cfg.storage))
        with SessionNamespace(info.overlay, base, None, quota=info.quota, clean=False) as ns:
            total = total_bytes(ns)
            with click.progressbar(
                length=total, label=f"exporting {name}", show_pos=False, file=None
            ) as bar:
                copied = export_tree(ns, target, bar.update)
    except SessionError as e:
        fail(str(e), EXIT_USAGE)
    except (OSError, NamespaceError) as e:
        fail(f"export failed: {e}", EXIT_FAILED)
    click.echo(f"{human(copied)} written to {target}")
