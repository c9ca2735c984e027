"""Calls no honest client sends: each gets its exact answer, never an exception.

Every call goes through the fuzz harness (``tests.fuzz.harness``): the demo
storage, the real MOUNT, NFS and portmapper programs, and the checks of
every reply (well formed, the call's xid, bounded size, nothing logged at
ERROR).  What the trusted servers answer, and what we chose:

=====================================  =======================================
input                                  answer (knfsd's where it has one)
=====================================  =======================================
record marker 0x7FFFFFFF               RecordTooLarge before reading on:
                                       the connection is closed
last-fragment bit never set            refused at 1 MiB + 64 KiB or at 8192
                                       fragments, holding no more than that
credential / verifier over 400 bytes   AUTH_BADCRED / AUTH_BADVERF
AUTH_SYS name > 255, gids > 16         AUTH_BADCRED
an XDR length of 0xFFFFFFFF            GARBAGE_ARGS, nothing allocated
bytes after the arguments              GARBAGE_ARGS
WRITE whose count is not its data's    GARBAGE_ARGS, nothing written (knfsd:
length                                 nfs3svc_decode_writeargs)
handle of 65 bytes or more             GARBAGE_ARGS (knfsd: nfs_fh3<64>
                                       fails to decode)
handle of 0 bytes, forged, bit         NFS3ERR_BADHANDLE (the MAC does not
flipped, another installation's        verify: knfsd answers BADHANDLE for
                                       what it cannot parse)
a handle the server made whose         NFS3ERR_STALE
entry does not exist
READ past the end, at 2^63-1, 2^64-1   NFS3_OK, 0 bytes, eof (an error here
                                       makes a client retry forever:
                                       CVE-2022-48827)
READ count 2^32-1                      NFS3_OK, at most 1 MiB, eof if reached
READDIR(PLUS) count too small          NFS3ERR_TOOSMALL, never an empty page
                                       without eof
READDIR(PLUS) count 2^32-1             NFS3_OK, reply capped at 1 MiB
garbage cookie or verifier             NFS3_OK: cookies are name hashes, so
                                       a cookie past the last name is eof
LOOKUP "", "a/b", "a\\0b"                NFS3ERR_NOENT (knfsd: GARBAGE_ARGS;
                                       no entry can have these names)
LOOKUP name of 256 bytes or more       GARBAGE_ARGS (filename3 is bounded at
                                       255 here, as knfsd's NFS3_MAXNAMLEN)
LOOKUP ".", ".."                       the folder, its parent (the root's
                                       parent is the root)
MNT relative, with "..", not below     MNT3ERR_NOENT (mountd: ACCES for a
the export                             relative path)
MNT path over 1024 bytes               GARBAGE_ARGS (dirpath<MNTPATHLEN>)
=====================================  =======================================
"""

from __future__ import annotations

import os
import struct
import tracemalloc
from collections.abc import Callable, Iterator

import pytest

from nfsd.programs.handles import HandleCodec
from nfsd.programs.nfs3.service import RTMAX
from nfsd.programs.portmap import MAX_BINDINGS
from nfsd.transport.record import (
    DEFAULT_MAX_FRAGMENTS,
    DEFAULT_MAX_RECORD,
    LAST_FRAGMENT,
    RecordReader,
    RecordTooLarge,
)
from tests.fuzz.harness import PEERS, SECRET, Harness
from tests.fuzz.seeds import MERGED, PLAIN, SESSION, args3, fragments, nfs_args, sys_cred
from tests.proto.calls import ParsedReply, call, parse
from xdr import mount3, nfs3, rpc
from xdr import portmap as pm
from xdr.mount3 import Mount3Packer, Mount3Unpacker
from xdr.nfs3 import NFS3Unpacker
from xdr.portmap import PortmapPacker, PortmapUnpacker
from xdr.rpc import AUTH_NONE, AUTH_SYS

NFS, MNT = nfs3.NFS_PROGRAM, mount3.MOUNT_PROGRAM
LAST = LAST_FRAGMENT


@pytest.fixture(scope="module")
def h() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.close()


@pytest.fixture(scope="module")
def handles(h: Harness) -> dict[str, bytes]:
    c = h.caller
    return {
        "root": c.root().data,
        "file": c.walk(*PLAIN).data,
        "merged": c.walk(*MERGED).data,
        "folder": c.walk("latest", "web01").data,
        "latest": c.walk("latest").data,
    }


def ask(h: Harness, record: bytes, transport: str = "tcp") -> ParsedReply:
    """The checked reply to one record (the harness raises on a malformed one)."""
    h.errors.records.clear()
    data = h.serve(record, PEERS[0], transport, inline=False)
    assert data is not None
    assert not h.errors.records
    return parse([data])


def rpc_stat(r: ParsedReply) -> tuple[int, int]:
    return r.reply_stat, r.stat


def nfs(h: Harness, proc: int, args: bytes) -> tuple[int, bytes]:
    """(nfsstat3, the whole result) of an NFS call that the RPC layer accepted."""
    r = ask(h, call(NFS, 3, proc, args))
    assert rpc_stat(r) == (rpc.MSG_ACCEPTED, rpc.SUCCESS)
    return struct.unpack_from(">I", r.body)[0], r.body


def result(proc_name: str, body: bytes) -> object:
    u = NFS3Unpacker(body)
    res = getattr(u, f"unpack_{proc_name}3res")()
    u.done()
    return res


def peak_bytes(fn: Callable[[], object]) -> int:
    """The most memory Python allocated while ``fn`` ran."""
    tracemalloc.start()
    try:
        fn()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


# -- record marking (RFC 5531 §11) -------------------------------------------


@pytest.mark.parametrize("header", [0x7FFFFFFF, 0xFFFFFFFF])
def test_record_marker_of_2_gib_is_refused_before_allocating(header: int) -> None:
    reader = RecordReader()

    def feed() -> None:
        with pytest.raises(RecordTooLarge):
            reader.feed(struct.pack(">I", header) + b"x" * 100)

    assert peak_bytes(feed) < 64 * 1024


def test_thousands_of_zero_length_fragments_then_a_call_are_one_record(h: Harness) -> None:
    record = call(NFS, 3, nfs3.NFSPROC3_NULL, xid=77)
    stream = b"\0\0\0\0" * 5000 + struct.pack(">I", LAST | len(record)) + record
    got = RecordReader().feed(stream)
    assert got == [record]
    r = ask(h, got[0])
    assert (r.xid, *rpc_stat(r), r.body) == (77, rpc.MSG_ACCEPTED, rpc.SUCCESS, b"")


def test_a_write_in_4000_one_byte_fragments_is_reassembled_and_refused_rofs(
    h: Harness, handles: dict[str, bytes]
) -> None:
    data = os.urandom(3900)
    args = args3(
        "WRITE", nfs3.WRITE3args(nfs3.nfs_fh3(handles["file"]), 0, 3900, nfs3.FILE_SYNC, data)
    )
    record = call(NFS, 3, nfs3.NFSPROC3_WRITE, args)
    stream = fragments(record, *range(1, len(record)))
    assert len(record) > 4000
    reader = RecordReader()
    got = [rec for i in range(0, len(stream), 1000) for rec in reader.feed(stream[i : i + 1000])]
    assert got == [record]
    status, _ = nfs(h, nfs3.NFSPROC3_WRITE, args)
    assert status == nfs3.NFS3ERR_ROFS


def test_zero_length_fragments_forever_are_refused_at_the_fragment_cap() -> None:
    reader = RecordReader()
    with pytest.raises(RecordTooLarge, match="fragments"):
        for _ in range(DEFAULT_MAX_FRAGMENTS):
            reader.feed(b"\0\0\0\0")
    assert reader.pending < 4 * DEFAULT_MAX_FRAGMENTS


def test_one_byte_fragments_never_last_hold_their_bytes_only_then_are_refused() -> None:
    reader = RecordReader()
    chunk = b"\0\0\0\x01y" * 1000

    def feed() -> None:
        with pytest.raises(RecordTooLarge, match="fragments"):
            for _ in range(DEFAULT_MAX_FRAGMENTS // 1000 + 1):
                reader.feed(chunk)

    # 8192 one-byte fragments: about 8 KiB held, not 8192 objects.
    assert peak_bytes(feed) < 256 * 1024
    assert reader.pending <= len(chunk) + DEFAULT_MAX_FRAGMENTS


def test_large_fragments_never_last_are_refused_at_the_record_cap() -> None:
    reader = RecordReader()
    piece = struct.pack(">I", 65536) + b"z" * 65536
    with pytest.raises(RecordTooLarge, match="bytes"):
        for _ in range(DEFAULT_MAX_RECORD // 65536 + 1):
            reader.feed(piece)
    assert reader.pending <= DEFAULT_MAX_RECORD + len(piece)


# -- RPC header and credentials (RFC 5531 §8.2, §9, appendix A) ---------------


def header(xid: int, cred: tuple[int, bytes], verf: tuple[int, bytes], length: int = -1) -> bytes:
    """A call to NFS GETATTR whose credential length word may lie."""
    n = len(cred[1]) if length < 0 else length
    pad = b"\0" * (-len(cred[1]) % 4)
    return (
        struct.pack(">IIIIIIII", xid, rpc.CALL, 2, NFS, 3, 1, cred[0], n)
        + cred[1]
        + pad
        + struct.pack(">II", verf[0], len(verf[1]))
        + verf[1]
        + b"\0" * (-len(verf[1]) % 4)
    )


def test_credential_over_400_bytes_is_auth_badcred(h: Harness) -> None:
    for record in (
        header(5, (AUTH_SYS, b"c" * 404), (AUTH_NONE, b"")),
        header(5, (AUTH_SYS, b""), (AUTH_NONE, b""), length=0xFFFFFFFF),
        header(5, (AUTH_NONE, b"c" * 401), (AUTH_NONE, b"")),
    ):
        r = ask(h, record)
        assert (r.xid, *rpc_stat(r)) == (5, rpc.MSG_DENIED, rpc.AUTH_ERROR)
        assert r.body == struct.pack(">I", rpc.AUTH_BADCRED)


def test_verifier_over_400_bytes_is_auth_badverf(h: Harness) -> None:
    for verf in (b"v" * 401, b"v" * 1000):
        r = ask(h, header(6, (AUTH_NONE, b""), (AUTH_NONE, verf)))
        assert (r.xid, *rpc_stat(r)) == (6, rpc.MSG_DENIED, rpc.AUTH_ERROR)
        assert r.body == struct.pack(">I", rpc.AUTH_BADVERF)


@pytest.mark.parametrize(
    ("machinename", "gids", "ok"),
    [(b"m" * 255, 16, True), (b"m" * 256, 0, False), (b"m", 17, False), (b"m", 10_000, False)],
)
def test_auth_sys_bounds(h: Harness, machinename: bytes, gids: int, ok: bool) -> None:
    cred = sys_cred(machinename, gids)
    if len(cred.body) > 400:
        record = header(8, (AUTH_SYS, cred.body), (AUTH_NONE, b""))
    else:
        record = call(NFS, 3, nfs3.NFSPROC3_NULL, cred=cred, xid=8)
    r = ask(h, record)
    if ok:
        assert rpc_stat(r) == (rpc.MSG_ACCEPTED, rpc.SUCCESS)
    else:
        assert rpc_stat(r) == (rpc.MSG_DENIED, rpc.AUTH_ERROR)
        assert r.body == struct.pack(">I", rpc.AUTH_BADCRED)


# -- arguments: lengths, trailing bytes -------------------------------------------


def tracing(unpacker: type) -> type:
    """``unpacker``, noting where each variable-length field's length word is read."""

    def traced(name: str) -> Callable[..., object]:
        inner = getattr(unpacker, name)

        def method(self, *a: object) -> object:  # type: ignore[no-untyped-def]
            self.lengths.append(self.get_position())
            return inner(self, *a)

        return method

    names = ("unpack_opaque", "unpack_string", "unpack_bytes", "unpack_opaque_max")
    names += ("unpack_array", "unpack_array_max")
    return type(f"Traced{unpacker.__name__}", (unpacker,), {n: traced(n) for n in names})


def length_positions(unpacker: type, decode: Callable[..., object], args: bytes) -> list[int]:
    """The offsets in ``args`` of every length word ``decode`` reads."""
    u = tracing(unpacker)(args)
    u.lengths = []
    decode(u)
    u.done()
    return sorted(set(u.lengths))


def every_call(handles: dict[str, bytes]) -> Iterator[tuple[str, int, int, int, bytes]]:
    """(name, program, version, procedure, valid arguments) of every call with arguments."""
    for proc, args in nfs_args(
        handles["root"], handles["file"], handles["merged"], handles["folder"]
    ).items():
        if args:
            yield f"nfs3-{proc}", NFS, 3, proc, args
    p = Mount3Packer()
    p.pack_dirpath(b"/recover/images")
    yield "mnt", MNT, 3, mount3.MOUNTPROC3_MNT, p.get_buffer()
    yield "umnt", MNT, 3, mount3.MOUNTPROC3_UMNT, p.get_buffer()
    q = PortmapPacker()
    q.pack_rpcb(pm.rpcb(NFS, 3, b"tcp", b"127.0.0.1.8.1", b"me"))
    for vers in (pm.RPCBVERS, pm.RPCBVERS4):
        yield f"rpcb{vers}-getaddr", pm.PMAP_PROG, vers, pm.RPCBPROC_GETADDR, q.get_buffer()
    q = PortmapPacker()
    q.pack_mapping(pm.mapping(NFS, 3, pm.IPPROTO_TCP, 0))
    yield "pmap-getport", pm.PMAP_PROG, 2, pm.PMAPPROC_GETPORT, q.get_buffer()


UNPACKERS = {NFS: NFS3Unpacker, MNT: Mount3Unpacker, pm.PMAP_PROG: PortmapUnpacker}


def test_length_0xffffffff_in_every_variable_length_field_is_garbage_args(
    h: Harness, handles: dict[str, bytes]
) -> None:
    tried = 0
    for name, prog, vers, proc, args in every_call(handles):
        decode = h.dispatcher.programs[prog].versions[vers][proc].decode
        positions = length_positions(UNPACKERS[prog], decode, args)
        if name != "pmap-getport":
            assert positions, name
        for at in positions:
            bad = args[:at] + b"\xff\xff\xff\xff" + args[at + 4 :]
            record = call(prog, vers, proc, bad)
            assert peak_bytes(lambda r=record: ask(h, r)) < 1024 * 1024, (name, at)
            r = ask(h, record)
            assert rpc_stat(r) == (rpc.MSG_ACCEPTED, rpc.GARBAGE_ARGS), (name, at)
            tried += 1
    assert tried >= 40


def test_bytes_after_valid_arguments_are_garbage_args(
    h: Harness, handles: dict[str, bytes]
) -> None:
    for name, prog, vers, proc, args in every_call(handles):
        for junk in (b"\0\0\0\0", b"junkjunk"):
            r = ask(h, call(prog, vers, proc, args + junk))
            assert rpc_stat(r) == (rpc.MSG_ACCEPTED, rpc.GARBAGE_ARGS), name
    for prog, vers in ((NFS, 3), (MNT, 3), (pm.PMAP_PROG, 2), (pm.PMAP_PROG, 4)):
        r = ask(h, call(prog, vers, 0, b"\0\0\0\0"))
        assert rpc_stat(r) == (rpc.MSG_ACCEPTED, rpc.GARBAGE_ARGS)


# -- handles (RFC 1813 §2.3.3: opaque, at most 64 bytes) ------------------------


def getattr_of(h: Harness, fh: bytes) -> ParsedReply:
    p = Mount3Packer()  # nfs_fh3 is opaque<64>: packed by hand to pass any length
    p.pack_opaque(fh)
    return ask(h, call(NFS, 3, nfs3.NFSPROC3_GETATTR, p.get_buffer()))


def getattr_status(h: Harness, fh: bytes) -> int:
    r = getattr_of(h, fh)
    assert rpc_stat(r) == (rpc.MSG_ACCEPTED, rpc.SUCCESS)
    return result("GETATTR", r.body).status  # type: ignore[attr-defined]


@pytest.mark.parametrize(("count", "length"), [(16, 8), (8, 16), (1 << 20, 16), (0, 4), (4, 0)])
def test_a_write_whose_count_is_not_its_data_length_is_garbage_args(
    h: Harness, handles: dict[str, bytes], count: int, length: int
) -> None:
    """Both exports: the read-only one (else ROFS) and a session's file, which
    keeps its bytes and size (the call writes neither length's worth)."""
    c = h.caller
    res = c.mount(f"/recover/instant/{SESSION}".encode())
    assert res.mountinfo is not None
    folder = c.lookup(nfs3.nfs_fh3(res.mountinfo.fhandle), b"web01").resok.object
    disk = c.lookup(folder, b"web01-flat.vmdk").resok.object
    before = c.read(disk, 0, 64).resok.data, c.getattr(disk).resok.obj_attributes.size
    for fh in (handles["file"], disk.data):
        data = bytes([0x5A]) * length
        args = nfs3.WRITE3args(nfs3.nfs_fh3(fh), 0, count, nfs3.FILE_SYNC, data)
        r = ask(h, call(NFS, 3, nfs3.NFSPROC3_WRITE, args3("WRITE", args)))
        assert rpc_stat(r) == (rpc.MSG_ACCEPTED, rpc.GARBAGE_ARGS)
    assert (c.read(disk, 0, 64).resok.data, c.getattr(disk).resok.obj_attributes.size) == before


@pytest.mark.parametrize("size", [65, 128, 400])
def test_handle_over_64_bytes_is_garbage_args(h: Harness, size: int) -> None:
    r = getattr_of(h, b"\1" * size)
    assert rpc_stat(r) == (rpc.MSG_ACCEPTED, rpc.GARBAGE_ARGS)


def test_empty_and_random_handles_are_badhandle(h: Harness) -> None:
    for fh in (b"", b"\0" * 64, os.urandom(64), os.urandom(20), b"\1" + os.urandom(19)):
        assert getattr_status(h, fh) == nfs3.NFS3ERR_BADHANDLE, fh.hex()


def test_every_single_bit_flip_of_a_valid_handle_is_badhandle(
    h: Harness, handles: dict[str, bytes]
) -> None:
    fh = handles["merged"]
    assert getattr_status(h, fh) == nfs3.NFS3_OK
    for bit in range(len(fh) * 8):
        flipped = bytearray(fh)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert getattr_status(h, bytes(flipped)) == nfs3.NFS3ERR_BADHANDLE, bit


def test_handle_of_another_installation_is_badhandle(h: Harness) -> None:
    other = HandleCodec(h.namespace, b"another installation's secret!!!")
    fh = other.encode(MERGED, h.namespace.getattr(MERGED).fileid)
    assert len(fh) <= 64
    assert getattr_status(h, fh) == nfs3.NFS3ERR_BADHANDLE


def test_handle_of_an_entry_that_is_gone_is_stale(h: Harness) -> None:
    fh = HandleCodec(h.namespace, SECRET).encode(("2026-11-20T0100", "gone"), 12345)
    assert getattr_status(h, fh) == nfs3.NFS3ERR_STALE


# -- READ (RFC 1813 §3.3.6) --------------------------------------------------------


def read(h: Harness, fh: bytes, offset: int, count: int) -> nfs3.READ3res:
    status, body = nfs(
        h, nfs3.NFSPROC3_READ, args3("READ", nfs3.READ3args(nfs3.nfs_fh3(fh), offset, count))
    )
    res = result("READ", body)
    assert res.status == status  # type: ignore[attr-defined]
    return res  # type: ignore[return-value]


@pytest.mark.parametrize("offset", [2**63 - 1, 2**63, 2**64 - 1, 6 * 2**20, 6 * 2**20 + 1])
@pytest.mark.parametrize("count", [0, 1, 4096, 2**32 - 1])
@pytest.mark.parametrize("which", ["merged", "file"])
def test_read_past_the_end_is_a_short_read_with_eof(
    h: Harness, handles: dict[str, bytes], which: str, offset: int, count: int
) -> None:
    res = read(h, handles[which], offset, count)
    assert res.status == nfs3.NFS3_OK
    assert (res.resok.count, res.resok.eof, res.resok.data) == (0, True, b"")


@pytest.mark.parametrize("which", ["merged", "file"])
def test_read_count_at_the_extremes(h: Harness, handles: dict[str, bytes], which: str) -> None:
    path = MERGED if which == "merged" else PLAIN
    size = h.namespace.getattr(path).size
    res = read(h, handles[which], 0, 0)
    assert (res.status, res.resok.count, res.resok.eof) == (nfs3.NFS3_OK, 0, size == 0)
    res = read(h, handles[which], 0, 2**32 - 1)
    n = min(size, RTMAX)
    assert (res.status, res.resok.count, res.resok.eof) == (nfs3.NFS3_OK, n, n == size)
    res = read(h, handles[which], size - 1, 2**32 - 1)
    assert (res.status, res.resok.count, res.resok.eof) == (nfs3.NFS3_OK, 1, True)


def test_read_of_a_folder_is_isdir(h: Harness, handles: dict[str, bytes]) -> None:
    assert read(h, handles["folder"], 2**64 - 1, 2**32 - 1).status == nfs3.NFS3ERR_ISDIR


# -- READDIR / READDIRPLUS (RFC 1813 §3.3.16, §3.3.17) ----------------------------


def readdir(h: Harness, fh: bytes, cookie: int, verf: bytes, count: int) -> nfs3.READDIR3res:
    _, body = nfs(
        h,
        nfs3.NFSPROC3_READDIR,
        args3("READDIR", nfs3.READDIR3args(nfs3.nfs_fh3(fh), cookie, verf, count)),
    )
    return result("READDIR", body)  # type: ignore[return-value]


def readdirplus(  # noqa: PLR0917
    h: Harness, fh: bytes, cookie: int, verf: bytes, dircount: int, maxcount: int
) -> nfs3.READDIRPLUS3res:
    _, body = nfs(
        h,
        nfs3.NFSPROC3_READDIRPLUS,
        args3(
            "READDIRPLUS", nfs3.READDIRPLUS3args(nfs3.nfs_fh3(fh), cookie, verf, dircount, maxcount)
        ),
    )
    return result("READDIRPLUS", body)  # type: ignore[return-value]


@pytest.mark.parametrize("count", [0, 1, 8, 100, 104])
def test_readdir_with_a_count_nothing_fits_in_is_toosmall(
    h: Harness, handles: dict[str, bytes], count: int
) -> None:
    assert readdir(h, handles["root"], 0, b"\0" * 8, count).status == nfs3.NFS3ERR_TOOSMALL
    res = readdirplus(h, handles["root"], 0, b"\0" * 8, count, count)
    assert res.status == nfs3.NFS3ERR_TOOSMALL


def test_no_count_gives_an_empty_page_without_eof(h: Harness, handles: dict[str, bytes]) -> None:
    for count in range(0, 1200, 4):
        for res in (
            readdir(h, handles["root"], 0, b"\0" * 8, count),
            readdirplus(h, handles["root"], 0, b"\0" * 8, count, count),
            readdirplus(h, handles["root"], 0, b"\0" * 8, 0, count),
        ):
            if res.status == nfs3.NFS3_OK:
                assert res.resok.reply.entries or res.resok.reply.eof, count
            else:
                assert res.status == nfs3.NFS3ERR_TOOSMALL, count


def test_readdir_with_count_2_32_minus_1_lists_everything(
    h: Harness, handles: dict[str, bytes]
) -> None:
    names = {n for n, _ in h.namespace.readdir(())}
    res = readdir(h, handles["root"], 0, os.urandom(8), 2**32 - 1)
    assert res.status == nfs3.NFS3_OK and res.resok.reply.eof
    assert {e.name.decode() for e in res.resok.reply.entries} == names
    res = readdirplus(h, handles["root"], 0, os.urandom(8), 2**32 - 1, 2**32 - 1)
    assert res.status == nfs3.NFS3_OK and res.resok.reply.eof
    assert {e.name.decode() for e in res.resok.reply.entries} == names


@pytest.mark.parametrize("cookie", [1, 2**63 - 1, 2**63, 2**64 - 1, 0x0123456789ABCDEF])
def test_garbage_cookies_and_verifiers_get_a_clean_page(
    h: Harness, handles: dict[str, bytes], cookie: int
) -> None:
    listed = {
        e.cookie for e in readdir(h, handles["root"], 0, b"\0" * 8, 65536).resok.reply.entries
    }
    for verf in (b"\0" * 8, b"\xff" * 8, os.urandom(8)):
        res = readdir(h, handles["root"], cookie, verf, 65536)
        assert res.status == nfs3.NFS3_OK and res.resok.reply.eof
        got = {e.cookie for e in res.resok.reply.entries}
        assert got == {c for c in listed if c > cookie}


# -- LOOKUP (RFC 1813 §3.3.3) ------------------------------------------------------


def lookup(h: Harness, fh: bytes, name: bytes) -> ParsedReply:
    p = Mount3Packer()  # filename3 packed by hand: the packer refuses what is too long
    p.pack_opaque(fh)
    p.pack_opaque(name)
    return ask(h, call(NFS, 3, nfs3.NFSPROC3_LOOKUP, p.get_buffer()))


@pytest.mark.parametrize(
    ("name", "status"),
    [
        (b"", nfs3.NFS3ERR_NOENT),
        (b"web01/web01.vmx", nfs3.NFS3ERR_NOENT),
        (b"/", nfs3.NFS3ERR_NOENT),
        (b"web01\0", nfs3.NFS3ERR_NOENT),
        (b"\0", nfs3.NFS3ERR_NOENT),
        (b"x" * 255, nfs3.NFS3ERR_NOENT),
        (b"web01", nfs3.NFS3_OK),
    ],
)
def test_lookup_of_names_no_entry_can_have(
    h: Harness, handles: dict[str, bytes], name: bytes, status: int
) -> None:
    r = lookup(h, handles["latest"], name)
    assert rpc_stat(r) == (rpc.MSG_ACCEPTED, rpc.SUCCESS)
    res = result("LOOKUP", r.body)
    assert res.status == status  # type: ignore[attr-defined]


@pytest.mark.parametrize("size", [256, 1000, 4096])
def test_lookup_of_a_name_over_255_bytes_is_garbage_args(
    h: Harness, handles: dict[str, bytes], size: int
) -> None:
    r = lookup(h, handles["latest"], b"x" * size)
    assert rpc_stat(r) == (rpc.MSG_ACCEPTED, rpc.GARBAGE_ARGS)


def test_lookup_of_dot_and_dotdot(h: Harness, handles: dict[str, bytes]) -> None:
    for fh, name, want in (
        (handles["folder"], b".", handles["folder"]),
        (handles["folder"], b"..", handles["latest"]),
        (handles["root"], b".", handles["root"]),
        (handles["root"], b"..", handles["root"]),
    ):
        res = result("LOOKUP", lookup(h, fh, name).body)
        assert res.status == nfs3.NFS3_OK  # type: ignore[attr-defined]
        assert res.resok.object.data == want  # type: ignore[attr-defined]


def test_lookup_in_a_file_is_notdir(h: Harness, handles: dict[str, bytes]) -> None:
    for name in (b".", b"..", b"x"):
        res = result("LOOKUP", lookup(h, handles["file"], name).body)
        assert res.status == nfs3.NFS3ERR_NOTDIR  # type: ignore[attr-defined]


# -- MNT (RFC 1813 §5.2.1) ----------------------------------------------------------


def mnt(h: Harness, path: bytes) -> ParsedReply:
    p = Mount3Packer()
    p.pack_opaque(path)
    return ask(h, call(MNT, 3, mount3.MOUNTPROC3_MNT, p.get_buffer()))


@pytest.mark.parametrize(
    "path",
    [
        b"recover/images",
        b"recover/images/latest",
        b"./recover/images",
        b"/recover/images/..",
        b"/recover/images/../images",
        b"/recover/images/latest/../latest",
        b"/recover/images/./latest",
        b"/recover/../recover/images",
        b"/recover/images\0",
        b"/recover/images/lat\0est",
        b"/recover/images/latest/\0",
        b"/recover/images/" + b"x" * 1008,
    ],
)
def test_mnt_of_relative_dotdot_and_odd_paths_is_noent(h: Harness, path: bytes) -> None:
    assert len(path) <= mount3.MNTPATHLEN
    r = mnt(h, path)
    assert rpc_stat(r) == (rpc.MSG_ACCEPTED, rpc.SUCCESS)
    assert r.body == struct.pack(">I", mount3.MNT3ERR_NOENT), path


@pytest.mark.parametrize("size", [1025, 4096, 100_000])
def test_mnt_of_a_path_over_1024_bytes_is_garbage_args(h: Harness, size: int) -> None:
    r = mnt(h, b"/recover/images/" + b"x" * (size - 16))
    assert rpc_stat(r) == (rpc.MSG_ACCEPTED, rpc.GARBAGE_ARGS)


def test_mnt_of_the_export_still_works(h: Harness) -> None:
    r = mnt(h, b"/recover/images")
    u = Mount3Unpacker(r.body)
    res = u.unpack_mountres3()
    u.done()
    assert res.fhs_status == mount3.MNT3_OK


# -- portmapper SET (RFC 1833): loopback may register, never without bound ------


def rpcb_set(h: Harness, prog: int, owner: bytes) -> bool:
    p = PortmapPacker()
    p.pack_rpcb(pm.rpcb(prog, 1, b"tcp", b"127.0.0.1.15.160", owner))
    r = ask(h, call(pm.PMAP_PROG, pm.RPCBVERS, pm.RPCBPROC_SET, p.get_buffer()))
    assert rpc_stat(r) == (rpc.MSG_ACCEPTED, rpc.SUCCESS)
    return r.body == b"\0\0\0\1"


def test_rpcb_set_keeps_the_table_and_dump_bounded() -> None:
    h = Harness()  # a table of its own: this test fills it
    try:
        _fill_the_table(h)
    finally:
        h.close()


def _fill_the_table(h: Harness) -> None:
    assert not rpcb_set(h, 500000, b"o" * 256)
    assert rpcb_set(h, 500000, b"o" * 255)
    added = 1 + sum(rpcb_set(h, 500001 + i, b"o" * 255) for i in range(MAX_BINDINGS))
    assert added < MAX_BINDINGS
    assert not rpcb_set(h, 600000, b"")
    r = ask(h, call(pm.PMAP_PROG, pm.RPCBVERS, pm.RPCBPROC_DUMP))
    u = PortmapUnpacker(r.body)
    assert len(u.unpack_rpcblist()) == MAX_BINDINGS
    u.done()
