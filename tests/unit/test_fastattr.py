"""fastattr's bytes are exactly NFS3Packer's for the same attributes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from merge.namespace import Attrs, Kind
from nfsd.programs.nfs3.fastattr import (
    LastFattr3,
    entryplus3_bytes,
    fattr3_bytes,
    getattr3_ok,
    post_op_attr_bytes,
)
from nfsd.programs.nfs3.service import fattr3_of, post_op_attr_of
from xdr import nfs3
from xdr.base import XdrError
from xdr.nfs3 import NFS3Packer

U32, U64 = st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)
NS = st.integers(0, 2**63 - 1)  # st_*time_ns: also past 2106, where seconds wrap

attrs = st.builds(
    Attrs,
    kind=st.sampled_from([Kind.REG, Kind.DIR, Kind.LNK]),
    size=U64,
    used=U64,
    mode=st.integers(0, 0o7777),
    nlink=U32,
    uid=U32,
    gid=U32,
    fileid=st.integers(1, 2**63 - 1),
    atime_ns=NS,
    mtime_ns=NS,
    ctime_ns=NS,
)


def packed(fn, value) -> bytes:
    p = NFS3Packer()
    fn(p, value)
    return p.get_buffer()


@given(attrs, U64)
def test_same_bytes_as_the_packer(a, fsid):
    assert fattr3_bytes(a, fsid) == packed(NFS3Packer.pack_fattr3, fattr3_of(a, fsid))
    assert post_op_attr_bytes(a, fsid) == packed(
        NFS3Packer.pack_post_op_attr, post_op_attr_of(a, fsid)
    )
    res = nfs3.GETATTR3res(nfs3.NFS3_OK, nfs3.GETATTR3resok(fattr3_of(a, fsid)))
    assert getattr3_ok(a, fsid) == packed(NFS3Packer.pack_GETATTR3res, res)


def test_out_of_range_is_an_xdr_error_as_with_the_packer():
    a = Attrs(Kind.REG, 2**64, 0, 0o444, 1, 0, 0, 5, 0, 0, 0)
    with pytest.raises(XdrError):
        packed(NFS3Packer.pack_fattr3, fattr3_of(a, 1))
    for fn in (fattr3_bytes, post_op_attr_bytes):
        with pytest.raises(XdrError):
            fn(a, 1)


@given(
    attrs,
    U64,
    U64,
    st.binary(min_size=1, max_size=255),
    st.binary(min_size=0, max_size=64),
)
def test_entryplus3_same_bytes_as_the_packer(a, fsid, cookie, name, fh):
    e = nfs3.entryplus3(
        a.fileid, name, cookie, post_op_attr_of(a, fsid), nfs3.post_op_fh3(True, nfs3.nfs_fh3(fh))
    )
    assert entryplus3_bytes(cookie, name, a, fsid, fh) == nfs3.entryplus3_bytes(e)


def test_entryplus3_too_long_is_an_xdr_error():
    a = Attrs(Kind.REG, 1, 0, 0o444, 1, 0, 0, 5, 0, 0, 0)
    with pytest.raises(XdrError):
        entryplus3_bytes(1, b"n" * 256, a, 1, b"h")
    with pytest.raises(XdrError):
        entryplus3_bytes(1, b"n", a, 1, b"h" * 65)


@given(st.lists(st.tuples(attrs, st.sampled_from([1, 2])), min_size=1, max_size=8), st.data())
def test_last_fattr3_is_the_bytes_of_the_object_asked_for(seq, data):
    """Objects asked for again (the same object) or replaced (another one,
    perhaps with other fields): always the bytes of the one given now."""
    memo = LastFattr3()
    for a, fsid in seq:
        again = data.draw(st.sampled_from([a, *(b for b, _ in seq)]))
        for obj in (a, again, a):
            assert memo.get(obj, fsid) == fattr3_bytes(obj, fsid)
