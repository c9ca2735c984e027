"""xdr.mount3: MOUNT v3 (RFC 1813 appendix I) types, both directions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit import xdr_strategies as xs
from xdr import mount3 as m
from xdr.base import XdrError
from xdr.mount3 import Mount3Packer, Mount3Unpacker

enc, dec, known = xs.codec(Mount3Packer, Mount3Unpacker)


(
    test_roundtrip,
    test_truncated_encoding_is_refused,
    test_every_type_has_pack_unpack_and_a_strategy,
) = xs.protocol_tests(Mount3Packer, Mount3Unpacker, xs.MOUNT3_TYPES)


def test_constants() -> None:
    assert (m.MOUNT_PROGRAM, m.MOUNT_V3) == (100005, 3)
    assert (m.MNTPATHLEN, m.MNTNAMLEN, m.FHSIZE3) == (1024, 255, 64)
    assert (m.MNT3ERR_ACCES, m.MNT3ERR_NOTSUPP, m.MNT3ERR_SERVERFAULT) == (13, 10004, 10006)
    procs = [m.MOUNTPROC3_NULL, m.MOUNTPROC3_MNT, m.MOUNTPROC3_DUMP]
    procs += [m.MOUNTPROC3_UMNT, m.MOUNTPROC3_UMNTALL, m.MOUNTPROC3_EXPORT]
    assert procs == list(range(6))


def test_known_mountres3_ok() -> None:
    res = m.mountres3(m.MNT3_OK, m.mountres3_ok(bytes.fromhex("0102030405"), [1, 0]))
    wire = bytes.fromhex("00000000 00000005 0102030405000000 00000002 00000001 00000000")
    known("mountres3", res, wire)


def test_known_mountres3_failure_is_the_status_alone() -> None:
    assert enc("mountres3", m.mountres3(m.MNT3ERR_NOENT)) == bytes.fromhex("00000002")
    assert dec("mountres3", bytes.fromhex("0000000d")) == m.mountres3(m.MNT3ERR_ACCES)


def test_known_exports() -> None:
    exports = [m.exportnode(b"/srv", [b"a", b"bc"]), m.exportnode(b"/", [])]
    wire = bytes.fromhex(
        "00000001 00000004 2f737276"
        "  00000001 00000001 61000000  00000001 00000002 62630000  00000000"
        "00000001 00000001 2f000000  00000000"
        "00000000"
    )
    known("exports", exports, wire)


def test_known_mountlist() -> None:
    mounts = [m.mountbody(b"host", b"/x")]
    wire = bytes.fromhex("00000001 00000004 686f7374 00000002 2f780000 00000000")
    known("mountlist", mounts, wire)


@given(st.integers(-(2**31), 2**31 - 1).filter(lambda v: v not in m.MOUNTSTAT3))
def test_unknown_mountstat3_is_refused(v: int) -> None:
    with pytest.raises(XdrError):
        dec("mountres3", (v & 0xFFFFFFFF).to_bytes(4, "big"))


@given(st.integers(2, 2**32 - 1))
def test_list_bool_other_than_0_or_1_is_refused(v: int) -> None:
    with pytest.raises(XdrError):
        dec("groups", v.to_bytes(4, "big"))
    with pytest.raises(XdrError):
        dec("exports", bytes.fromhex("00000001 00000001 2f000000") + v.to_bytes(4, "big"))


@pytest.mark.parametrize(("name", "bound"), [("dirpath", 1024), ("name", 255), ("fhandle3", 64)])
def test_opaque_longer_than_its_bound_is_refused(name: str, bound: int) -> None:
    size = bound + 1
    wire = size.to_bytes(4, "big") + b"x" * size + b"\0" * (-size % 4)
    with pytest.raises(XdrError, match="exceeds"):
        dec(name, wire)
    with pytest.raises(XdrError, match="exceeds"):
        enc(name, b"x" * size)


def test_huge_auth_flavor_count_is_refused_without_allocating() -> None:
    wire = bytes.fromhex("00000000 00000000 ffffffff 00000001")
    xs.check_refused_without_allocating(lambda: dec("mountres3", wire))


def test_mnt3_ok_without_mountinfo_is_not_packed() -> None:
    with pytest.raises(XdrError):
        enc("mountres3", m.mountres3(m.MNT3_OK))
