"""Logging: where the lines go, and how verbose, following the registry live.

Design notes
------------
``appliance.debug.level`` sets two logger levels: the root's (everything)
and that of ``recovery_fs.rpc``, where the dispatcher writes one DEBUG line
per call.  The RPC logger is never more verbose than the root below level 3.

=====  ==============  ====================
level  root logger     ``recovery_fs.rpc``
=====  ==============  ====================
0      WARNING         WARNING
1      INFO            INFO
2      DEBUG           INFO (no per-call lines)
3+     DEBUG           DEBUG (a line per call)
=====  ==============  ====================

Lines go to the log file (``nfsd.service.logline``: whole lines in one
``O_APPEND`` write each, shared by the worker processes; logrotate may move
it; a ``tag`` names the process on every line) and,
for a server in the foreground, to stderr too.  A log file that cannot be
opened is reported once on stderr and replaced by stderr.  A log path that is
an existing directory gets ``recovery_fs.log`` inside it.

:class:`LevelWatcher` polls the registry file about once a second and
applies a changed level: no restart, no signal.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

from nfsd.service.logline import AppendLineHandler, printable
from nfsd.service.registry import DEBUG_LEVEL, Registry
from nfsd.service.state import StateError

RPC_LOGGER = "recovery_fs.rpc"
FORMAT = "%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
LOG_NAME_IN_DIRECTORY = "recovery_fs.log"

log = logging.getLogger("recovery_fs.logsetup")


class OneLineFormatter(logging.Formatter):
    """A record's message on its line: control characters escaped
    (``logline.printable``), so that a storage name holding a newline (a
    warning names the path at fault) cannot forge a log line.  A traceback
    still follows on lines of its own."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)


def levels_for(debug_level: int) -> tuple[int, int]:
    """(root level, RPC logger level) for a registry debug level."""
    if debug_level <= 0:
        return logging.WARNING, logging.WARNING
    if debug_level == 1:
        return logging.INFO, logging.INFO
    if debug_level == 2:
        return logging.DEBUG, logging.INFO
    return logging.DEBUG, logging.DEBUG


def log_path(path: Path) -> Path:
    """The file to write for a ``--log-file`` value."""
    return path / LOG_NAME_IN_DIRECTORY if path.is_dir() else path


def open_log_file(path: Path) -> logging.Handler:
    """A handler appending to ``path``, parents created; raises OSError."""
    target = log_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    return AppendLineHandler(target)


class LogSetup:
    """The handlers this process installed on the root logger."""

    def __init__(
        self,
        log_file: Path | None,
        *,
        debug_level: int = 0,
        stderr: bool = False,
        tag: str | None = None,
    ) -> None:
        self.file_error: str | None = None
        self.debug_level = debug_level
        self.handlers: list[logging.Handler] = []
        self._saved = (logging.getLogger().level, logging.getLogger(RPC_LOGGER).level)
        if log_file is not None:
            try:
                self.handlers.append(open_log_file(log_file))
            except OSError as e:
                where = log_path(log_file)
                self.file_error = (
                    f"cannot write the log file {where}: {e.strerror}; logging to stderr"
                )
                print(f"recovery-fs: {self.file_error}", file=sys.stderr)
                stderr = True
        if stderr:
            self.handlers.append(logging.StreamHandler(sys.stderr))
        fmt = FORMAT if tag is None else FORMAT.replace("%(name)s", f"{tag} %(name)s")
        formatter = OneLineFormatter(fmt, DATE_FORMAT)
        root = logging.getLogger()
        for h in self.handlers:
            h.setFormatter(formatter)
            root.addHandler(h)
        self._apply(debug_level)

    def _apply(self, debug_level: int) -> None:
        root_level, rpc_level = levels_for(debug_level)
        logging.getLogger().setLevel(root_level)
        logging.getLogger(RPC_LOGGER).setLevel(rpc_level)
        self.debug_level = debug_level

    def set_debug_level(self, debug_level: int) -> None:
        """Apply a new level, logged at INFO under the more verbose of the two."""
        old = self.debug_level
        if debug_level == old:
            return
        if debug_level > old:
            self._apply(debug_level)
        log.info("debug level %d -> %d (registry %s)", old, debug_level, DEBUG_LEVEL)
        self._apply(debug_level)

    def close(self) -> None:
        """Remove the handlers and give the loggers back their former levels."""
        root = logging.getLogger()
        for h in self.handlers:
            root.removeHandler(h)
            h.close()
        self.handlers = []
        root.setLevel(self._saved[0])
        logging.getLogger(RPC_LOGGER).setLevel(self._saved[1])


class LevelWatcher:
    """A thread applying the registry's debug level when the file changes."""

    def __init__(self, registry: Registry, logs: LogSetup, interval: float = 1.0) -> None:
        self.registry = registry
        self.logs = logs
        self.interval = interval
        # Nothing seen yet: the first poll reads the registry, in case it
        # changed between the caller's read and now.
        self._seen: tuple[int, int, int] | bool | None = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="registry-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def poll(self) -> None:
        """Apply the registry's level if the file changed since the last look."""
        sig = self.registry.signature()
        if sig == self._seen:
            return
        self._seen = sig
        try:
            level = self.registry.get(DEBUG_LEVEL)
        except StateError as e:
            log.warning("keeping debug level %d: %s", self.logs.debug_level, e)
            return
        self.logs.set_debug_level(level)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except Exception:
                log.exception("registry watcher")
