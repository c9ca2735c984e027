"""The RPC client against a tiny in-test server (TCP, UDP, a Unix socket)."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nfsd.rpc import CallContext, Dispatcher, Procedure, Program, Reply, no_args
from nfsd.transport.record import LAST_FRAGMENT, RecordReader
from nfsd.transport.rpcclient import RpcClient, RpcError, RpcTimeout, auth_sys, encode_call
from xdr import rpc
from xdr.base import Packer, Unpacker

PROG = 400001


def whoami(ctx: CallContext, args: None) -> Reply:
    p = Packer()
    p.pack_uint(ctx.uid)
    p.pack_array(list(ctx.gids), p.pack_uint)
    return Reply([p.get_buffer()])


def echo(ctx: CallContext, data: bytes) -> Reply:
    p = Packer()
    p.pack_opaque(data)
    return Reply([p.get_buffer()])


DISPATCHER = Dispatcher(
    [
        Program(
            PROG,
            "TEST",
            {
                1: {
                    0: Procedure("NULL", no_args, lambda ctx, a: Reply([])),
                    1: Procedure("ECHO", Unpacker.unpack_opaque, echo),
                    2: Procedure("WHOAMI", no_args, whoami),
                }
            },
        )
    ]
)


class TinyServer:
    """One thread per socket; ``mode`` changes how replies are sent."""

    def __init__(self, family: int = socket.AF_INET, path: Path | None = None) -> None:
        self.mode = "normal"  # normal | stale-first | fragments | silent | drop-first | close
        self.seen = 0
        if family == socket.AF_UNIX:
            assert path is not None
            self.tcp = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.tcp.bind(str(path))
            self.udp = None
            self.port = 0
        else:
            self.tcp = socket.create_server(("127.0.0.1", 0))
            self.port = self.tcp.getsockname()[1]
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.bind(("127.0.0.1", self.port))
        self.tcp.listen(4)
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        if self.udp is not None:
            self.threads.append(threading.Thread(target=self._datagrams, daemon=True))
        for t in self.threads:
            t.start()

    def close(self) -> None:
        for s in (self.tcp, self.udp):
            if s is not None:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def _reply(self, record: bytes) -> bytes | None:
        self.seen += 1
        reply = DISPATCHER.dispatch(record, "127.0.0.1:1", "tcp")
        return None if reply is None else b"".join(bytes(p) for p in reply.parts)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        reader = RecordReader()
        with conn:
            while data := conn.recv(65536):
                for record in reader.feed(data):
                    body = self._reply(record)
                    if body is None or self.mode == "silent":
                        continue
                    if self.mode == "close":
                        return
                    if self.mode == "stale-first":
                        stale = struct.pack(
                            ">I", (struct.unpack(">I", body[:4])[0] + 9) & 0xFFFFFFFF
                        )
                        conn.sendall(
                            struct.pack(">I", LAST_FRAGMENT | len(body)) + stale + body[4:]
                        )
                    if self.mode == "fragments":
                        half = len(body) // 2
                        conn.sendall(struct.pack(">I", half) + body[:half])
                        time.sleep(0.05)
                        rest = body[half:]
                        conn.sendall(struct.pack(">I", LAST_FRAGMENT | len(rest)) + rest)
                    else:
                        conn.sendall(struct.pack(">I", LAST_FRAGMENT | len(body)) + body)

    def _datagrams(self) -> None:
        assert self.udp is not None
        while True:
            try:
                data, addr = self.udp.recvfrom(65535)
            except OSError:
                return
            if self.mode == "drop-first" and self.seen == 0:
                self.seen += 1
                continue
            body = self._reply(data)
            if body is not None and self.mode != "silent":
                self.udp.sendto(body, addr)


@pytest.fixture
def server() -> Iterator[TinyServer]:
    s = TinyServer()
    yield s
    s.close()


def opaque(data: bytes) -> bytes:
    p = Packer()
    p.pack_opaque(data)
    return p.get_buffer()


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_null_and_echo(server: TinyServer, transport: str) -> None:
    with RpcClient("127.0.0.1", server.port, transport=transport, timeout=5) as c:
        r = c.call(PROG, 1, 0)
        assert r.ok and r.body == b""
        r = c.call(PROG, 1, 1, opaque(b"hello"))
        assert r.ok and Unpacker(r.body).unpack_opaque() == b"hello"


def test_several_calls_on_one_connection(server: TinyServer) -> None:
    with RpcClient("127.0.0.1", server.port) as c:
        for i in range(20):
            assert Unpacker(c.call(PROG, 1, 1, opaque(bytes([i]) * i)).body).unpack_opaque() == (
                bytes([i]) * i
            )


def test_auth_none_and_auth_sys(server: TinyServer) -> None:
    with RpcClient("127.0.0.1", server.port) as c:
        u = Unpacker(c.call(PROG, 1, 2).body)
        assert u.unpack_uint() == 65534
    with RpcClient("127.0.0.1", server.port, cred=auth_sys(1000, 100, (4, 5))) as c:
        u = Unpacker(c.call(PROG, 1, 2).body)
        assert u.unpack_uint() == 1000
        assert u.unpack_array(u.unpack_uint) == [100, 4, 5]


def test_rpc_level_failures_are_results_not_exceptions(server: TinyServer) -> None:
    with RpcClient("127.0.0.1", server.port) as c:
        r = c.call(PROG + 1, 1, 0)
        assert (r.reply_stat, r.stat, r.ok) == (rpc.MSG_ACCEPTED, rpc.PROG_UNAVAIL, False)
        r = c.call(PROG, 7, 0)
        assert r.stat == rpc.PROG_MISMATCH
        assert struct.unpack(">II", r.body) == (1, 1)
        assert c.call(PROG, 1, 9).stat == rpc.PROC_UNAVAIL
        assert c.call(PROG, 1, 1, b"\0\0\0\x09").stat == rpc.GARBAGE_ARGS


def test_crafted_bytes_through_exchange(server: TinyServer) -> None:
    call = bytearray(encode_call(0xABCD, PROG, 1, 0))
    call[8:12] = struct.pack(">I", 3)  # rpcvers 3
    with RpcClient("127.0.0.1", server.port) as c:
        reply = c.exchange(bytes(call))
    xid, kind, stat, reject, low, high = struct.unpack(">6I", reply)
    assert (xid, kind, stat, reject, low, high) == (0xABCD, rpc.REPLY, rpc.MSG_DENIED, 0, 2, 2)


def test_replies_with_another_xid_are_skipped(server: TinyServer) -> None:
    server.mode = "stale-first"
    with RpcClient("127.0.0.1", server.port) as c:
        assert Unpacker(c.call(PROG, 1, 1, opaque(b"x")).body).unpack_opaque() == b"x"


def test_a_reply_in_several_fragments_is_reassembled(server: TinyServer) -> None:
    server.mode = "fragments"
    with RpcClient("127.0.0.1", server.port) as c:
        data = bytes(range(256)) * 40
        assert Unpacker(c.call(PROG, 1, 1, opaque(data)).body).unpack_opaque() == data


def test_udp_sends_again_until_answered(server: TinyServer) -> None:
    server.mode = "drop-first"
    with RpcClient("127.0.0.1", server.port, transport="udp", timeout=5, retransmit=0.2) as c:
        started = time.monotonic()
        assert c.call(PROG, 1, 0).ok
        assert 0.15 < time.monotonic() - started < 3


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_timeout(server: TinyServer, transport: str) -> None:
    server.mode = "silent"
    with RpcClient("127.0.0.1", server.port, transport=transport, timeout=0.5, retransmit=0.2) as c:
        started = time.monotonic()
        with pytest.raises(RpcTimeout):
            c.call(PROG, 1, 0)
        assert time.monotonic() - started < 3


def test_a_closed_connection_is_an_error_and_the_next_call_reconnects(server: TinyServer) -> None:
    server.mode = "close"
    with RpcClient("127.0.0.1", server.port, timeout=5) as c:
        with pytest.raises(RpcError, match="closed"):
            c.call(PROG, 1, 0)
        server.mode = "normal"
        assert c.call(PROG, 1, 0).ok


def test_nobody_listening() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with RpcClient("127.0.0.1", port, timeout=2) as c, pytest.raises(RpcError):
        c.call(PROG, 1, 0)
    with RpcClient("127.0.0.1", port, transport="udp", timeout=2) as c, pytest.raises(RpcError):
        c.call(PROG, 1, 0)


def test_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "rpc.sock"
    s = TinyServer(socket.AF_UNIX, path)
    try:
        with RpcClient(str(path), transport="unix") as c:
            assert c.call(PROG, 1, 0).ok
    finally:
        s.close()


def test_unknown_transport() -> None:
    with pytest.raises(ValueError):
        RpcClient("127.0.0.1", 1, transport="sctp")


def test_xids_differ_between_calls() -> None:
    c = RpcClient("127.0.0.1", 1)
    assert len({c.next_xid() for _ in range(100)}) == 100
