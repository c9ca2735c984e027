"""The reply cache's argument checksum: fixed bytes, as recorded in session databases.

A change's key is committed with it (``SessionNamespace.recording``) and
looked up after a restart, possibly by a newer server: the digest of the
same arguments must never change.  The expected values were computed by
the first implementation (one hash update per field).
"""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from nfsd.programs import drc
from xdr import nfs3

FH = nfs3.nfs_fh3(b"\x02" + bytes(range(26)))


def test_digests_are_those_of_the_first_implementation() -> None:
    assert (
        drc.checksum(
            nfs3.WRITE3args(FH, 1 << 40, 4096, nfs3.FILE_SYNC, bytes(range(256)) * 16)
        ).hex()
        == "85d1cc1db9ea5dc5c20b497543eb4fae"
    )
    assert (
        drc.checksum(
            nfs3.WRITE3args(FH, 7, 3 << 20, nfs3.UNSTABLE, bytes(range(251)) * 12000)
        ).hex()
        == "f6dcfe1cb95794f586b79abc000d11e3"
    )
    assert (
        drc.checksum(
            nfs3.RENAME3args(nfs3.diropargs3(FH, b"a"), nfs3.diropargs3(FH, "b\u00e9".encode()))
        ).hex()
        == "e59e1c888b7de8de369830d8604c3512"
    )


def _reference(v: object) -> bytes:
    """The first implementation, field by field into the hash."""
    import dataclasses

    h = hashlib.blake2b(digest_size=16)

    def feed(v: object) -> None:
        if isinstance(v, (bytes, bytearray, memoryview)):
            h.update(len(v).to_bytes(8, "big"))
            if len(v) > 2 * drc.SAMPLE:
                h.update(memoryview(v)[: drc.SAMPLE])
                h.update(memoryview(v)[-drc.SAMPLE :])
            else:
                h.update(v)
        elif dataclasses.is_dataclass(v):
            h.update(type(v).__name__.encode())
            for f in dataclasses.fields(v):
                feed(getattr(v, f.name))
        elif isinstance(v, (list, tuple)):
            h.update(b"[%d" % len(v))
            for x in v:
                feed(x)
        else:
            h.update(repr(v).encode())
            h.update(b";")

    feed(v)
    return h.digest()


@given(
    offset=st.integers(0, 2**64 - 1),
    stable=st.integers(0, 2),
    data=st.binary(max_size=3 * drc.SAMPLE),
    name=st.binary(max_size=40),
    mode=st.sampled_from([nfs3.UNCHECKED, nfs3.GUARDED]),
)
def test_same_digest_as_the_reference(
    offset: int, stable: int, data: bytes, name: bytes, mode: int
) -> None:
    w = nfs3.WRITE3args(FH, offset, len(data), stable, data)
    assert drc.checksum(w) == _reference(w)
    sa = nfs3.sattr3(
        nfs3.set_mode3(True, 0o644), nfs3.set_uid3(False), nfs3.set_gid3(False),
        nfs3.set_size3(True, offset), nfs3.set_atime(nfs3.DONT_CHANGE),
        nfs3.set_mtime(nfs3.SET_TO_CLIENT_TIME, nfs3.nfstime3(1, 2)),
    )  # fmt: skip
    c = nfs3.CREATE3args(nfs3.diropargs3(FH, name), nfs3.createhow3(mode, obj_attributes=sa))
    assert drc.checksum(c) == _reference(c)


def _walked(args: object) -> bytes:
    """The digest by the general walk over the fields (``drc._feed``)."""
    out = bytearray()
    drc._feed(out, args)
    return hashlib.blake2b(out, digest_size=16).digest()


@given(
    fh=st.binary(max_size=64),
    offset=st.integers(0, 2**64 - 1),
    count=st.integers(0, 2**32 - 1),
    stable=st.integers(0, 2**32 - 1),
    data=st.binary(max_size=64)
    | st.integers(2 * drc.SAMPLE - 2, 2 * drc.SAMPLE + 2).map(
        lambda n: bytes(range(256)) * (n // 256) + bytes(n % 256)
    ),
    view=st.booleans(),
)
def test_a_write_digest_is_the_walks(  # noqa: PLR0917
    fh: bytes, offset: int, count: int, stable: int, data: bytes, view: bool
) -> None:
    """WRITE's shortcut (``drc._write_input``) gives the general walk's digest:
    a call served by the fast path and its retransmission by the general path
    (or a restart's recorded key) are the same call."""
    body = memoryview(b"xx" + data + b"yy")[2:-2] if view else data
    args = nfs3.WRITE3args(nfs3.nfs_fh3(fh), offset, count, stable, body)
    assert drc.checksum(args) == _walked(args)
    assert drc._write_input(args) != drc._write_input(
        nfs3.WRITE3args(nfs3.nfs_fh3(fh), offset, count, stable ^ 1, body)
    )
