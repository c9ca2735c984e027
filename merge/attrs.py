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

import os
from hashlib import blake2b as _blake2b
from stat import S_IMODE, S_ISDIR

from merge.namespace import Attrs, Kind, PresentedPath

ROOT_FILEID = 1
_MASK63 = (1 << 63) - 1
_PERSON = b"recovery-fs"


def fileid_for(path: PresentedPath) -> int:
    """The stable id of a presented path (63 bits, never 0)."""
    if not path:
        return ROOT_FILEID
    return fileid_in(id_prefix(path[:-1]), path[-1])


def id_prefix(directory: PresentedPath) -> bytes:
    """What the ids of ``directory``'s entries are hashed from, before their name."""
    return "".join(name + "\0" for name in directory).encode("utf-8", "surrogateescape")


def fileid_in(prefix: bytes, name: str) -> int:
    """``fileid_for`` of entry ``name`` of the directory of ``prefix`` (``id_prefix``).

    The digest of each name followed by a NUL byte, in turn: hashing their
    concatenation in one call gives the same digest.
    """
    data = prefix + name.encode("utf-8", "surrogateescape") + b"\0"
    fid = int.from_bytes(_blake2b(data, digest_size=8, person=_PERSON).digest(), "big") & _MASK63
    return fid if fid > ROOT_FILEID else 2


def attrs_from_stat(st: os.stat_result, path: PresentedPath) -> Attrs:
    """Presented attributes of a storage directory or regular file."""
    return attrs_of(st, fileid_for(path))


def attrs_of(st: os.stat_result, fileid: int) -> Attrs:
    """Presented attributes of a storage directory or regular file, its id known."""
    mode = st.st_mode
    is_dir = S_ISDIR(mode)
    return Attrs(
        Kind.DIR if is_dir else Kind.REG,  # kind
        st.st_size,  # size
        st.st_blocks * 512,  # used
        S_IMODE(mode) & 0o555,  # mode
        (st.st_nlink if st.st_nlink > 2 else 2) if is_dir else 1,  # nlink
        st.st_uid,  # uid
        st.st_gid,  # gid
        fileid,
        st.st_atime_ns,
        st.st_mtime_ns,
        st.st_ctime_ns,
    )


def stat_matches(a: Attrs, st: os.stat_result) -> bool:
    """Whether ``attrs_of(st, a.fileid)`` would equal ``a`` (without building it)."""
    mode = st.st_mode
    is_dir = S_ISDIR(mode)
    return (
        a.ctime_ns == st.st_ctime_ns
        and a.mtime_ns == st.st_mtime_ns
        and a.size == st.st_size
        and a.atime_ns == st.st_atime_ns
        and a.used == st.st_blocks * 512
        and a.mode == S_IMODE(mode) & 0o555
        and a.kind == (Kind.DIR if is_dir else Kind.REG)
        and a.nlink == ((st.st_nlink if st.st_nlink > 2 else 2) if is_dir else 1)
        and a.uid == st.st_uid
        and a.gid == st.st_gid
    )
