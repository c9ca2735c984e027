"""A WRITE's data is a view of its call record (no XDR copy): the same
arguments and the same reply-cache checksum as the copied bytes, bad lengths
still GARBAGE_ARGS, and a large record (a ``bytearray`` from the record
reader) served through the general path to stable storage."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from nfsd.programs import drc
from nfsd.rpc import settle
from nfsd.transport.record import RecordReader
from tests.proto.calls import call
from tests.proto.fakens import FakeNamespace
from tests.proto.sessionclient import SessionCaller
from tests.unit.test_record_straight import receive_one
from xdr import nfs3
from xdr.base import XdrError
from xdr.nfs3 import NFS3Packer, NFS3Unpacker

FH = nfs3.nfs_fh3(b"\x02" + bytes(range(26)))


def packed(args: nfs3.WRITE3args) -> bytes:
    p = NFS3Packer()
    p.pack_WRITE3args(args)
    return p.get_buffer()


@pytest.mark.parametrize("size", [0, 1, 3, 4096, 1 << 20])
@pytest.mark.parametrize("kind", [bytes, bytearray])
def test_data_is_a_view_of_the_record_with_the_same_checksum(size: int, kind: type) -> None:
    data = os.urandom(size)
    args = nfs3.WRITE3args(FH, 1 << 40, size, nfs3.FILE_SYNC, data)
    record = kind(b"\0" * 8 + packed(args))
    u = NFS3Unpacker(record)
    u.set_position(8)
    got = u.unpack_WRITE3args()
    u.done()
    assert isinstance(got.data, memoryview) and got.data.obj is record  # not a copy
    assert got == args
    assert drc.checksum(got) == drc.checksum(args)


def test_a_short_or_unpadded_data_is_refused() -> None:
    whole = packed(nfs3.WRITE3args(FH, 0, 5, nfs3.FILE_SYNC, b"abcde"))
    for cut in (1, 3, 4):
        u = NFS3Unpacker(whole[:-cut])
        with pytest.raises(XdrError):
            u.unpack_WRITE3args()
    u = NFS3Unpacker(whole[:-12] + struct.pack(">I", 0xFFFFFFFF) + b"x" * 8)
    with pytest.raises(XdrError):
        u.unpack_WRITE3args()


def test_a_1_mib_write_received_straight_is_served_and_durable(tmp_path: Path) -> None:
    base = FakeNamespace({("vm",): None, ("vm", "disk"): bytes(4 << 20)})
    c = SessionCaller(base, tmp_path / "state")
    c.start("s1", {"web01": ("vm",)})
    d = c.lookup(c.session_root("s1"), b"web01").resok.object
    fh = c.lookup(d, b"disk").resok.object
    data = os.urandom(1 << 20)
    body = call(
        nfs3.NFS_PROGRAM,
        3,
        nfs3.NFSPROC3_WRITE,
        packed(nfs3.WRITE3args(fh, 4096, len(data), nfs3.FILE_SYNC, data)),
        xid=99,
    )
    (record,) = receive_one(RecordReader(), body, 65536, 100_000)
    assert type(record) is bytearray
    reply = settle(c.dispatcher.dispatch(record, c.peer, "tcp"), 30)
    assert reply is not None
    reply.free()
    record[:] = b"\xee" * len(record)  # the record is gone once answered
    assert c.read_all(fh, 4096 + len(data))[4096:] == data
