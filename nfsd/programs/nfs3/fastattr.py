"""fattr3 bytes straight from :class:`merge.namespace.Attrs`: the quick calls' replies.

Design notes
------------
GETATTR, LOOKUP and READ reply with one or two fattr3 (RFC 1813 §2.6),
READDIRPLUS with one per entry.
Building them as ``nfs3.fattr3`` objects (three ``nfstime3``, a
``specdata3``) and then packing them cost about a third of a GETATTR's
time in the dispatcher (``bench/dispatch_micro.py``); here the 84 bytes
come from the ``Attrs`` fields in one ``struct`` call.  The invariant: the
bytes are exactly what ``NFS3Packer`` writes for ``fattr3_of(a, fsid)``
(``tests/unit/test_fastattr.py`` checks it over generated attributes), so
every other procedure may keep the object path.  A value out of range
raises ``XdrError``, as the packer does.
"""

from __future__ import annotations

import struct

from merge.namespace import Attrs
from nfsd.programs.nfs3.service import _FTYPE
from xdr import nfs3
from xdr.base import XdrError

# type mode nlink uid gid | size used | rdev (2) | fsid fileid | a, m, c time (2 each)
_FATTR3 = struct.Struct(">5I2Q2I2Q6I")
_POST_OP = struct.Struct(">I5I2Q2I2Q6I")  # TRUE, then a fattr3
_OK = struct.pack(">I", nfs3.NFS3_OK)
_BILLION = 1_000_000_000


def fattr3_bytes(a: Attrs, fsid: int) -> bytes:
    """The XDR of ``fattr3_of(a, fsid)``."""
    try:
        return _FATTR3.pack(*_fields(a, fsid))
    except struct.error as e:
        raise XdrError(f"fattr3: {e}") from None


def post_op_attr_bytes(a: Attrs, fsid: int) -> bytes:
    """The XDR of ``post_op_attr_of(a, fsid)`` for an entry that has attributes."""
    try:
        return _POST_OP.pack(1, *_fields(a, fsid))
    except struct.error as e:
        raise XdrError(f"fattr3: {e}") from None


class LastFattr3:
    """The fattr3 bytes of the ``Attrs`` object asked for last.

    ``Attrs`` is frozen, and the namespace hands out the same object for a
    path while its answer holds (rule 8's second): a client reading one file
    asks for the same object call after call, and the bytes are one
    identity test away instead of a ``struct`` call (~1.2 µs).  A different
    object, even with equal fields, is packed again.
    """

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: tuple[Attrs | None, int, bytes] = (None, 0, b"")

    def get(self, a: Attrs, fsid: int) -> bytes:
        last = self._last  # one tuple: read and replaced whole, safe across threads
        if last[0] is a and last[1] == fsid:
            return last[2]
        data = fattr3_bytes(a, fsid)
        self._last = (a, fsid, data)
        return data


def getattr3_ok(a: Attrs, fsid: int) -> bytes:
    """A whole GETATTR3res with NFS3_OK."""
    return _OK + fattr3_bytes(a, fsid)


def entryplus3_bytes(cookie: int, name: bytes, a: Attrs, fsid: int, fh: bytes) -> bytes:
    """One READDIRPLUS entry with the TRUE that announces it, its attributes and handle.

    The bytes of ``nfs3.entryplus3_bytes`` for the same entry, in one
    ``struct`` call (a format per name and handle length, its ``s`` fields
    padding with zeros): the first listing of a folder encodes one per entry.
    """
    if len(name) > nfs3.MAXNAMLEN or len(fh) > nfs3.NFS3_FHSIZE:
        raise XdrError("entryplus3: name or handle too long")
    layout = _ENTRYPLUS.get((len(name), len(fh)))
    if layout is None:
        layout = _entryplus_layout(len(name), len(fh))
    try:
        return layout.pack(
            1, a.fileid, len(name), name, cookie, 1, *_fields(a, fsid), 1, len(fh), fh
        )
    except struct.error as e:
        raise XdrError(f"entryplus3: {e}") from None


# TRUE (an entry follows), fileid, name length, name, cookie | post_op_attr | TRUE, handle
_ENTRYPLUS: dict[tuple[int, int], struct.Struct] = {}


def _entryplus_layout(name_len: int, fh_len: int) -> struct.Struct:
    layout = struct.Struct(f">IQI{padded(name_len)}sQI5I2Q2I2Q6III{padded(fh_len)}s")
    _ENTRYPLUS[name_len, fh_len] = layout  # at most 256 x 65 of them
    return layout


def padded(n: int) -> int:
    """``n`` bytes of XDR opaque data rounded up to the 4-byte unit they take."""
    return (n + 3) & ~3


def _fields(a: Attrs, fsid: int) -> tuple[int, ...]:
    at, mt, ct = a.atime_ns, a.mtime_ns, a.ctime_ns
    return (
        _FTYPE[a.kind],
        a.mode,
        a.nlink,
        a.uid,
        a.gid,
        a.size,
        a.used,
        0,
        0,
        fsid,
        a.fileid,
        at // _BILLION & 0xFFFFFFFF,
        at % _BILLION,
        mt // _BILLION & 0xFFFFFFFF,
        mt % _BILLION,
        ct // _BILLION & 0xFFFFFFFF,
        ct % _BILLION,
    )
