"""The PROXY protocol header: the parser (HAProxy's spec) and the transport's use of it."""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nfsd.rpc import Dispatcher, Procedure, Program, Reply, no_args
from nfsd.transport.proxy import V2_SIGNATURE, HeaderReader, ProxyError, Trusted
from nfsd.transport.server import Limits, RpcServer
from tests.proto.calls import call, parse
from tests.unit.test_server import recv_records, send


def v2(command: int, family: int, body: bytes) -> bytes:
    return V2_SIGNATURE + struct.pack(">BBH", 0x20 | command, family, len(body)) + body


def v2_tcp4(src: str, sport: int, tlv: bytes = b"") -> bytes:
    body = socket.inet_aton(src) + socket.inet_aton("10.0.0.1") + struct.pack(">HH", sport, 2049)
    return v2(1, 0x11, body + tlv)


def feed_all(data: bytes, step: int = 0) -> tuple[object, bytes]:
    r = HeaderReader()
    pieces = [data] if not step else [data[i : i + step] for i in range(0, len(data), step)]
    for i, p in enumerate(pieces):
        done = r.feed(p)
        if done is not None:
            return done[0].source, done[1] + b"".join(pieces[i + 1 :])
    raise AssertionError("incomplete")


@pytest.mark.parametrize("step", [0, 1, 5])
def test_v1_tcp4_names_the_client_and_hands_back_what_follows(step: int) -> None:
    line = b"PROXY TCP4 192.0.2.7 10.0.0.1 812 2049\r\n"
    assert feed_all(line + b"\x80rest", step) == (("192.0.2.7", 812), b"\x80rest")


def test_v1_tcp6_and_unknown() -> None:
    assert feed_all(b"PROXY TCP6 2001:db8::7 2001:db8::1 700 2049\r\n")[0] == ("2001:db8::7", 700)
    assert feed_all(b"PROXY UNKNOWN\r\n") == (None, b"")
    assert feed_all(b"PROXY UNKNOWN ffff:f::1 ffff:f::2 1 2\r\n") == (None, b"")


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY TCP4 192.0.2.7 10.0.0.1 812\r\n",  # a field missing
        b"PROXY TCP4 2001:db8::7 10.0.0.1 812 2049\r\n",  # family and address disagree
        b"PROXY TCP4 192.0.2.7 10.0.0.1 70000 2049\r\n",  # port out of range
        b"PROXY TCP4 192.0.2.7 10.0.0.1 0812 2049\r\n",  # leading zero
        b"PROXY UDP4 192.0.2.7 10.0.0.1 812 2049\r\n",
        b"PROXY TCP4 host.example 10.0.0.1 812 2049\r\n",
        b"PROXY TCP4 192.0.2.7  10.0.0.1 812 2049\r\n",
        b"PROXY \xff\r\n",
    ],
)
def test_v1_malformed_lines_are_refused(line: bytes) -> None:
    with pytest.raises(ProxyError):
        feed_all(line)


def test_v1_a_line_without_end_is_bounded() -> None:
    r = HeaderReader()
    assert r.feed(b"PROXY TCP4 " + b"1" * 90) is None
    with pytest.raises(ProxyError, match="107"):
        r.feed(b"1" * 20)


@pytest.mark.parametrize("step", [0, 1, 7])
def test_v2_tcp4_with_tlvs(step: int) -> None:
    tlv = b"\x04\x00\x03abc"  # PP2_TYPE_NOOP, skipped
    assert feed_all(v2_tcp4("198.51.100.9", 1000, tlv) + b"next", step) == (
        ("198.51.100.9", 1000),
        b"next",
    )


def test_v2_tcp6_a_v4_mapped_address_is_ipv4() -> None:
    def body(src: str) -> bytes:
        dst = socket.inet_pton(socket.AF_INET6, "2001:db8::1")
        return socket.inet_pton(socket.AF_INET6, src) + dst + struct.pack(">HH", 900, 2049)

    assert feed_all(v2(1, 0x21, body("2001:db8::5")))[0] == ("2001:db8::5", 900)
    assert feed_all(v2(1, 0x21, body("::ffff:192.0.2.1")))[0] == ("192.0.2.1", 900)


def test_v2_local_and_unspec_are_the_balancer_itself() -> None:
    assert feed_all(v2(0, 0x00, b"")) == (None, b"")
    assert feed_all(v2(1, 0x00, b"xx")) == (None, b"")


@pytest.mark.parametrize(
    "data",
    [
        V2_SIGNATURE + b"\x11\x11\x00\x0c" + bytes(12),  # version 1 in the v2 format
        V2_SIGNATURE + b"\x22\x11\x00\x0c" + bytes(12),  # command 2
        v2(1, 0x12, bytes(12)),  # UDP over IPv4
        v2(1, 0x11, bytes(8)),  # too short for two addresses and ports
        V2_SIGNATURE + b"\x21\x11\xff\xff",  # 65535 bytes announced
        b"\x80\x00\x00\x28" + bytes(40),  # an RPC record, no header
        b"GET / HTTP/1.0\r\n",
    ],
)
def test_v2_and_non_headers_are_refused(data: bytes) -> None:
    with pytest.raises(ProxyError):
        feed_all(data)


@given(st.binary(max_size=300))
def test_any_bytes_give_a_header_an_error_or_a_wish_for_more(data: bytes) -> None:
    with contextlib.suppress(ProxyError):
        HeaderReader().feed(data)


def test_trusted_networks() -> None:
    t = Trusted(["10.1.0.0/16", "2001:db8::/64", "127.0.0.2"])
    assert "10.1.2.3" in t and "127.0.0.2" in t and "::ffff:10.1.0.1" in t
    assert "2001:db8::9" in t
    assert "10.2.0.1" not in t and "127.0.0.1" not in t and "nonsense" not in t
    assert not Trusted([])


# --- the transport ------------------------------------------------------------------

PEER = Program(
    number=400002,
    name="P",
    versions={1: {1: Procedure("PEER", no_args, lambda c, a: Reply([c.peer.encode()]))}},
)


@pytest.fixture()
def server() -> Iterator[int]:
    s = RpcServer(
        Dispatcher([PEER]),
        name="t",
        workers=2,
        limits=Limits(record_timeout=1.0),
        proxy_from=("127.0.0.2/32",),
    )
    port = s.listen("127.0.0.1", 0)
    s.start()
    yield port
    s.stop()


def connect(port: int, source: str) -> socket.socket:
    s = socket.socket()
    s.settimeout(5)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def peer_of(s: socket.socket) -> bytes:
    send(s, call(400002, 1, 1, xid=9))
    return parse(recv_records(s, 1)).body


def closed(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


@pytest.mark.parametrize(
    "header",
    [b"PROXY TCP4 192.0.2.7 127.0.0.1 812 2049\r\n", v2_tcp4("192.0.2.7", 812)],
)
def test_a_listed_balancer_names_the_client(server: int, header: bytes) -> None:
    with connect(server, "127.0.0.2") as s:
        # the header and the first record in one segment, as HAProxy sends them
        s.sendall(header + struct.pack(">I", 0x80000000 | len(call(400002, 1, 1, xid=9))))
        s.sendall(call(400002, 1, 1, xid=9))
        assert parse(recv_records(s, 1)).body == b"192.0.2.7:812"
        assert peer_of(s) == b"192.0.2.7:812"


def test_a_health_check_is_the_balancer_itself(server: int) -> None:
    with connect(server, "127.0.0.2") as s:
        s.sendall(v2(0, 0, b""))
        assert peer_of(s).startswith(b"127.0.0.2:")


def test_a_listed_balancer_without_header_is_closed(server: int) -> None:
    with connect(server, "127.0.0.2") as s:
        send(s, call(400002, 1, 1, xid=9))
        assert closed(s)


def test_a_listed_balancer_that_sends_nothing_is_closed_after_record_timeout(
    server: int,
) -> None:
    with connect(server, "127.0.0.2") as s:
        s.sendall(b"PROXY TCP4 ")
        assert closed(s)


@pytest.mark.parametrize(
    "header",
    [b"PROXY TCP4 192.0.2.7 127.0.0.1 812 2049\r\n", v2_tcp4("192.0.2.7", 812)],
)
def test_a_header_from_anyone_else_is_closed(server: int, header: bytes) -> None:
    with connect(server, "127.0.0.3") as s:
        s.sendall(header)
        assert closed(s)


def test_others_are_served_as_always(server: int) -> None:
    with connect(server, "127.0.0.3") as s:
        assert peer_of(s).startswith(b"127.0.0.3:")
