"""MOUNT's list of mounts (for ``DUMP``): in one process, or shared by workers.

Design notes
------------
The list was never more than a hint (the Linux client sends no UMNT, and
knfsd's rmtab is as loose), but ``showmount -a`` must give the same answer
whichever worker process it reaches.  :class:`MountList` keeps it in
memory (one process); :class:`SharedMountList` keeps one empty file per
(host, path) in a directory of the state directory, named by the hex of
both, so that MNT, UMNT and DUMP in any worker see the same list without
a lock: creating, removing and listing directory entries are atomic.  The
supervisor empties the directory when it starts and removes it when it
stops (the list lives as long as the server, as before).  Both are
bounded by ``MAX_MOUNT_LIST`` entries.  MNT is rare; a DUMP lists one
directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from pathlib import Path

MAX_MOUNT_LIST = 1024
MOUNTS_DIR = "mounts"  # in the state directory


class MountList:
    """(host, path) pairs in memory, for one process."""

    def __init__(self) -> None:
        self._mounts: dict[tuple[bytes, bytes], None] = {}
        self._lock = threading.Lock()

    def add(self, host: bytes, path: bytes) -> None:
        with self._lock:
            if len(self._mounts) < MAX_MOUNT_LIST:
                self._mounts[(host, path)] = None

    def remove(self, host: bytes, path: bytes) -> None:
        with self._lock:
            self._mounts.pop((host, path), None)

    def remove_host(self, host: bytes) -> None:
        with self._lock:
            for key in [k for k in self._mounts if k[0] == host]:
                del self._mounts[key]

    def entries(self) -> list[tuple[bytes, bytes]]:
        with self._lock:
            return list(self._mounts)


class SharedMountList(MountList):
    """(host, path) pairs as empty files ``HOSTHEX_PATHHEX`` in ``directory``."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory

    @staticmethod
    def reset(directory: Path) -> None:
        """Empty (or create) the directory: a new server has no mounts yet."""
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    @staticmethod
    def discard(directory: Path) -> None:
        """Remove the directory (the server stops: the list goes with it)."""
        shutil.rmtree(directory, ignore_errors=True)

    def _name(self, host: bytes, path: bytes) -> Path:
        return self.directory / f"{host.hex()}_{path.hex()}"

    def add(self, host: bytes, path: bytes) -> None:
        with contextlib.suppress(OSError):  # a hint: never fail a MNT for it
            if len(os.listdir(self.directory)) < MAX_MOUNT_LIST:
                self._name(host, path).touch()

    def remove(self, host: bytes, path: bytes) -> None:
        with contextlib.suppress(OSError):
            self._name(host, path).unlink()

    def remove_host(self, host: bytes) -> None:
        for h, p in self.entries():
            if h == host:
                self.remove(h, p)

    def entries(self) -> list[tuple[bytes, bytes]]:
        try:
            names = sorted(os.listdir(self.directory))
        except OSError:
            return []
        out = []
        for name in names:
            host, _, path = name.partition("_")
            with contextlib.suppress(ValueError):
                out.append((bytes.fromhex(host), bytes.fromhex(path)))
        return out
