"""The state directory: what the server keeps between runs, never in the storage.

Design notes
------------
===================  ======  ================================================
file                 mode    content
===================  ======  ================================================
(the directory)      0700    created on first use
``secret``           0600    32 random bytes, created once, kept forever: the
                             key of the file handles, so a restarted server,
                             or a second one given this directory, hands out
                             the same handles
``recovery_fs.pid``  0644    the server's PID; the server holds an exclusive
                             ``flock`` on it while it lives
``status.json``      0644    what ``recovery-fs status`` shows (ports, ...)
``registry.json``    0600    the registry (``nfsd.service.registry``)
===================  ======  ================================================

*Running* means "someone holds the lock of the pid file", not "the PID in it
exists": a lock dies with its process, so a stale file after a crash, or a
PID reused by another program, is never taken for a server.

Every file is written atomically (a temporary file in the directory, then
``rename``), so a reader sees the old content or the new, never a part.  The
secret is created with ``link`` instead, which fails if it exists: two
servers starting at once still agree on one secret.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

SECRET_BYTES = 32


class StateError(Exception):
    """The state directory or one of its files is unusable."""


class AlreadyRunning(Exception):
    """Another server holds this state directory."""

    def __init__(self, pid: int | None, pid_file: Path) -> None:
        super().__init__(f"a server is already running (pid {pid or '?'}, {pid_file})")
        self.pid = pid


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` all at once (temporary file + rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read_pid(fd: int) -> int | None:
    """The PID written in an open pid file, None if empty or garbled."""
    try:
        return int(os.pread(fd, 32, 0).decode("ascii").strip())
    except (ValueError, UnicodeDecodeError):
        return None


class PidLock:
    """The pid file, locked for as long as this server lives."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Lock the pid file and write our PID; raises AlreadyRunning."""
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read_pid(fd)
                os.close(fd)
                raise AlreadyRunning(pid, self.path) from None
            # The previous holder may have unlinked the file between our open
            # and our lock: then we hold a lock on a file nobody else sees.
            try:
                st = os.stat(self.path)
                same = (st.st_dev, st.st_ino) == (os.fstat(fd).st_dev, os.fstat(fd).st_ino)
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        else:
            raise StateError(f"cannot lock {self.path}: it keeps being replaced")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Remove the pid file and drop the lock (in that order)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None


def running_pid(pid_file: Path) -> int | None:
    """The PID of the server holding ``pid_file``, or None if none does.

    0 if a server holds it but has not written its PID (it just started).
    Raises OSError if the file exists but cannot be opened.
    """
    try:
        fd = os.open(pid_file, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            # Held: the holder writes its PID right after locking.
            for _ in range(50):
                pid = _read_pid(fd)
                if pid is not None:
                    return pid
                time.sleep(0.01)
            return 0
        return None
    finally:
        os.close(fd)


class StateDir:
    """Paths and operations of one state directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.secret_path = path / "secret"
        self.pid_path = path / "recovery_fs.pid"
        self.status_path = path / "status.json"
        self.registry_path = path / "registry.json"

    def ensure(self) -> None:
        """Create the directory (0700) if it does not exist."""
        try:
            self.path.mkdir(parents=True, mode=0o700)
        except FileExistsError:
            if not self.path.is_dir():
                raise StateError(f"the state directory {self.path} is not a directory") from None
        except OSError as e:
            raise StateError(f"cannot create the state directory {self.path}: {e.strerror}") from e
        else:
            os.chmod(self.path, 0o700)  # mkdir's mode is filtered by the umask

    def secret(self) -> bytes:
        """The installation's secret, created on first use."""
        try:
            data = self.secret_path.read_bytes()
        except FileNotFoundError:
            data = self._create_secret()
        except OSError as e:
            raise StateError(f"cannot read the secret {self.secret_path}: {e.strerror}") from e
        if len(data) != SECRET_BYTES:
            raise StateError(
                f"{self.secret_path} holds {len(data)} bytes, not a {SECRET_BYTES}-byte secret "
                "(deleting it makes a new one, and every client must then mount again)"
            )
        return data

    def _create_secret(self) -> bytes:
        try:
            fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".secret.")  # mode 0600
        except OSError as e:
            raise StateError(f"cannot create the secret in {self.path}: {e.strerror}") from e
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(SECRET_BYTES))
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, self.secret_path)  # fails if another server was first
            except FileExistsError:
                pass
            except OSError as e:
                raise StateError(f"cannot create {self.secret_path}: {e.strerror}") from e
        finally:
            os.unlink(tmp)
        return self.secret_path.read_bytes()

    def pid_lock(self) -> PidLock:
        return PidLock(self.pid_path)

    def running_pid(self) -> int | None:
        """The PID of the server using this directory, None if none."""
        return running_pid(self.pid_path)

    def write_status(self, status: dict[str, Any]) -> None:
        atomic_write(self.status_path, json.dumps(status, indent=2).encode() + b"\n")

    def read_status(self) -> dict[str, Any] | None:
        """The status the running server wrote, None if absent or unreadable."""
        try:
            data = json.loads(self.status_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def remove_stale(self) -> None:
        """Remove the pid and status files of a server that is gone (not of a live one)."""
        if self.running_pid() is not None:
            return
        for p in (self.pid_path, self.status_path):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (a zombie counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError as e:
        return e.errno == errno.EPERM
    return True
