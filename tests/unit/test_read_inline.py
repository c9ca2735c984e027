"""Which READs the connection's loop serves itself (``inline``) and which go
to a worker: over 64 KiB only when the loop serves that one connection
alone (``alone``), through the general path and the fast path alike."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from merge.stack import build_namespace
from nfsd.programs.nfs3 import read
from nfsd.rpc import WouldBlock
from tests.proto.calls import call, parse
from tests.proto.nfsclient import Caller
from xdr import nfs3
from xdr.nfs3 import NFS3Packer, NFS3Unpacker

MIB = 1 << 20
PEER = "127.0.0.1:900"


def test_a_large_read_is_inline_only_when_alone(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """(copied into a buffer: one sent from the file's mapping is inline on any
    connection, tests/unit/test_read_mapping.py)"""
    monkeypatch.setattr(read, "MAP_MIN", 1 << 62)
    storage = tmp_path / "storage"
    storage.mkdir()
    data = os.urandom(2 * MIB)
    (storage / "big.img").write_bytes(data)
    c = Caller(build_namespace(str(storage)))
    fh = c.walk("big.img")
    p = NFS3Packer()
    p.pack_READ3args(nfs3.READ3args(fh, MIB, MIB))
    record = call(nfs3.NFS_PROGRAM, 3, nfs3.NFSPROC3_READ, p.get_buffer())
    d = c.dispatcher
    for _ in range(3):  # the general path first, then (caches warm) the fast path
        with pytest.raises(WouldBlock):
            d.dispatch(record, PEER, "tcp", inline=True)
        worker = d.dispatch(record, PEER, "tcp")
        assert worker is not None
        expected = b"".join(bytes(x) for x in worker.parts)
        worker.free()
        try:
            alone = d.dispatch(record, PEER, "tcp", inline=True, alone=True)
        except WouldBlock:
            pytest.skip("no RWF_NOWAIT on this file system: nothing is ever inline")
        assert alone is not None
        assert b"".join(bytes(x) for x in alone.parts) == expected
        alone.free()
    res = NFS3Unpacker(parse([expected]).body).unpack_READ3res()
    assert res.resok.data == data[MIB:]
