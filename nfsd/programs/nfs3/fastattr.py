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


def getattr3_ok(a: Attrs, fsid: int) -> bytes:
    """A whole GETATTR3res with NFS3_OK."""
    return _OK + fattr3_bytes(a, fsid)


def entryplus3_bytes(cookie: int, name: bytes, a: Attrs, fsid: int, fh: bytes) -> bytes:
    """One READDIRPLUS entry with the TRUE that announces it, its attributes and handle.

    The bytes of ``nfs3.entryplus3_bytes`` for the same entry: the first
    listing of a folder encodes one per entry.
    """
    if len(name) > nfs3.MAXNAMLEN or len(fh) > nfs3.NFS3_FHSIZE:
        raise XdrError("entryplus3: name or handle too long")
    try:
        return b"".join(
            (
                _ENTRY_HEAD.pack(1, a.fileid, len(name)),
                name,
                _PAD[len(name) & 3],
                _U64.pack(cookie),
                _POST_OP.pack(1, *_fields(a, fsid)),
                _HANDLE_HEAD.pack(1, len(fh)),
                fh,
                _PAD[len(fh) & 3],
            )
        )
    except struct.error as e:
        raise XdrError(f"entryplus3: {e}") from None


_ENTRY_HEAD = struct.Struct(">IQI")  # TRUE (an entry follows), fileid, name length
_HANDLE_HEAD = struct.Struct(">II")  # TRUE (handle_follows), handle length
_U64 = struct.Struct(">Q")
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")


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
