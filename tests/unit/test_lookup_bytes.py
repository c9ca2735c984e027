"""LOOKUP's reply made as bytes: exactly what the XDR packer writes for the same result."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from merge.namespace import Attrs, Kind
from nfsd.programs.nfs3.attrs import lookup3_ok
from nfsd.programs.nfs3.service import post_op_attr_of
from tests.unit.test_fastattr import U64, attrs
from xdr import nfs3
from xdr.base import XdrError
from xdr.nfs3 import NFS3Packer


@given(attrs, attrs, U64, st.binary(min_size=0, max_size=64))
def test_same_bytes_as_the_packer(a, d, fsid, fh):
    p = NFS3Packer()
    p.pack_LOOKUP3res(
        nfs3.LOOKUP3res(
            nfs3.NFS3_OK,
            resok=nfs3.LOOKUP3resok(
                nfs3.nfs_fh3(fh), post_op_attr_of(a, fsid), post_op_attr_of(d, fsid)
            ),
        )
    )
    assert lookup3_ok(fh, a, d, fsid) == p.get_buffer()


def test_a_handle_too_long_is_an_xdr_error():
    a = Attrs(Kind.REG, 1, 4096, 0o444, 1, 0, 0, 7, 0, 0, 0)
    with pytest.raises(XdrError):
        lookup3_ok(b"h" * 65, a, a, 1)
