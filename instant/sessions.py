"""The on-disk registry of instant-recovery sessions, shared by the CLI and every server process.

Design notes
------------
A session is published by one file, ``<state>/instant/<name>.json``
(:class:`SessionInfo`), written last and atomically (temporary file,
``fsync``, ``rename``, ``fsync`` of the folder).  Its overlay directory
(``instant.namespace``'s database and data logs) is made *before* the file
appears, so a server that sees the file finds a complete session; the
overlay lives in the state directory or a cache directory, never in the
storage.

Identity: each session has a random 64-bit ``key`` that server handles
carry.  A stopped session's file is gone, and a new session of the same
name has another key, so no handle of the old one can reach it: clients
get ``NFS3ERR_STALE``, never the old bytes.

Stopping removes the file first (from then on every server answers STALE:
servers check the file on each call of a session), then the overlay.

Several processes (the CLI, server workers) read the folder; only the CLI
writes it.  Servers notice changes by listing the folder (names and inodes of the
files) a few times a second, and re-read it when that moved.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

from exports import ExportsError, ExportTable
from exports import parse as parse_exports
from merge.namespace import Namespace, NamespaceError, PresentedPath

EXPORT_PREFIX = "/recover/instant/"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
DEFAULT_CLIENTS = "127.0.0.1(insecure) ::1(insecure)"
DEFAULT_OPTIONS = "rw,no_root_squash"


class SessionError(Exception):
    """A session cannot be made, found or removed (the message says why)."""


@dataclass(frozen=True)
class SessionInfo:
    """What publishes one session; the JSON file's fields."""

    name: str
    key: str  # 16 hex digits: the handles' session key
    roots: dict[str, list[str]]  # folder name at the session root → presented path
    created: float
    overlay: str  # the session's directory (instant.namespace)
    clients: str = DEFAULT_CLIENTS  # exports(5) client list, options default rw,no_root_squash
    quota: int | None = None
    sources: dict[str, str] = field(default_factory=dict)  # folder name → as the user gave it
    storage: str = ""  # the storage directory the folders were read from

    @cached_property
    def export_path(self) -> str:
        """Made once: the access check's memo of its last decision finds a
        session's calls by this string's identity (``AccessControl.decide``)."""
        return EXPORT_PREFIX + self.name

    @property
    def key_bytes(self) -> bytes:
        return bytes.fromhex(self.key)

    def presented_roots(self) -> dict[str, PresentedPath]:
        return {name: tuple(path) for name, path in self.roots.items()}

    def exports_line(self) -> str:
        """The session's line in exports(5) syntax: its path, defaults, clients."""
        return f"{self.export_path} -{DEFAULT_OPTIONS} {self.clients}\n"

    def exports_table(self) -> ExportTable:
        """:meth:`exports_line` parsed: one export, of this session's path alone.

        The client list is one line of hosts and options: a newline, a ``#`` or a
        ``\\`` in it would make more lines of the table every session's exports
        are merged into (another session's path, with clients of this one's
        choosing), so anything but that one export is refused here.  Raises
        ``ExportsError``."""
        if any(c in self.clients for c in "\n\r#\\") or not self.clients.isprintable():
            raise ExportsError("a client list is hosts and options on one line")
        t = parse_exports(self.exports_line(), self.name, allow_rw=True)
        if [e.path for e in t.exports] != [self.export_path]:
            raise ExportsError(f"a client list must export {self.export_path} alone")
        return t


def _fsync_dir(path: Path) -> None:
    """``instant.store``'s, imported when the CLI publishes or removes a session.

    Like sqlite3 and ``instant.namespace`` (imported by the functions that
    use them), so that a server process, which only reads the registry,
    imports none of them before a session exists (3 to 4 MB a worker).
    """
    from instant.store import _fsync_dir as fsync_dir  # noqa: PLC0415

    fsync_dir(path)


def check_session_name(name: str) -> None:
    if not NAME_RE.fullmatch(name):
        raise SessionError(
            f"bad session name {name!r}: 1 to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )


def file_ident(st: os.stat_result) -> tuple[int, int]:
    """A registry file's identity: its inode and its ctime.

    Not the inode alone: a session stopped and started again under its name
    gets a new file, and ext4 often gives it the inode the old one had; the
    servers would then go on serving the stopped session (its old handles, its
    old client list, writes into its removed overlay).  The new file's ctime
    is when it was made, not the old one's."""
    return st.st_ino, st.st_ctime_ns


def new_key() -> str:
    return secrets.token_hex(8)


class SessionRegistry:
    """The ``instant`` folder of a state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir) / "instant"

    def path_of(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def stamp(self) -> tuple[tuple[str, tuple[int, int]], ...]:
        """Changes whenever a session is published or removed: names and files
        (:func:`file_ident`)."""
        out = []
        try:
            with os.scandir(self.dir) as it:
                for e in it:
                    if e.name.endswith(".json"):
                        try:
                            out.append((e.name, file_ident(e.stat(follow_symlinks=False))))
                        except FileNotFoundError:  # removed meanwhile
                            continue
        except FileNotFoundError:
            return ()
        return tuple(sorted(out))

    def names(self) -> list[str]:
        """The names of every session file, read or not (OSError but for no folder)."""
        try:
            return sorted(p[: -len(".json")] for p in os.listdir(self.dir) if p.endswith(".json"))
        except FileNotFoundError:
            return []

    def list(self) -> list[SessionInfo]:
        """Every published session, by name; unreadable files are skipped."""
        out = []
        for n in self.names():
            info = self.get(n)
            if info is not None:
                out.append(info)
        return out

    def get(self, name: str) -> SessionInfo | None:
        """The session published as ``name``; None if there is none, its file cannot
        be read, or ``name`` is no session name (``../x`` names no file here)."""
        if not NAME_RE.fullmatch(name):
            return None
        try:
            raw = json.loads(self.path_of(name).read_text())
            raw["roots"] = {k: list(v) for k, v in raw["roots"].items()}
            return SessionInfo(**raw)
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def clients_dir(self, name: str) -> Path:
        """One empty file per client address, touched by the servers that see it call."""
        return self.dir / f"{name}.clients"

    def touch_client(self, name: str, address: str) -> None:
        folder = self.clients_dir(name)
        folder.mkdir(exist_ok=True, mode=0o700)
        (folder / address.replace("/", "_")).touch()

    def overlay_for(self, name: str, key: str, cache_dir: Path | None) -> Path:
        """Absolute: the servers (started elsewhere, a daemon in /) read the path
        from the session's file."""
        return Path(cache_dir or self.dir).absolute() / f"{name}.{key}.d"

    def damaged_overlays(self, name: str) -> tuple[Path, ...]:
        """Overlays in the sessions' folder a damaged session ``name`` may have had
        (those made without ``--cache-dir``): for the operator to look at."""
        return tuple(sorted(self.dir.glob(f"{name}.*.d")))

    def make_dir(self) -> None:
        """The ``instant`` folder, and the state directory if missing, both 0700 as
        ``serve`` makes the state directory (an overlay's ``mkdir(parents=True)``
        made them 0755: any user could list the sessions)."""
        self.dir.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.dir.mkdir(exist_ok=True, mode=0o700)

    def publish(self, info: SessionInfo) -> None:
        """Write the session's file atomically; refuse a name in use."""
        self.make_dir()
        target = self.path_of(info.name)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=f".{info.name}.")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(asdict(info), f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            # link, not rename: never replaces a session published meanwhile
            try:
                os.link(tmp, target)
            except FileExistsError:
                raise SessionError(f"a session named {info.name} exists") from None
        finally:
            os.unlink(tmp)
        _fsync_dir(self.dir)

    def remove(self, name: str) -> SessionInfo | None:
        """Unpublish ``name`` (servers answer STALE from then on), then discard its
        overlay.  None: its file was there but damaged (no server serves it), and is
        removed; the overlay it named cannot be known (``damaged_overlays``)."""
        info = self.get(name)
        if info is None and name in self.names():
            try:
                self.path_of(name).unlink()
            except FileNotFoundError:
                raise SessionError(f"no session named {name}") from None
            _fsync_dir(self.dir)
            return None
        if info is None:
            raise SessionError(f"no session named {name}")
        self.path_of(name).unlink()
        _fsync_dir(self.dir)
        if os.path.isabs(info.overlay):  # a relative one (older versions) names no place
            shutil.rmtree(info.overlay, ignore_errors=True)
        shutil.rmtree(self.clients_dir(name), ignore_errors=True)
        return info


def make_info(
    name: str,
    roots: Mapping[str, PresentedPath],
    overlay: Path,
    key: str,
    *,
    clients: str | None = None,
    quota: int | None = None,
    sources: Mapping[str, str] | None = None,
    storage: str = "",
) -> SessionInfo:
    return SessionInfo(
        name=name,
        key=key,
        roots={k: list(v) for k, v in roots.items()},
        created=time.time(),
        overlay=str(overlay),
        clients=clients or DEFAULT_CLIENTS,
        quota=quota,
        sources=dict(sources or {}),
        storage=storage,
    )


def create_session(
    registry: SessionRegistry,
    base: Namespace,
    name: str,
    roots: Mapping[str, PresentedPath],
    *,
    cache_dir: Path | None = None,
    clients: str | None = None,
    quota: int | None = None,
    sources: Mapping[str, str] | None = None,
    storage: str = "",
) -> SessionInfo:
    """Make a session's overlay (folders copied from ``base``), then publish it.

    The overlay is complete before the registry file appears; a failure
    leaves no file and removes the overlay.
    """
    check_session_name(name)
    if registry.get(name) is not None:
        raise SessionError(f"a session named {name} exists")
    if not roots:
        raise SessionError("a session needs at least one folder")
    key = new_key()
    overlay = registry.overlay_for(name, key, cache_dir)
    info = make_info(
        name, roots, overlay, key, clients=clients, quota=quota, sources=sources, storage=storage
    )
    try:
        info.exports_table()
    except ExportsError as e:
        raise SessionError(f"bad client list: {e}") from None
    from instant.namespace import SessionNamespace  # noqa: PLC0415  (see _fsync_dir)

    try:
        registry.make_dir()
        overlay.mkdir(parents=True, mode=0o700)
        SessionNamespace(overlay, base, roots, quota=quota, clean=False).close()
        registry.publish(info)
    except NamespaceError as e:  # the folders cannot make one session: a usage error
        shutil.rmtree(overlay, ignore_errors=True)
        raise SessionError(str(e)) from None
    except BaseException:
        shutil.rmtree(overlay, ignore_errors=True)
        raise
    return info


@dataclass(frozen=True)
class SessionUsage:
    """What ``instant list`` shows of a session's overlay."""

    written: int  # bytes the data logs ever took (given back by the cleaning or not)
    held: int  # bytes in the data logs now (what the quota counts)
    live: int  # bytes the maps point at
    clients: list[str]  # clients seen lately by any server process


def usage(registry: SessionRegistry, info: SessionInfo, seen_for: float = 600.0) -> SessionUsage:
    """Read the overlay's figures without writing anything (sqlite opened read-only)."""
    import sqlite3  # noqa: PLC0415  (see _fsync_dir)

    from instant.db import DB_NAME, GIVEN_BACK  # noqa: PLC0415

    held = given = live = 0
    db_path = Path(info.overlay) / DB_NAME
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
        try:
            held = conn.execute("SELECT COALESCE(SUM(end), 0) FROM logs").fetchone()[0]
            live = conn.execute("SELECT COALESCE(SUM(length), 0) FROM pieces").fetchone()[0]
            row = conn.execute("SELECT value FROM meta WHERE key=?", (GIVEN_BACK,)).fetchone()
            given = row[0] if row else 0
        finally:
            conn.close()
    except sqlite3.Error:
        pass
    now = time.time()
    clients = []
    folder = registry.clients_dir(info.name)
    try:
        with os.scandir(folder) as it:
            clients = sorted(e.name for e in it if now - e.stat().st_mtime < seen_for)
    except FileNotFoundError:
        pass
    return SessionUsage(held + given, held, live, clients)
