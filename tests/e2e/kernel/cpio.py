"""A minimal writer of cpio "newc" archives, the format the kernel unpacks as initramfs.

Written here rather than driving cpio(1) so that archives are byte-for-byte
reproducible (fixed inode numbers and times) and need no staging directory.
The kernel accepts several archives concatenated, each compressed or not: the
harness appends a small per-run archive (the scenario) to the cached base.
"""

from __future__ import annotations

import stat

TRAILER = "TRAILER!!!"


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


class Archive:
    """Collects entries in order; `data()` returns the finished archive."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._ino = 1
        self._names: set[str] = set()

    def _entry(
        self,
        name: str,
        mode: int,
        data: bytes = b"",
        *,
        rdev: tuple[int, int] = (0, 0),
        nlink: int = 1,
    ) -> None:
        name = name.lstrip("/")
        if name in self._names:
            raise ValueError(f"duplicate cpio entry {name!r}")
        self._names.add(name)
        encoded = name.encode() + b"\0"
        fields = (
            self._ino,
            mode,
            0,  # uid
            0,  # gid
            nlink,
            0,  # mtime
            len(data),
            0,  # devmajor
            0,  # devminor
            rdev[0],
            rdev[1],
            len(encoded),
            0,  # check
        )
        self._ino += 1
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._parts += [header, encoded, _pad4(len(header) + len(encoded)), data, _pad4(len(data))]

    def directory(self, name: str, perm: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | perm, nlink=2)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | perm, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def char_device(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | perm, rdev=(major, minor))

    def data(self) -> bytes:
        """The archive with its trailer, padded to a multiple of 512 bytes."""
        trailer = Archive()
        trailer._ino = 0
        trailer._entry(TRAILER, 0, nlink=1)
        out = b"".join(self._parts + trailer._parts)
        return out + b"\0" * (-len(out) % 512)
