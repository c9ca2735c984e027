"""xdr.nfs3: NFSv3 (RFC 1813) types, both directions, strict decoding."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit import xdr_strategies as xs
from xdr import nfs3 as n
from xdr.base import XdrError
from xdr.nfs3 import NFS3Packer, NFS3Unpacker

enc, dec, known = xs.codec(NFS3Packer, NFS3Unpacker)


def h(text: str) -> bytes:
    """Bytes from hex written by hand (spaces allowed)."""
    return bytes.fromhex(text)


(
    test_roundtrip,
    test_truncated_encoding_is_refused,
    test_every_type_has_pack_unpack_and_a_strategy,
) = xs.protocol_tests(NFS3Packer, NFS3Unpacker, xs.NFS3_TYPES)


def test_every_procedure_has_its_types() -> None:
    procs = {k[len("NFSPROC3_") :]: v for k, v in vars(n).items() if k.startswith("NFSPROC3_")}
    assert sorted(procs.values()) == list(range(22))
    for proc in procs:
        if proc == "NULL":
            continue
        for suffix in ("3args", "3resok", "3res"):
            assert hasattr(n, proc + suffix)
            assert proc + suffix in xs.NFS3_TYPES
        assert (proc + "3resfail" in xs.NFS3_TYPES) == (proc != "GETATTR")


def _rfc_classes() -> list[type]:
    return [
        c
        for name, c in vars(n).items()
        if inspect.isclass(c)
        and c.__module__ == n.__name__
        and not name.startswith("_")
        and name not in ("NFS3Packer", "NFS3Unpacker")
    ]


@pytest.mark.parametrize("cls", _rfc_classes(), ids=lambda c: c.__name__)
def test_classes_are_slotted_dataclasses_quoting_their_xdr(cls: type) -> None:
    assert dataclasses.is_dataclass(cls)
    assert cls.__dictoffset__ == 0, "no __dict__: slots all the way down"
    doc = cls.__doc__ or ""
    assert f"struct {cls.__name__} " in doc or f"union {cls.__name__} " in doc


def test_constants() -> None:
    assert (n.NFS_PROGRAM, n.NFS_V3) == (100003, 3)
    assert n.NFS3_FHSIZE == 64
    assert n.NFS3_COOKIEVERFSIZE == n.NFS3_CREATEVERFSIZE == n.NFS3_WRITEVERFSIZE == 8
    assert (n.NFS3ERR_ACCES, n.NFS3ERR_NAMETOOLONG, n.NFS3ERR_STALE) == (13, 63, 70)
    assert (n.NFS3ERR_BADHANDLE, n.NFS3ERR_JUKEBOX) == (10001, 10008)
    assert len(n.NFSSTAT3) == 29
    assert (n.NF3REG, n.NF3DIR, n.NF3LNK, n.NF3FIFO) == (1, 2, 5, 7)
    assert (n.ACCESS3_READ, n.ACCESS3_EXECUTE) == (1, 0x20)
    assert (n.FSF3_LINK, n.FSF3_SYMLINK, n.FSF3_HOMOGENEOUS, n.FSF3_CANSETTIME) == (1, 2, 8, 16)
    assert (n.UNSTABLE, n.DATA_SYNC, n.FILE_SYNC) == (0, 1, 2)
    assert (n.UNCHECKED, n.GUARDED, n.EXCLUSIVE) == (0, 1, 2)
    assert (n.DONT_CHANGE, n.SET_TO_SERVER_TIME, n.SET_TO_CLIENT_TIME) == (0, 1, 2)
    assert (n.NFSPROC3_READDIRPLUS, n.NFSPROC3_COMMIT) == (17, 21)
    assert (n.MAXNAMLEN, n.MAXPATHLEN) == (255, 4096)


# --- known answers: wire layouts written out by hand --------------------------

FATTR3 = n.fattr3(
    type=n.NF3REG,
    mode=0o100644,
    nlink=1,
    uid=1000,
    gid=100,
    size=12345,
    used=16384,
    rdev=n.specdata3(0, 0),
    fsid=0x0102030405060708,
    fileid=42,
    atime=n.nfstime3(1700000000, 5),
    mtime=n.nfstime3(1700000001, 6),
    ctime=n.nfstime3(1700000002, 999999999),
)
FATTR3_HEX = (
    "00000001 000081a4 00000001 000003e8 00000064"  # type, mode, nlink, uid, gid
    "0000000000003039 0000000000004000"  # size, used
    "00000000 00000000"  # rdev
    "0102030405060708 000000000000002a"  # fsid, fileid
    "6553f100 00000005 6553f101 00000006 6553f102 3b9ac9ff"  # atime, mtime, ctime
)


def test_known_getattr3res_ok() -> None:
    res = n.GETATTR3res(n.NFS3_OK, n.GETATTR3resok(FATTR3))
    wire = h("00000000" + FATTR3_HEX)
    assert len(wire) == 4 + 84
    known("GETATTR3res", res, wire)


def test_known_getattr3res_failure_is_the_status_alone() -> None:
    assert enc("GETATTR3res", n.GETATTR3res(n.NFS3ERR_STALE)) == h("00000046")
    assert dec("GETATTR3res", h("00000046")) == n.GETATTR3res(n.NFS3ERR_STALE)


def test_known_post_op_attr() -> None:
    assert enc("post_op_attr", n.post_op_attr(True, FATTR3)) == h("00000001" + FATTR3_HEX)
    assert enc("post_op_attr", n.post_op_attr(False)) == h("00000000")


def test_known_read3args() -> None:
    args = n.READ3args(n.nfs_fh3(b"\x01\x02\x03\x04\x05"), 2**32 + 7, 32768)
    wire = h("00000005 0102030405000000  0000000100000007  00008000")
    known("READ3args", args, wire)


def test_known_read3res_ok() -> None:
    res = n.READ3res(n.NFS3_OK, n.READ3resok(n.post_op_attr(False), 5, True, b"hello"))
    wire = h("00000000 00000000 00000005 00000001 00000005 68656c6c6f000000")
    known("READ3res", res, wire)


def test_known_read3res_failure() -> None:
    res = n.READ3res(n.NFS3ERR_IO, resfail=n.READ3resfail(n.post_op_attr(False)))
    assert enc("READ3res", res) == h("00000005 00000000")
    assert dec("READ3res", h("00000005 00000000")) == res


def test_known_lookup3args() -> None:
    args = n.LOOKUP3args(n.diropargs3(n.nfs_fh3(b"\xaa\xbb\xcc\xdd"), b"foo"))
    wire = h("00000004 aabbccdd 00000003 666f6f00")
    known("LOOKUP3args", args, wire)


def test_known_readdir3res() -> None:
    res = n.READDIR3res(
        n.NFS3_OK,
        n.READDIR3resok(
            n.post_op_attr(False),
            h("0011223344556677"),
            n.dirlist3([n.entry3(2, b".", 1), n.entry3(2**32, b"ab", 2)], True),
        ),
    )
    wire = h(
        "00000000 00000000 0011223344556677"
        "00000001 0000000000000002 00000001 2e000000 0000000000000001"
        "00000001 0000000100000000 00000002 61620000 0000000000000002"
        "00000000 00000001"
    )
    known("READDIR3res", res, wire)


def test_known_setattr3args() -> None:
    args = n.SETATTR3args(
        n.nfs_fh3(b""),
        n.sattr3(
            n.set_mode3(True, 0o755),
            n.set_uid3(False),
            n.set_gid3(True, 5),
            n.set_size3(True, 2**40),
            n.set_atime(n.SET_TO_SERVER_TIME),
            n.set_mtime(n.SET_TO_CLIENT_TIME, n.nfstime3(1, 2)),
        ),
        n.sattrguard3(True, n.nfstime3(3, 4)),
    )
    wire = h(
        "00000000"  # empty handle
        "00000001 000001ed  00000000  00000001 00000005  00000001 0000010000000000"
        "00000001  00000002 00000001 00000002"  # atime: server; mtime: client (1, 2)
        "00000001 00000003 00000004"  # guard
    )
    known("SETATTR3args", args, wire)


def test_known_create3args_exclusive() -> None:
    args = n.CREATE3args(
        n.diropargs3(n.nfs_fh3(h("aabbccdd")), b"x"),
        n.createhow3(n.EXCLUSIVE, verf=h("0102030405060708")),
    )
    wire = h("00000004 aabbccdd 00000001 78000000 00000002 0102030405060708")
    known("CREATE3args", args, wire)


def test_known_write3resok() -> None:
    r = n.WRITE3resok(
        n.wcc_data(
            n.pre_op_attr(True, n.wcc_attr(10, n.nfstime3(1, 2), n.nfstime3(3, 4))),
            n.post_op_attr(False),
        ),
        10,
        n.FILE_SYNC,
        h("ffffffffffffffff"),
    )
    wire = h(
        "00000001 000000000000000a 00000001 00000002 00000003 00000004  00000000"
        "0000000a 00000002 ffffffffffffffff"
    )
    known("WRITE3resok", r, wire)


def test_known_rename3args_uses_from_() -> None:
    a = n.RENAME3args(n.diropargs3(n.nfs_fh3(b""), b"a"), n.diropargs3(n.nfs_fh3(b""), b"b"))
    wire = h("00000000 00000001 61000000 00000000 00000001 62000000")
    assert enc("RENAME3args", a) == wire
    assert dec("RENAME3args", wire).from_.name == b"a"


def test_wire_sizes_the_server_counts_on() -> None:
    assert len(enc("fattr3", FATTR3)) == 84
    assert len(enc("post_op_attr", n.post_op_attr(True, FATTR3))) == 88
    wcc = n.wcc_attr(0, n.nfstime3(0, 0), n.nfstime3(0, 0))
    assert len(enc("pre_op_attr", n.pre_op_attr(True, wcc))) == 28


# --- strictness: bools, enums, bounds, counts -----------------------------------

# (type, a valid encoding, the offset of a bool in it)
BOOL_SITES = [
    ("post_op_attr", "00000000", 0),
    ("pre_op_attr", "00000000", 0),
    ("post_op_fh3", "00000000", 0),
    ("set_mode3", "00000000", 0),
    ("set_size3", "00000000", 0),
    ("sattrguard3", "00000000", 0),
    ("dirlist3", "00000000 00000000", 0),  # the "another entry" bool
    ("dirlist3", "00000000 00000000", 4),  # eof
    ("dirlistplus3", "00000000 00000001", 4),
    ("READ3resok", "00000000 00000000 00000000 00000000", 8),
    ("PATHCONF3resok", "00000000 000000ff 000000ff 00000000 00000001 00000000 00000001", 16),
]


@pytest.mark.parametrize(("name", "valid", "offset"), BOOL_SITES)
@given(v=st.integers(2, 2**32 - 1))
def test_bool_other_than_0_or_1_is_refused(name: str, valid: str, offset: int, v: int) -> None:
    wire = bytearray(h(valid))
    dec(name, bytes(wire))  # the site is valid as it is
    wire[offset : offset + 4] = v.to_bytes(4, "big")
    with pytest.raises(XdrError):
        dec(name, bytes(wire))


def _word(v: int) -> str:
    return (v & 0xFFFFFFFF).to_bytes(4, "big").hex()


@given(st.integers(-(2**31), 2**31 - 1).filter(lambda v: v not in n.NFSSTAT3))
def test_unknown_nfsstat3_is_refused(v: int) -> None:
    with pytest.raises(XdrError):
        dec("READ3res", h(_word(v) + "00000000"))
    with pytest.raises(XdrError):
        dec("GETATTR3res", h(_word(v)))


SATTR3_NOTHING = "00000000" * 4 + "00000000" * 2


@pytest.mark.parametrize(
    ("name", "prefix", "suffix", "valid"),
    [
        ("createhow3", "", SATTR3_NOTHING, n.CREATEMODE3),
        ("mknoddata3", "", "", n.FTYPE3),
        ("set_atime", "", "", n.TIME_HOW),
        ("set_mtime", "", "00000000 00000000", n.TIME_HOW),
        ("ftype3", "", "", n.FTYPE3),
        ("stable_how", "", "", n.STABLE_HOW),
        ("WRITE3args", "00000000 0000000000000000 00000000", "00000000", n.STABLE_HOW),
        ("fattr3", "", "00" * 80, n.FTYPE3),
    ],
)
@given(v=st.integers(-(2**31), 2**31 - 1))
def test_unknown_enum_is_refused(
    name: str, prefix: str, suffix: str, valid: frozenset[int], v: int
) -> None:
    wire = h(prefix + _word(v) + suffix)
    if v in valid:
        return
    with pytest.raises(XdrError):
        dec(name, wire)


@pytest.mark.parametrize(
    ("name", "bound"),
    [("nfs_fh3", 64), ("filename3", 255), ("nfspath3", 4096), ("diropargs3", 64)],
)
def test_opaque_longer_than_its_bound_is_refused(name: str, bound: int) -> None:
    n_ = bound + 1
    wire = n_.to_bytes(4, "big") + b"x" * n_ + b"\0" * (-n_ % 4) + b"\0" * 8
    with pytest.raises(XdrError, match="exceeds"):
        getattr(NFS3Unpacker(wire), f"unpack_{name}")()


def test_name_longer_than_maxnamlen_is_refused() -> None:
    wire = h("00000000") + (256).to_bytes(4, "big") + b"n" * 256
    with pytest.raises(XdrError, match="exceeds"):
        dec("diropargs3", wire)
    with pytest.raises(XdrError, match="exceeds"):
        dec("entry3", h("0000000000000001") + (256).to_bytes(4, "big") + b"n" * 256 + b"\0" * 8)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("nfs_fh3", n.nfs_fh3(b"h" * 65)),
        ("filename3", b"n" * 256),
        ("nfspath3", b"p" * 4097),
        ("diropargs3", n.diropargs3(n.nfs_fh3(b""), b"n" * 256)),
        ("post_op_fh3", n.post_op_fh3(True, n.nfs_fh3(b"h" * 65))),
        ("cookieverf3", b"1234567"),
        ("writeverf3", b"123456789"),
    ],
)
def test_packing_beyond_a_bound_is_refused(name: str, value: Any) -> None:
    with pytest.raises(XdrError):
        enc(name, value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("post_op_attr", n.post_op_attr(True)),
        ("pre_op_attr", n.pre_op_attr(True)),
        ("post_op_fh3", n.post_op_fh3(True)),
        ("set_mode3", n.set_mode3(True)),
        ("set_size3", n.set_size3(True)),
        ("set_atime", n.set_atime(n.SET_TO_CLIENT_TIME)),
        ("sattrguard3", n.sattrguard3(True)),
        ("createhow3", n.createhow3(n.EXCLUSIVE)),
        ("createhow3", n.createhow3(n.GUARDED)),
        ("createhow3", n.createhow3(7)),
        ("mknoddata3", n.mknoddata3(n.NF3CHR)),
        ("mknoddata3", n.mknoddata3(n.NF3FIFO)),
        ("mknoddata3", n.mknoddata3(0)),
        ("GETATTR3res", n.GETATTR3res(n.NFS3_OK)),
        ("READ3res", n.READ3res(n.NFS3_OK)),
        ("READ3res", n.READ3res(n.NFS3ERR_IO)),
    ],
)
def test_packing_a_union_without_its_arm_is_refused(name: str, value: Any) -> None:
    with pytest.raises(XdrError):
        enc(name, value)


@pytest.mark.parametrize(
    "attrs",
    [
        dataclasses.replace(FATTR3, size=2**64),
        dataclasses.replace(FATTR3, uid=-1),
        dataclasses.replace(FATTR3, atime=n.nfstime3(2**32, 0)),
    ],
)
def test_packing_out_of_range_fixed_fields_is_refused(attrs: n.fattr3) -> None:
    with pytest.raises(XdrError):
        enc("fattr3", attrs)
    with pytest.raises(XdrError):
        enc("post_op_attr", n.post_op_attr(True, attrs))


@pytest.mark.parametrize(
    ("name", "prefix"),
    [
        ("READ3resok", "00000000 00000000 00000001"),  # data<>
        ("WRITE3args", "00000000 0000000000000000 00000000 00000000"),  # data<>
        ("READLINK3resok", "00000000"),  # nfspath3
        ("nfs_fh3", ""),
        ("filename3", ""),
    ],
)
def test_huge_length_is_refused_without_allocating(name: str, prefix: str) -> None:
    wire = h(prefix + "ffffffff") + b"\0" * 16
    xs.check_refused_without_allocating(lambda: dec(name, wire))


def test_a_long_entry_list_ends_with_the_message() -> None:
    # Each "another entry" bool must be followed by an entry: a chain of
    # bools alone runs out of bytes instead of looping.
    wire = h("00000001" * 1000)
    with pytest.raises(XdrError):
        dec("dirlist3", wire)


def test_trailing_bytes_are_left_for_done() -> None:
    u = NFS3Unpacker(h("00000000 00000000"))
    assert u.unpack_post_op_attr() == n.post_op_attr(False)
    with pytest.raises(XdrError, match="left"):
        u.done()


def test_result_subclasses_compare_by_type() -> None:
    wcc = n.wcc_data(n.pre_op_attr(False), n.post_op_attr(False))
    a = n.CREATE3resok(n.post_op_fh3(False), n.post_op_attr(False), wcc)
    b = n.MKDIR3resok(n.post_op_fh3(False), n.post_op_attr(False), wcc)
    assert a != b
    assert enc("CREATE3resok", a) == enc("MKDIR3resok", b)
    assert type(dec("MKDIR3resok", enc("MKDIR3resok", b))) is n.MKDIR3resok
