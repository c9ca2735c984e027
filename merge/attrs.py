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

import dataclasses
import os
from collections.abc import Callable, Sequence
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
    data = "".join(name + "\0" for name in path).encode("utf-8", "surrogateescape")
    return _fileid(_blake2b(data, digest_size=8, person=_PERSON))


def ids_in(directory: PresentedPath) -> Callable[[str], int]:
    """``fileid_for((*directory, name))`` as a function of ``name``: for a listing.

    The digest of each name followed by a NUL byte, in turn: the directory's
    part is hashed once, and copied for each entry.
    """
    start = _blake2b(id_prefix(directory), digest_size=8, person=_PERSON)

    def fileid(name: str) -> int:
        digest = start.copy()
        digest.update(name.encode("utf-8", "surrogateescape") + b"\0")
        return _fileid(digest)

    return fileid


def id_prefix(directory: PresentedPath) -> bytes:
    """The bytes hashed before an entry's name for its id (``ids_in``)."""
    return "".join(name + "\0" for name in directory).encode("utf-8", "surrogateescape")


def id_hash(directory: PresentedPath) -> tuple[bytes, bytes]:
    """``ids_in(directory)`` as ``merge._native.scan`` computes it itself: the
    BLAKE2b personalization and the folder's prefix (then name, NUL)."""
    return _PERSON, id_prefix(directory)


def _fileid(digest: _blake2b) -> int:
    fid = int.from_bytes(digest.digest(), "big") & _MASK63
    return fid if fid > ROOT_FILEID else 2


def attrs_from_stat(st: os.stat_result, path: PresentedPath) -> Attrs:
    """Presented attributes of a storage directory or regular file."""
    return attrs_of(st, fileid_for(path))


# Attrs is a frozen dataclass with slots: its __init__ sets each slot with
# object.__setattr__.  Setting them with the slots' own descriptors is the
# same, at half the cost: it counts when a directory of 10,000 entries is
# listed (tests/unit/test_layer_memo.py checks the two agree).
_SET = {f.name: getattr(Attrs, f.name).__set__ for f in dataclasses.fields(Attrs)}
_set_kind, _set_size, _set_used, _set_mode, _set_nlink, _set_uid, _set_gid = (
    _SET[n] for n in ("kind", "size", "used", "mode", "nlink", "uid", "gid")
)
_set_fileid, _set_atime, _set_mtime, _set_ctime = (
    _SET[n] for n in ("fileid", "atime_ns", "mtime_ns", "ctime_ns")
)


# Shared int objects for the fields that repeat across a folder's files: an int
# above 256 is an object of its own (32 bytes), and a listing of 10,000 small
# files held 20,000 of them for two values.
_PERMS = tuple(range(0o556))  # mode & 0o555, by index
_USED = tuple(blocks * 512 for blocks in range(256))  # st_blocks * 512 of a file under 128 KiB


def attrs_of(st: os.stat_result, fileid: int) -> Attrs:
    """Presented attributes of a storage directory or regular file, its id known."""
    mode = st.st_mode
    is_dir = S_ISDIR(mode)
    a = object.__new__(Attrs)
    _set_kind(a, Kind.DIR if is_dir else Kind.REG)
    _set_size(a, st.st_size)
    blocks = st.st_blocks
    _set_used(a, _USED[blocks] if blocks < 256 else blocks * 512)
    _set_mode(a, _PERMS[mode & 0o555])
    _set_nlink(a, (st.st_nlink if st.st_nlink > 2 else 2) if is_dir else 1)
    _set_uid(a, st.st_uid)
    _set_gid(a, st.st_gid)
    _set_fileid(a, fileid)
    _set_atime(a, st.st_atime_ns)
    _set_mtime(a, st.st_mtime_ns)
    _set_ctime(a, st.st_ctime_ns)
    return a


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


def attrs_from_fields(fields: Sequence[int], kind: Kind) -> Attrs:
    """``Attrs(kind, *fields)`` (size ... ctime_ns, in the dataclass's order), built as
    ``attrs_of`` builds its own: a shared listing (``merge.shared``) makes 10,000."""
    a = object.__new__(Attrs)
    _set_kind(a, kind)
    size, used, mode, nlink, uid, gid, fileid, atime, mtime, ctime = fields
    _set_size(a, size)
    _set_used(a, used)
    _set_mode(a, mode)
    _set_nlink(a, nlink)
    _set_uid(a, uid)
    _set_gid(a, gid)
    _set_fileid(a, fileid)
    _set_atime(a, atime)
    _set_mtime(a, mtime)
    _set_ctime(a, ctime)
    return a
