"""Large session READs of regions never written go out from the base's mapping.

A session's READ of 128 KiB or more on plain TCP whose runs are all the
base's (a real merged image here: base and pancbt runs) and in the page
cache is answered with views of the base's mappings (``read.by_mapping``),
as the read-only export's is; a READ that touches a rewritten region (the
overlay's logs have no mapping), a small one, one over TLS and one over
UDP are copied.  Either way the bytes are the file's as the session shows
it: checked against the same READ copied (TLS) and against the expected
image.
"""

from __future__ import annotations

import mmap
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from merge.stack import build_namespace
from nfsd.programs.nfs3 import read
from nfsd.rpc import Reply
from nfsd.transport.tls import Security
from tests.proto.calls import call
from tests.proto.sessionclient import SessionCaller
from tests.unit.merge_helpers import KIB, MIB
from xdr import nfs3
from xdr.nfs3 import NFS3Packer

SIZE = 2 * MIB + 5000  # not a multiple of a block: EOF inside a READ


@pytest.fixture()
def session(tmp_path: Path) -> Iterator[tuple[SessionCaller, nfs3.nfs_fh3, bytearray]]:
    storage = tmp_path / "storage"
    (storage / "vm").mkdir(parents=True)
    image = bytearray(random.Random(7).randbytes(SIZE))
    (storage / "vm" / "disk-flat.vmdk").write_bytes(image)
    (storage / "vm" / "a.vmx").write_text("x=1\n")
    base = build_namespace(str(storage))
    caller = SessionCaller(base, tmp_path / "state")
    caller.start("s1", {"web01": ("vm",)})
    d = caller.lookup(caller.session_root("s1"), b"web01").resok.object
    fh = caller.lookup(d, b"disk-flat.vmdk").resok.object
    yield caller, fh, image
    caller.manager.close()


def record(fh: nfs3.nfs_fh3, offset: int, count: int) -> bytes:
    p = NFS3Packer()
    p.pack_READ3args(nfs3.READ3args(fh, offset, count))
    return call(nfs3.NFS_PROGRAM, 3, nfs3.NFSPROC3_READ, p.get_buffer(), xid=random.getrandbits(31))


def views(reply: Reply) -> int:
    return sum(
        1
        for p in reply.parts
        if isinstance(p, memoryview) and p.readonly and isinstance(p.obj, mmap.mmap)
    )


def served(c: SessionCaller, fh: nfs3.nfs_fh3, offset: int, count: int, **kw) -> tuple[int, bytes]:  # type: ignore[no-untyped-def]
    reply = c.dispatcher.dispatch(record(fh, offset, count), c.peer, "tcp", **kw)
    assert reply is not None
    try:
        return views(reply), b"".join(bytes(p) for p in reply.parts)[4:]  # type: ignore[arg-type]
    finally:
        reply.free()


def test_never_written_regions_are_sent_from_the_mapping_and_rewritten_ones_copied(session) -> None:  # type: ignore[no-untyped-def]
    c, fh, image = session
    offsets = [0, 4 * KIB, MIB - 1, SIZE - 200 * KIB, SIZE - 10]
    for at in offsets:  # the page cache holds the file: it was just written
        mapped_n, mapped = served(c, fh, at, MIB)
        copied_n, copied = served(c, fh, at, MIB, security=Security("tls"))
        assert copied_n == 0 and mapped == copied
        want = bytes(image[at : at + MIB])
        assert mapped.endswith(want + b"\0" * (-len(want) % 4))
        assert mapped_n >= 1 or len(want) < read.MAP_MIN
    small_n, _ = served(c, fh, 0, read.MAP_MIN - 1)
    assert small_n == 0
    # a rewritten region: the log has no mapping, so the READ over it is copied
    c.write(fh, 300 * KIB, b"W" * 4096)
    image[300 * KIB : 300 * KIB + 4096] = b"W" * 4096
    n, over = served(c, fh, 0, MIB)
    assert n == 0 and over.endswith(bytes(image[:MIB]))
    n, beside = served(c, fh, MIB, MIB)  # the rest of the file is still the base's
    assert n >= 1 and beside.endswith(bytes(image[MIB : 2 * MIB]))
    udp_n, _ = served_udp(c, fh)
    assert udp_n == 0


def served_udp(c: SessionCaller, fh: nfs3.nfs_fh3) -> tuple[int, bytes]:
    reply = c.dispatcher.dispatch(record(fh, MIB, MIB), c.peer, "udp")
    assert reply is not None
    try:
        return views(reply), b""
    finally:
        reply.free()
