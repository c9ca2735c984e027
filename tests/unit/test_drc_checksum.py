"""The reply cache's argument checksum: fixed bytes, as recorded in session databases.

A recorded change's key (``router.RECORDED``) is committed with it
(``SessionNamespace.recording``) and looked up after a restart, possibly by a
newer server: the digest of the same arguments must never change.  The
expected values were computed by the first implementation (one hash update
per field).  WRITE's key is never stored (it is not recorded): its form
changed (a CRC-32 of the data, ``drc._write_input``) and is tested for what a
reply cache key must do, not for fixed bytes.
"""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from nfsd.programs import drc
from nfsd.programs.nfs3.router import RECORDED
from xdr import nfs3

FH = nfs3.nfs_fh3(b"\x02" + bytes(range(26)))


def test_digests_are_those_of_the_first_implementation() -> None:
    assert nfs3.NFSPROC3_WRITE not in RECORDED  # else its key would have to stay fixed
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
    sa = nfs3.sattr3(
        nfs3.set_mode3(True, 0o644), nfs3.set_uid3(False), nfs3.set_gid3(False),
        nfs3.set_size3(True, offset), nfs3.set_atime(nfs3.DONT_CHANGE),
        nfs3.set_mtime(nfs3.SET_TO_CLIENT_TIME, nfs3.nfstime3(1, 2)),
    )  # fmt: skip
    c = nfs3.CREATE3args(nfs3.diropargs3(FH, name), nfs3.createhow3(mode, obj_attributes=sa))
    assert drc.checksum(c) == _reference(c)


def _write(fh: bytes, offset: int, count: int, stable: int, data: bytes | memoryview) -> bytes:
    return drc.checksum(nfs3.WRITE3args(nfs3.nfs_fh3(fh), offset, count, stable, data))


_SIZES = st.integers(0, 64) | st.integers(2 * drc.SAMPLE - 2, 2 * drc.SAMPLE + 2)


@given(
    fh=st.binary(max_size=64),
    offset=st.integers(0, 2**64 - 1),
    count=st.integers(0, 2**32 - 1),
    stable=st.integers(0, 2**32 - 1),
    data=_SIZES.flatmap(lambda n: st.binary(min_size=n, max_size=n)),
    where=st.integers(0, 2**16),
    flip=st.integers(1, 255),
)
def test_a_write_key_tells_apart_what_a_retransmission_would_not_change(  # noqa: PLR0917
    fh: bytes, offset: int, count: int, stable: int, data: bytes, where: int, flip: int
) -> None:
    """WRITE's key: the same call (its data as bytes or as a view of a record, as the
    decoder and the fast path give it) has the same key; any other handle, offset,
    count, stable, data length, or a byte of data the CRC covers (all of it up to
    ``2 * SAMPLE`` bytes, else the first and last ``SAMPLE``) gives another."""
    key = _write(fh, offset, count, stable, data)
    assert _write(fh, offset, count, stable, memoryview(b"xx" + data + b"yy")[2:-2]) == key
    assert _write(fh + b"\0", offset, count, stable, data) != key
    assert _write(fh, offset ^ 1, count, stable, data) != key
    assert _write(fh, offset, count ^ 1, stable, data) != key
    assert _write(fh, offset, count, stable ^ 1, data) != key
    assert _write(fh, offset, count, stable, data + b"\0") != key
    if data:
        i = where % len(data)
        if len(data) > 2 * drc.SAMPLE and drc.SAMPLE <= i < len(data) - drc.SAMPLE:
            i = 0  # not sampled (as before: the middle of a large WRITE)
        changed = bytearray(data)
        changed[i] ^= flip  # one byte: a CRC-32 always sees it
        assert _write(fh, offset, count, stable, bytes(changed)) != key


def test_a_write_key_is_not_a_hash_of_the_whole_data_any_more() -> None:
    """The point of the change: a 4 KiB WRITE's key is not a BLAKE2b over its data
    (the digest input holds a CRC, a few dozen bytes)."""
    w = nfs3.WRITE3args(FH, 0, 4096, nfs3.FILE_SYNC, bytes(4096))
    assert len(drc._write_input(w)) < 100
    assert drc.checksum(w) != _reference(w)
