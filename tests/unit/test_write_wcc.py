"""A session change's success reply head is exactly NFS3Packer's bytes (write.wcc_ok_bytes)."""

from __future__ import annotations

import pytest
from hypothesis import given

from merge.namespace import Attrs, Kind
from nfsd.programs.nfs3.service import fattr3_of, nfstime
from nfsd.programs.nfs3.write import wcc_ok_bytes
from tests.unit.test_fastattr import U64, attrs
from xdr import nfs3
from xdr.base import XdrError
from xdr.nfs3 import NFS3Packer


def packed(before: Attrs, after: Attrs, fsid: int) -> bytes:
    p = NFS3Packer()
    p.pack_uint(nfs3.NFS3_OK)
    pre = nfs3.pre_op_attr(
        True, nfs3.wcc_attr(before.size, nfstime(before.mtime_ns), nfstime(before.ctime_ns))
    )
    p.pack_wcc_data(nfs3.wcc_data(pre, nfs3.post_op_attr(True, fattr3_of(after, fsid))))
    return p.get_buffer()


@given(attrs, attrs, U64)
def test_same_bytes_as_the_packer(before: Attrs, after: Attrs, fsid: int) -> None:
    assert wcc_ok_bytes(before, after, fsid) == packed(before, after, fsid)


def test_out_of_range_is_an_xdr_error_as_with_the_packer() -> None:
    a = Attrs(kind=Kind.REG, size=2**64, used=0, mode=0, nlink=1, uid=0, gid=0, fileid=1,
              atime_ns=0, mtime_ns=0, ctime_ns=0)  # fmt: skip
    with pytest.raises(XdrError):
        wcc_ok_bytes(a, a, 1)
