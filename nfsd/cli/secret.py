"""``recovery-fs secret show|install``: one key for servers on several hosts.

Servers over the same storage with the same secret hand out the same
handles, fileids and cookies (``nfsd.service.secrets``), so a client can be
moved between them by a balancer.  ``show`` on one host, ``install`` on
the others, restart them: the secret is read at start.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from nfsd.cli.commands import EXIT_FAILED, EXIT_USAGE, fail, load_config, state_options
from nfsd.service.config import ConfigError
from nfsd.service.secrets import fingerprint, install_secret, load_secret, read_secret_file, show
from nfsd.service.state import StateDir, StateError


@click.group("secret")
def secret_group() -> None:
    """Show or install the key of the file handles (to share it between hosts)."""


@secret_group.command("show")
@state_options
@click.option("--fingerprint", "as_fingerprint", is_flag=True, help="A short, non-secret name.")
def secret_show(config_file: Path | None, state_dir: Path | None, as_fingerprint: bool) -> None:
    """Print the secret as 64 hex digits (created if there is none yet).

    Keep it as you would a password: anyone holding it can forge handles.
    """
    cfg = load_config(config_file, {"state_dir": state_dir})
    state = StateDir(cfg.state_dir)
    try:
        if cfg.secret_file is None:
            state.ensure()
        secret = load_secret(cfg.secret_file, state)
    except ConfigError as e:
        fail(str(e), EXIT_USAGE)
    except StateError as e:
        fail(str(e), EXIT_FAILED)
    click.echo(fingerprint(secret) if as_fingerprint else show(secret))


@secret_group.command("install")
@state_options
@click.argument("source", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
def secret_install(config_file: Path | None, state_dir: Path | None, source: Path) -> None:
    """Make SOURCE's secret this host's (64 hex digits or 32 bytes; - reads stdin).

    A running server keeps its secret until restarted; every client must
    then mount again unless the secret was the one it had.
    """
    cfg = load_config(config_file, {"state_dir": state_dir})
    state = StateDir(cfg.state_dir)
    if cfg.secret_file is not None:
        fail(f"the config names a secret-file ({cfg.secret_file}): replace that file", EXIT_USAGE)
    try:
        if str(source) == "-":
            tmp = state.path / ".secret-install"
            state.ensure()
            tmp.write_bytes(sys.stdin.buffer.read())
            try:
                secret = install_secret(tmp, state)
            finally:
                tmp.unlink()
        else:
            read_secret_file(source)
            secret = install_secret(source, state)
    except ConfigError as e:
        fail(str(e), EXIT_USAGE)
    except (StateError, OSError) as e:
        fail(str(e), EXIT_FAILED)
    click.echo(f"secret installed in {state.secret_path} (fingerprint {fingerprint(secret)})")
    if state.running_pid():
        click.echo("recovery-fs: the running server uses it from its next start", err=True)
