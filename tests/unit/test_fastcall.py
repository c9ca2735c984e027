"""``nfsd._fastcall`` equals its pure-Python twins, on ordinary and hostile input.

Each C function and its twin get the same inputs and must give the same
result (or both raise): ``parse_call`` on generated calls (the fast path's
``records`` of ``test_fastpath``, other procedures, random header words)
and on random bytes, cut short or grown; ``cut_records`` on streams of
fragments with lying lengths; ``pread_full`` on files shorter than asked,
with and without RWF_NOWAIT; ``send_replies`` on socket pairs, buffers
and FileRuns mixed, batches over the iovec limit.  The fuzz tests run the
parser over many random and mutated records (it must never read past
one: the C code is built with its bounds checks, and a read past a
``bytes`` would show as garbage in a result that the twin does not share).
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nfsd import native
from nfsd.programs.nfs3 import fastpath, read
from nfsd.rpc import FileRun, WouldBlock
from nfsd.transport import record as record_mod
from nfsd.transport import server
from tests.unit.test_fastpath import records as fast_records
from xdr import nfs3, rpc

c = native.compiled
pytestmark = pytest.mark.skipif(c is None, reason="nfsd._fastcall did not build (no compiler)")

U32 = st.integers(0, 2**32 - 1)
# Header words: mostly the values the parser looks for, now and then any.
SERVED = [nfs3.NFSPROC3_GETATTR, nfs3.NFSPROC3_LOOKUP, nfs3.NFSPROC3_ACCESS]
SERVED += [nfs3.NFSPROC3_READ, nfs3.NFSPROC3_WRITE, nfs3.NFSPROC3_READDIRPLUS]


def word(*likely: int) -> st.SearchStrategy[int]:
    return st.sampled_from(likely) | U32


@st.composite
def hostile_calls(draw: st.DrawFn) -> bytes:
    """A call header whose every word may lie, then any bytes."""
    cred_len = draw(word(0, 4, 20, 400, 401, 2**31))
    fh_len = draw(word(0, 8, 36, 64, 65))
    head = struct.pack(
        ">8I",
        draw(U32),
        draw(word(rpc.CALL, rpc.REPLY)),
        draw(word(rpc.RPC_VERSION)),
        draw(word(nfs3.NFS_PROGRAM)),
        draw(word(3, 2)),
        draw(word(*SERVED, 0, 8)),
        draw(word(rpc.AUTH_SYS, rpc.AUTH_NONE)),
        cred_len,
    )
    cred = draw(st.binary(max_size=min(cred_len, 404) + 4))
    verf = struct.pack(">3I", draw(word(0)), draw(word(0)), fh_len)
    rest = draw(st.binary(max_size=120))
    return head + cred + verf + rest


def same(f_c: Callable[..., Any], f_py: Callable[..., Any], *args: object) -> Any:
    """Both results, or both exceptions of the same type."""
    try:
        want = f_py(*args)
    except Exception as e:
        with pytest.raises(type(e)):
            f_c(*args)
        return None
    got = f_c(*args)
    assert got == want
    return got


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(rec=fast_records())
def test_parse_call_equals_its_twin_on_calls(rec: bytes) -> None:
    same(c.parse_call, fastpath.parse_call_py, rec)


@settings(max_examples=600)
@given(rec=hostile_calls(), cut=st.integers(0, 600), tail=st.binary(max_size=16))
def test_parse_call_equals_its_twin_on_hostile_headers(rec: bytes, cut: int, tail: bytes) -> None:
    same(c.parse_call, fastpath.parse_call_py, rec)
    same(c.parse_call, fastpath.parse_call_py, rec[:cut])
    same(c.parse_call, fastpath.parse_call_py, rec + tail)


@settings(max_examples=300)
@given(rec=st.binary(max_size=200))
def test_parse_call_equals_its_twin_on_random_bytes(rec: bytes) -> None:
    same(c.parse_call, fastpath.parse_call_py, rec)


def test_parse_call_refuses_what_is_not_bytes() -> None:
    with pytest.raises(TypeError):
        c.parse_call(bytearray(64))


def test_the_c_constants_are_the_protocols() -> None:
    assert (c.CALL, c.RPC_VERSION, c.AUTH_SYS) == (rpc.CALL, rpc.RPC_VERSION, rpc.AUTH_SYS)
    assert c.MAX_AUTH_BYTES == rpc.MAX_AUTH_BYTES
    assert (c.NFS_PROGRAM, c.NFS3_FHSIZE) == (nfs3.NFS_PROGRAM, nfs3.NFS3_FHSIZE)
    assert c.MAXNAMLEN == nfs3.MAXNAMLEN
    assert c.MAX_IOV >= server.IOV_BATCH


def test_fuzz_parse_call_on_mutated_calls() -> None:
    """Many records, each a valid READ, LOOKUP, WRITE or READDIRPLUS with random bytes
    overwritten, cut or grown: the two parsers agree on every one."""
    rnd = __import__("random").Random(9)
    bases = []
    for proc, args in (
        (nfs3.NFSPROC3_READ, struct.pack(">QI", 4096, 4096)),
        (nfs3.NFSPROC3_LOOKUP, struct.pack(">I", 3) + b"abc\0"),
        (nfs3.NFSPROC3_WRITE, b"\0" * 40),
        (nfs3.NFSPROC3_READDIRPLUS, struct.pack(">Q8sII", 77, b"verifier", 8192, 8192)),
    ):
        cred = struct.pack(">II", 0, 4) + b"host" + struct.pack(">III", 0, 0, 0)
        bases.append(
            struct.pack(">8I", 1, 0, 2, nfs3.NFS_PROGRAM, 3, proc, 1, len(cred))
            + cred
            + struct.pack(">3I", 0, 0, 8)
            + b"handle.."
            + args
        )
    for base in bases:
        assert c.parse_call(base) == fastpath.parse_call_py(base) is not None
    for _ in range(30_000):
        rec = bytearray(rnd.choice(bases))
        for _ in range(rnd.randrange(1, 4)):
            rec[rnd.randrange(len(rec))] = rnd.randrange(256)
        if rnd.random() < 0.3:
            rec = rec[: rnd.randrange(len(rec) + 1)]
        elif rnd.random() < 0.3:
            rec += os.urandom(rnd.randrange(1, 12))
        data = bytes(rec)
        assert c.parse_call(data) == fastpath.parse_call_py(data)


# -- cut_records --------------------------------------------------------------


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    """Fragments, most whole and last, some not last, some lying about their length."""
    out = b""
    for _ in range(draw(st.integers(0, 6))):
        body = draw(st.binary(max_size=64))
        length = draw(st.sampled_from([len(body)] * 6 + [len(body) + 1, 2**31 - 1, 0]))
        last = draw(st.sampled_from([record_mod.LAST_FRAGMENT] * 5 + [0]))
        out += struct.pack(">I", last | length) + body
    return out + draw(st.binary(max_size=3))


@settings(max_examples=400)
@given(
    data=streams(),
    pos=st.integers(0, 8),
    max_record=st.sampled_from([0, 10, 64, 2**31]),
    kind=st.sampled_from([bytes, bytearray, memoryview]),
)
def test_cut_records_equals_its_twin(data: bytes, pos: int, max_record: int, kind: type) -> None:
    pos = min(pos, len(data))
    got = same(c.cut_records, record_mod.cut_records_py, kind(data), pos, max_record)
    if got is not None:
        assert all(type(r) is bytes for r in got[0])


def test_cut_records_refuses_a_position_out_of_range() -> None:
    for pos in (-1, 5):
        with pytest.raises(ValueError):
            c.cut_records(b"\0\0\0\0", pos, 100)


@given(
    records=st.lists(st.binary(max_size=200), min_size=1, max_size=6),
    chunk=st.integers(1, 300),
)
def test_the_reader_cuts_the_same_records_with_and_without_c(
    records: list[bytes], chunk: int
) -> None:
    stream = b"".join(struct.pack(">I", record_mod.LAST_FRAGMENT | len(r)) + r for r in records)
    out = {}
    for mod in (c, None):
        saved = record_mod.fastcall
        record_mod.fastcall = mod
        try:
            reader = record_mod.RecordReader()
            got: list = []
            for i in range(0, len(stream), chunk):
                got += reader.feed(stream[i : i + chunk])
            out[mod is None] = got
        finally:
            record_mod.fastcall = saved
    assert out[True] == out[False] == records


# -- pread_full -----------------------------------------------------------------


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    path = tmp_path_factory.mktemp("pread") / "f"
    path.write_bytes(bytes(range(256)) * 64)  # 16 KiB, in the page cache once written
    fd = os.open(path, os.O_RDONLY)
    yield fd
    os.close(fd)


def _read_both(fd: int, start: int, length: int, nowait: bool) -> tuple[object, object]:
    """``read_full`` with and without C: (bytes or exception type) each."""
    out = []
    for mod in (c, None):
        saved = read.fastcall
        read.fastcall = mod
        buf = bytearray(b"\xee" * 8192)
        try:
            read.read_full(memoryview(buf), fd, start, length, nowait)
            out.append(bytes(buf))
        except (WouldBlock, read.InputChanged) as e:
            out.append((type(e), str(e)))
        finally:
            read.fastcall = saved
    return out[0], out[1]


@given(
    start=st.sampled_from([0, 1, 4096, 16384 - 100, 16384, 20000]),
    length=st.sampled_from([0, 1, 100, 4096, 8192]),
    nowait=st.booleans(),
)
def test_read_full_equals_its_twin(data_file: int, start: int, length: int, nowait: bool) -> None:
    with_c, pure = _read_both(data_file, start, length, nowait)
    assert with_c == pure


def test_pread_full_reads_a_whole_run_and_says_short(data_file: int) -> None:
    buf = bytearray(8192)
    assert c.pread_full(data_file, buf, 4096, 8192, False) == 8192
    assert bytes(buf) == (bytes(range(256)) * 64)[4096 : 4096 + 8192]
    assert c.pread_full(data_file, buf, 16384 - 10, 100, False) == 10  # the file ends
    with pytest.raises(ValueError):
        c.pread_full(data_file, buf, 0, 8193, False)  # past the buffer: refused
    with pytest.raises(TypeError):
        c.pread_full(data_file, b"read-only", 0, 1, False)
    with pytest.raises(OSError):
        c.pread_full(-1, buf, 0, 1, False)


# -- send_replies -----------------------------------------------------------------


def send_c(sock: socket.socket, replies: list[list], max_iov: int) -> tuple[int, int] | None:
    """``server._send_replies_c`` with the extension even under ``RECOVERY_FS_PURE=1``."""
    assert c is not None
    return c.send_replies(sock.fileno(), replies, max_iov, socket.MSG_DONTWAIT)


def _send_both(replies: list[list], max_iov: int) -> tuple[object, bytes, object, bytes]:
    """What each twin returns and what its peer receives."""
    out: list = []
    for send in (send_c, server.send_replies_py):
        a, b = socket.socketpair()
        try:
            a.setblocking(False)
            try:
                got: object = send(a, replies, max_iov)
            except OSError as e:
                got = type(e)
            a.close()
            data = b""
            while chunk := b.recv(65536):
                data += chunk
            out += [got, data]
        finally:
            a.close()
            b.close()
    return out[0], out[1], out[2], out[3]


buffers = st.one_of(
    st.binary(max_size=50),
    st.binary(max_size=50).map(bytearray),
    st.binary(max_size=50).map(memoryview),
)


@settings(max_examples=200)
@given(
    replies=st.lists(st.lists(buffers, max_size=5), max_size=6),
    max_iov=st.sampled_from([0, 3, 8, 512]),
)
def test_send_replies_equals_its_twin(replies: list[list], max_iov: int) -> None:
    got_c, data_c, got_py, data_py = _send_both(replies, max_iov)
    assert (got_c, data_c) == (got_py, data_py)
    if got_c is not None:
        assert data_c == b"".join(
            struct.pack(">I", record_mod.LAST_FRAGMENT | sum(map(len, r))) + b"".join(r)
            for r in replies
        )


def test_send_replies_leaves_a_file_run_to_the_queue(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY)
    run = FileRun(fd, 0, 1)
    try:
        got_c, data_c, got_py, data_py = _send_both([[b"head"], [b"x", run]], 512)
        assert got_c is None and got_py is None and data_c == data_py == b""
    finally:
        os.close(fd)


def test_send_replies_says_what_the_socket_did_not_take() -> None:
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        big = [[bytes(1 << 20)]]
        sent, total = send_c(a, big, 512)
        assert 0 < sent < total == (1 << 20) + 4
        with pytest.raises(BlockingIOError):
            while True:
                send_c(a, big, 512)
        a.close()
        with pytest.raises(OSError):
            send_c(a, [[b"x"]], 512)  # a closed socket (fileno -1)
    finally:
        a.close()
        b.close()
