"""The loop's quick replies sent as one batch (``RpcServer._send_now``).

A batch goes out in one ``sendmsg`` when the socket takes it whole; when
it takes part, the rest must be queued from the exact byte where the
socket stopped, and every pooled buffer given back once, after its bytes
went.  A client that reads slowly makes the socket stop mid-batch.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

from nfsd.rpc import Dispatcher, Procedure, Program, Reply, no_args
from nfsd.transport.record import LAST_FRAGMENT, RecordReader
from nfsd.transport.server import Limits, RpcServer
from tests.proto.calls import call, parse

CALLS = 300
BODY = 60_000  # bytes of each reply, in three buffers (one of them empty)


class Counting:
    """Replies built from 'pooled' buffers, counted out and back."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.out = 0
        self.back = 0

    def run(self, ctx, args) -> Reply:  # type: ignore[no-untyped-def]
        with self.lock:
            self.out += 1
        xid = struct.pack(">I", ctx.xid)
        body = bytearray(xid * (BODY // 4))

        def release() -> None:
            with self.lock:
                self.back += 1

        return Reply([memoryview(body)[:1000], b"", memoryview(body)[1000:]], release=release)


def test_a_batch_the_socket_takes_in_part_arrives_whole_and_in_order() -> None:
    pool = Counting()
    program = Program(400002, "B", {1: {1: Procedure("BUF", no_args, pool.run)}})
    server = RpcServer(Dispatcher([program]), name="b", workers=2, limits=Limits())
    port = server.listen("127.0.0.1", 0, udp=False)
    server.start()
    try:
        batch = b"".join(
            struct.pack(">I", LAST_FRAGMENT | len(r)) + r
            for r in (call(400002, 1, 1, xid=i) for i in range(CALLS))
        )
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", port))
            s.sendall(batch)
            s.settimeout(10)
            reader = RecordReader(64 << 20)
            replies: list[bytes] = []
            while len(replies) < CALLS:
                time.sleep(0.0005)  # a slow reader: the server's sends stop part-way
                data = s.recv(65536)
                assert data, "connection closed"
                replies += reader.feed(data)
        for i, record in enumerate(replies):
            r = parse([record])
            assert r.xid == i
            assert r.body == struct.pack(">I", i) * (BODY // 4)
        deadline = time.monotonic() + 5
        while pool.back < CALLS and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (pool.out, pool.back) == (CALLS, CALLS)
    finally:
        server.stop()
