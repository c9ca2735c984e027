"""The PROXY protocol header (HAProxy's spec, v1 text and v2 binary), sans IO.

Design notes
------------
A TCP load balancer (HAProxy in TCP mode) connects to the server from its
own address: the exports check would see the balancer, not the client.
With ``send-proxy`` (v1) or ``send-proxy-v2`` HAProxy writes, before the
client's first byte, a header naming the client's address and port.  The
header is trusted ONLY from the addresses of ``--proxy-from``:

==============================  ============================================
the connection comes from       and its first bytes are
==============================  ============================================
a ``--proxy-from`` address      a valid header: the peer becomes the client
                                it names (``LOCAL``/``UNKNOWN``, a health
                                check: the balancer itself); anything else,
                                or no header within ``record_timeout``:
                                closed
anyone else                     a PROXY header: closed (a client must not
                                choose the address it is checked as); an
                                RPC record: served as always
==============================  ============================================

:class:`HeaderReader` takes bytes as they come (a header may arrive in
pieces) and is bounded: a v1 line is at most 107 bytes, a v2 header at
most 16 + 216 bytes here (the addresses and TLVs; TLVs are skipped).  It
never looks past the header: what follows is the RPC stream, handed back.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

V1_PREFIX = b"PROXY "
V1_MAX = 107  # the spec's longest line, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_HEAD = struct.Struct(">12sBBH")  # signature, version|command, family|protocol, length
V2_MAX_BODY = 216  # two IPv6 addresses and ports (36) plus room for TLVs
_V2_ADDRS = {
    0x11: struct.Struct(">4s4sHH"),  # TCP over IPv4
    0x21: struct.Struct(">16s16sHH"),  # TCP over IPv6
}


class ProxyError(Exception):
    """Not a valid PROXY header: the connection is to be closed."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A parsed header: ``source`` is ``(address, port)``, or None for a
    connection the balancer made itself (``LOCAL``, ``UNKNOWN``)."""

    version: int
    source: tuple[str, int] | None


def starts_like_header(data: bytes | memoryview) -> bool:
    """Whether ``data`` begins as a v1 or v2 header would (for refusing one
    from an address that may not send it)."""
    head = bytes(data[:12])
    return head.startswith(V1_PREFIX[: len(head)]) or head == V2_SIGNATURE[: len(head)]


def peer_name(source: tuple[str, int]) -> str:
    """``host:port`` as the transport names a peer."""
    return f"{source[0]}:{source[1]}"


class HeaderReader:
    """Collects the header of one connection; ``feed`` until it returns."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes | memoryview) -> tuple[ProxyHeader, bytes] | None:
        """The header and the bytes after it once complete, None while more
        is needed; raises :class:`ProxyError`."""
        self._buf += data
        buf = self._buf
        n = min(len(buf), 12)
        if bytes(buf[:n]) == V2_SIGNATURE[:n]:
            return self._v2() if n == 12 else None
        if bytes(buf[: min(n, 6)]) == V1_PREFIX[: min(n, 6)]:
            return self._v1() if len(buf) >= 6 else None
        raise ProxyError("the connection did not begin with a PROXY protocol header")

    def _v1(self) -> tuple[ProxyHeader, bytes] | None:
        buf = self._buf
        end = buf.find(b"\r\n", 0, V1_MAX)
        if end < 0:
            if len(buf) >= V1_MAX:
                raise ProxyError("a PROXY v1 line longer than 107 bytes")
            return None
        rest = bytes(buf[end + 2 :])
        return ProxyHeader(1, _parse_v1(bytes(buf[:end]))), rest

    def _v2(self) -> tuple[ProxyHeader, bytes] | None:
        buf = self._buf
        if len(buf) < V2_HEAD.size:
            return None
        _, ver_cmd, fam, length = V2_HEAD.unpack_from(buf)
        if ver_cmd >> 4 != 2 or ver_cmd & 0x0F not in (0, 1):
            raise ProxyError(f"PROXY v2: version/command byte {ver_cmd:#04x}")
        if length > V2_MAX_BODY:
            raise ProxyError(f"PROXY v2: {length} bytes of addresses and TLVs")
        end = V2_HEAD.size + length
        if len(buf) < end:
            return None
        body = bytes(buf[V2_HEAD.size : end])
        rest = bytes(buf[end:])
        if ver_cmd & 0x0F == 0:  # LOCAL: the balancer's own connection
            return ProxyHeader(2, None), rest
        if fam not in _V2_ADDRS:
            if fam == 0x00:  # UNSPEC
                return ProxyHeader(2, None), rest
            raise ProxyError(f"PROXY v2: family/protocol {fam:#04x} (TCP over IPv4 or IPv6 only)")
        layout = _V2_ADDRS[fam]
        if length < layout.size:
            raise ProxyError(f"PROXY v2: {length} bytes, too short for the addresses")
        src, _dst, sport, _dport = layout.unpack_from(body)
        addr = ipaddress.ip_address(src)
        return ProxyHeader(2, (str(_unmapped(addr)), sport)), rest


def _unmapped(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> object:
    """An IPv4-mapped IPv6 address as the IPv4 address it is."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _parse_v1(line: bytes) -> tuple[str, int] | None:
    """``PROXY TCP4|TCP6 src dst sport dport`` or ``PROXY UNKNOWN ...``."""
    try:
        fields = line.decode("ascii").split(" ")
    except UnicodeDecodeError:
        raise ProxyError("PROXY v1: not ASCII") from None
    if len(fields) >= 2 and fields[1] == "UNKNOWN":
        return None
    if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
        raise ProxyError(f"PROXY v1: malformed line {line[:V1_MAX]!r}")
    _, proto, src, _dst, sport, _dport = fields
    try:
        addr = ipaddress.ip_address(src)
        port = int(sport)
        int(_dport)
    except ValueError:
        raise ProxyError(f"PROXY v1: malformed address or port in {line!r}") from None
    if (proto == "TCP4") != (addr.version == 4) or not 0 <= port <= 65535:
        raise ProxyError(f"PROXY v1: {proto} with {src} port {sport}")
    if not sport.isdigit() or (len(sport) > 1 and sport[0] == "0"):
        raise ProxyError(f"PROXY v1: port {sport!r}")
    return str(addr), port


class Trusted:
    """The networks allowed to send a header (``--proxy-from``)."""

    __slots__ = ("_nets",)

    def __init__(self, networks: tuple[str, ...] | list[str]) -> None:
        self._nets = tuple(ipaddress.ip_network(n, strict=False) for n in networks)

    def __bool__(self) -> bool:
        return bool(self._nets)

    def __contains__(self, host: str) -> bool:
        try:
            addr = _unmapped(ipaddress.ip_address(host.split("%", 1)[0]))
        except ValueError:
            return False
        return any(addr in net for net in self._nets)
