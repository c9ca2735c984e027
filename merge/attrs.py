"""Attributes of presented entries: read-only modes and stable file ids (rule 7).

Design notes
------------
* ``fileid`` is a function of the presented path alone: the first 63 bits
  of a BLAKE2b digest of its names, so it is the same after a restart and on
  a second server over the same storage, and never 0.  The root is always
  :data:`ROOT_FILEID`; a digest that lands on 0 or on the root's id is
  moved to 2.  Two presented paths share an id only by a 63-bit hash
  collision (about one chance in 10**10 for a million entries).
* Write bits are cleared: ``mode & 0o555`` of the storage entry.
* ``nlink``: a directory reports its storage directory's link count (2 plus
  its real subdirectories, what ``find`` expects); a file reports 1, since a
  presented file has exactly one name (storage hard links get distinct ids).
"""

from __future__ import annotations

import hashlib
import os
import stat

from merge.namespace import Attrs, Kind, PresentedPath

ROOT_FILEID = 1
_MASK63 = (1 << 63) - 1


def fileid_for(path: PresentedPath) -> int:
    """The stable id of a presented path (63 bits, never 0)."""
    if not path:
        return ROOT_FILEID
    digest = hashlib.blake2b(digest_size=8, person=b"recovery-fs")
    for name in path:
        digest.update(name.encode("utf-8", "surrogateescape"))
        digest.update(b"\0")
    fid = int.from_bytes(digest.digest(), "big") & _MASK63
    return fid if fid > ROOT_FILEID else 2


def attrs_from_stat(st: os.stat_result, path: PresentedPath) -> Attrs:
    """Presented attributes of a storage directory or regular file."""
    is_dir = stat.S_ISDIR(st.st_mode)
    return Attrs(
        kind=Kind.DIR if is_dir else Kind.REG,
        size=st.st_size,
        used=st.st_blocks * 512,
        mode=stat.S_IMODE(st.st_mode) & 0o555,
        nlink=max(st.st_nlink, 2) if is_dir else 1,
        uid=st.st_uid,
        gid=st.st_gid,
        fileid=fileid_for(path),
        atime_ns=st.st_atime_ns,
        mtime_ns=st.st_mtime_ns,
        ctime_ns=st.st_ctime_ns,
    )
