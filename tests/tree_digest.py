"""A fingerprint of a storage tree, for the tests that check it is the same after
everything that went through the server (nothing writes, renames or locks in it)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

HASH_LIMIT = 64 * 1024 * 1024
"""Files up to this size are fingerprinted by their bytes too; larger ones by their stat."""


def tree_digest(root: Path) -> str:
    """A fingerprint of a storage tree: names, kinds, sizes, modes, times, small files' bytes."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted([*dirnames, *filenames]):
            p = Path(dirpath) / name
            st = p.lstat()
            rel = p.relative_to(root).as_posix()
            h.update(
                f"{rel}\0{st.st_mode}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\n".encode()
            )
            if p.is_file() and not p.is_symlink() and st.st_size <= HASH_LIMIT:
                with open(p, "rb") as f:
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
    return h.hexdigest()
