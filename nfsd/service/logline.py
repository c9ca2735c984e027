"""One log file shared by several processes, no line ever mixed with another.

Design notes
------------
The supervisor and every worker append to the same file.  Each opens it
with ``O_APPEND`` and writes every record with ONE ``write(2)`` of whole
lines: the kernel then places each write at the end of the file in one
piece, whoever else writes.  A record longer than ``PIPE_BUF`` (4 KiB, a
traceback) is cut at line ends into writes of at most ``PIPE_BUF`` bytes
(a single line longer than that is cut and marked ``[...]``): each write
still holds only whole lines, so a reader never sees half a line followed
by another process's.  Python's buffered ``FileHandler`` gives no such
promise (it flushes when its buffer fills, wherever that falls).

Rotation: like ``WatchedFileHandler``, the path is checked before each
write (a ``stat``), and a file moved away (logrotate without
``copytruncate``) or deleted is replaced by a new one at the path.

Each line names its process: ``supervisor pid 1230`` or ``worker 2 pid
1234`` (``LogSetup``'s ``tag``), so the lines of a worker can be followed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
from pathlib import Path

PIPE_BUF = getattr(select, "PIPE_BUF", 4096)
CUT_MARK = b" [...]\n"


# C0 controls, DEL, C1 controls and the Unicode line and paragraph separators:
# what a terminal or a log reader may take as the end of a line or a command.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
_CONTROLS |= {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r", 0x2028: "\\u2028", 0x2029: "\\u2029"}
_CONTROLS[ord("\\")] = "\\\\"  # so that an escape in a name cannot pass for one of ours


def printable(text: str) -> str:
    """``text`` with control characters escaped (``\\n``, ``\\x1b``...) and ``\\``
    doubled: a storage name holding a newline, printed in a log line or by
    ``check`` and ``ls``, cannot forge another line (names may hold any byte
    but ``/`` and NUL).  Here, not in ``merge``: the supervisor logs too, and
    imports nothing of the storage side (tests/unit/test_lean_processes.py)."""
    if text.isprintable() and "\\" not in text:
        return text
    return text.translate(_CONTROLS)


def chunks(data: bytes, limit: int = PIPE_BUF) -> list[bytes]:
    """``data`` (lines ending in ``\\n``) as pieces of whole lines, each at
    most ``limit`` bytes; a longer line is cut and marked."""
    out: list[bytes] = []
    piece = b""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    for raw in lines:
        line = raw + b"\n"  # only \n ends a line: a \r in a message stays in it
        if len(line) > limit:
            line = line[: limit - len(CUT_MARK)] + CUT_MARK
        if len(piece) + len(line) > limit:
            out.append(piece)
            piece = b""
        piece += line
    if piece:
        out.append(piece)
    return out


class AppendLineHandler(logging.Handler):
    """Appends each record to ``path`` in whole-line ``write`` calls."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self._fd = -1
        self._id: tuple[int, int] | None = None
        self._open_lock = threading.Lock()
        self._open()

    def _open(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        st = os.fstat(fd)
        old, self._fd, self._id = self._fd, fd, (st.st_dev, st.st_ino)
        if old >= 0:
            os.close(old)

    def _reopen_if_moved(self) -> None:
        try:
            st = os.stat(self.path)
            same = (st.st_dev, st.st_ino) == self._id
        except FileNotFoundError:
            same = False
        if not same:
            with self._open_lock:
                self._open()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = (self.format(record) + "\n").encode("utf-8", "backslashreplace")
            self._reopen_if_moved()
            for piece in chunks(data):
                os.write(self._fd, piece)
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        with self._open_lock:
            if self._fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = -1
        super().close()
