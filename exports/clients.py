"""Client forms of an exports line, and how each admits a client address.

Design notes
------------
* Four kinds, in the order exports(5) gives them precedence: ``host`` (a
  host name or one address), ``network`` (``10.0.0.0/8``,
  ``10.0.0.0/255.0.0.0``, ``fd00::/64``, ``[fd00::]/64``), ``wildcard``
  (``*.backup.example``, ``web?.example``, ``db[12].example``) and
  ``anyone`` (``*``, or no client at all).  Netgroups (``@group``) and the
  obsolete ``gss/...`` clients are refused.
* Client addresses are normalized before any comparison (:func:`client_ip`):
  an IPv4-mapped IPv6 address (``::ffff:10.1.2.3``) *is* the IPv4 address,
  and a scope id (``fe80::1%eth0``) is dropped.  Networks written in the
  mapped form are turned into IPv4 networks for the same reason.
* Addresses and networks are compared without any look-up.  A host *name*
  admits a client when one of the name's forward-resolved addresses is the
  client's.  A wildcard matches *names* only, never addresses: the client's
  address is reverse-resolved, and a name counts only when it is
  forward-confirmed (its own addresses include the client's), as rpc.mountd
  does: whoever controls the PTR record of an address cannot claim a name
  it does not own.
* As exports(5) says, ``*`` and ``?`` do not match the dots of a name:
  ``*.example`` admits ``a.example`` but not ``a.b.example``.  Names compare
  case-insensitively, without a trailing dot.
* A name not resolved yet does not match (the resolver keeps looking in the
  background); the caller then falls through to specs of lower precedence.
"""

from __future__ import annotations

import ipaddress
import re
import time
from dataclasses import dataclass
from typing import Protocol

from exports.errors import ExportsError

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

KINDS = ("host", "network", "wildcard", "anyone")  # precedence, highest first

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_NAME = re.compile(r"(?=.{1,253}\.?$)[a-z0-9_](?:[a-z0-9_-]*)(?:\.[a-z0-9_][a-z0-9_-]*)*\.?", re.I)
_PATTERN = re.compile(r"[a-z0-9_.*?\[\]!^-]{1,253}", re.I)


class Lookups(Protocol):
    """What matching needs of a resolver (``exports.resolver.Resolver`` has it)."""

    def addresses(self, name: str, wait: float = 0.0) -> set[str] | None: ...

    def names(self, addr: str, wait: float = 0.0) -> set[str] | None: ...


def client_ip(text: str) -> IP:
    """The normalized address of ``text``: brackets and scope id dropped, v4-mapped made IPv4.

    Raises ValueError when ``text`` is not an IP address.
    """
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    ip = ipaddress.ip_address(text.partition("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def normalize_addr(text: str) -> str:
    """:func:`client_ip` as a string: the form every cache and comparison uses."""
    return str(client_ip(text))


def normalize_name(name: str) -> str:
    """A host name as compared: lower case, no trailing dot."""
    return name.lower().rstrip(".")


class Matcher(Protocol):
    """One client form, ready to test client addresses against."""

    def admits(self, ip: IP, lookups: Lookups, deadline: float) -> bool: ...


@dataclass(frozen=True, slots=True)
class AddressMatcher:
    """One address: equal after normalization."""

    ip: IP

    def admits(self, ip: IP, lookups: Lookups, deadline: float) -> bool:
        return ip == self.ip


@dataclass(frozen=True, slots=True)
class NetworkMatcher:
    """An address block."""

    network: Network

    def admits(self, ip: IP, lookups: Lookups, deadline: float) -> bool:
        return ip in self.network


@dataclass(frozen=True, slots=True)
class NameMatcher:
    """One host name: the client's address is among the name's addresses."""

    name: str

    def admits(self, ip: IP, lookups: Lookups, deadline: float) -> bool:
        return confirmed(self.name, ip, lookups, deadline)


@dataclass(frozen=True, slots=True)
class WildcardMatcher:
    """A name pattern: a forward-confirmed name of the client's address matches it."""

    pattern: re.Pattern[str]

    def admits(self, ip: IP, lookups: Lookups, deadline: float) -> bool:
        names = lookups.names(str(ip), _left(deadline))
        if not names:
            return False
        return any(
            self.pattern.fullmatch(normalize_name(name)) and confirmed(name, ip, lookups, deadline)
            for name in sorted(names)
        )


@dataclass(frozen=True, slots=True)
class AnyoneMatcher:
    """Every client."""

    def admits(self, ip: IP, lookups: Lookups, deadline: float) -> bool:
        return True


def confirmed(name: str, ip: IP, lookups: Lookups, deadline: float) -> bool:
    """Whether ``ip`` is one of the forward-resolved addresses of ``name``."""
    addrs = lookups.addresses(normalize_name(name), _left(deadline))
    return addrs is not None and str(ip) in addrs


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def classify(text: str, where: str) -> tuple[str, Matcher]:
    """The kind of client ``text`` and its matcher; ExportsError when it is none of them."""
    if text in ("", "*"):
        return "anyone", AnyoneMatcher()
    if text.startswith("@"):
        raise ExportsError(where, f"{text}: netgroups are not supported")
    if text.lower().startswith("gss/"):
        raise ExportsError(where, f"{text}: gss/ clients are not supported (Kerberos)")
    if "/" in text:
        return "network", NetworkMatcher(_network(text, where))
    try:
        return "host", AddressMatcher(client_ip(text))
    except ValueError:
        pass
    if any(c in text for c in "*?["):
        return "wildcard", WildcardMatcher(_wildcard(text, where))
    if _NAME.fullmatch(text) and not text.replace(".", "").isdigit():
        return "host", NameMatcher(normalize_name(text))
    raise ExportsError(where, f"{text}: not a host name, address, network or wildcard")


def _network(text: str, where: str) -> Network:
    """``ADDR/PREFIX`` or ``ADDR/NETMASK`` (IPv4), the address maybe in brackets."""
    addr, _, mask = text.rpartition("/")
    if addr.startswith("[") and addr.endswith("]"):
        addr = addr[1:-1]
    try:
        if not mask.isascii() or not (mask.isdigit() or "." in mask):
            raise ValueError(mask)
        net = ipaddress.ip_network(f"{addr}/{mask}", strict=False)
    except ValueError:
        raise ExportsError(
            where, f"{text}: not a network (ADDRESS/PREFIX or ADDRESS/NETMASK)"
        ) from None
    if isinstance(net, ipaddress.IPv6Network) and net.subnet_of(_MAPPED):
        mapped = net.network_address.ipv4_mapped
        assert mapped is not None
        return ipaddress.IPv4Network(f"{mapped}/{net.prefixlen - 96}")
    return net


def _wildcard(text: str, where: str) -> re.Pattern[str]:
    """The regular expression of a name pattern; ``*`` and ``?`` stop at dots."""
    if not _PATTERN.fullmatch(text):
        raise ExportsError(where, f"{text}: not a host name pattern")
    out: list[str] = []
    i = 0
    low = normalize_name(text)
    while i < len(low):
        c = low[i]
        if c == "*":
            out.append("[^.]*")
        elif c == "?":
            out.append("[^.]")
        elif c == "[":
            end = low.find("]", i + 2)
            if end < 0:
                raise ExportsError(where, f"{text}: unbalanced [ in pattern")
            body = low[i + 1 : end]
            negate = body[:1] in ("!", "^")
            body = body[1:] if negate else body
            if not body or "." in body or "[" in body:
                raise ExportsError(where, f"{text}: bad [...] in pattern")
            out.append("[" + ("^" if negate else "") + body + "]")
            i = end
        elif c in "]!^":
            raise ExportsError(where, f"{text}: stray {c} in pattern")
        else:
            out.append(re.escape(c))
        i += 1
    try:
        return re.compile("".join(out))
    except re.error:
        raise ExportsError(where, f"{text}: bad [...] in pattern") from None
