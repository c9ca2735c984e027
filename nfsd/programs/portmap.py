"""The portmapper: port mapper v2 and rpcbind v3/v4 (RFC 1833), sans IO.

Served on port 111 when the host runs no portmapper of its own, so that a
client mounting without ``port=``/``mountport=`` finds MOUNT and NFS.  The
Linux kernel asks portmap v2 ``GETPORT`` for IPv4 servers and rpcbind v4,
then v3, ``GETADDR`` for IPv6 ones; ``rpcinfo -p`` uses v2 ``DUMP``.

Design notes
------------
The table holds *bindings*: (program, version, netid) → address, port.  The
netids are ``tcp``, ``udp`` (IPv4) and ``tcp6``, ``udp6`` (IPv6); v2 sees
only the IPv4 ones, as ``IPPROTO_TCP``/``IPPROTO_UDP`` mappings.  The
server's own bindings (MOUNT, NFS, the portmapper itself) are *fixed*: no
call replaces or removes them.

``SET`` and ``UNSET`` are taken only from a process of this host with the
privilege to bind a reserved port: from ``127.0.0.1`` or ``::1`` and a
source port under 1024 (:func:`may_register`; anyone else is answered
FALSE).  rpcbind takes them over its local socket, where the kernel names
the caller, or with ``-L`` from 127.0.0.1; any local user calling from an
unprivileged port of any 127/8 address once could point showmount's MOUNT
v1 or NLM lookups at a port of its own.  And only while the table holds fewer
than :data:`MAX_BINDINGS` rows, with an owner of at most 255 bytes: a
local process cannot grow the table, or a DUMP reply, without bound.
``GETPORT`` and ``GETADDR`` fall back to another version of the program
when the one asked is not registered (the client then learns the versions
from ``PROG_MISMATCH``), as rpcbind does; ``GETVERSADDR`` does not.

The universal address (``h1.h2.h3.h4.p1.p2``, RFC 5665 §5.2.3) of a
binding registered without a specific address names, in this order:

=================================  =========================================
when                               address
=================================  =========================================
the server listens on one address  that address
the caller gave ``r_addr``         its address part (the Linux client sends
                                   the server's address as it knows it)
the caller is on loopback          the loopback address of the netid
otherwise                          the wildcard (``0.0.0.0`` / ``::``)
=================================  =========================================

Procedures not offered answer ``PROC_UNAVAIL``: ``CALLIT`` (v2, v3) and
``BCAST``/``INDIRECT`` (v4) forward calls to other programs, a well-known
traffic amplifier that rpcbind itself builds without by default (it then
drops such calls, which leaves a TCP caller waiting for its timeout; the
dispatcher cannot drop a reply, and an immediate ``PROC_UNAVAIL`` tells the
caller the same sooner).  ``UADDR2TADDR``/``TADDR2UADDR`` (which convert to
the host's ``struct sockaddr`` bytes) and ``GETSTAT`` (rpcbind's call
counters) have no client among those that mount NFS.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from dataclasses import dataclass

from nfsd.rpc import CallContext, Procedure, Program, Reply, no_args
from xdr import portmap as pm
from xdr.portmap import PortmapPacker, PortmapUnpacker

log = logging.getLogger("recovery_fs.portmap")

OWNER = "recovery-fs"
MAX_BINDINGS = 1024  # rows in the table: SET from loopback cannot grow it (or DUMP) forever
MAX_OWNER = 255  # longest r_owner a SET may carry (rpcbind stores a user name there)

# netid → (IP protocol, address family version)
NETIDS: dict[str, tuple[int, int]] = {
    "tcp": (pm.IPPROTO_TCP, 4),
    "udp": (pm.IPPROTO_UDP, 4),
    "tcp6": (pm.IPPROTO_TCP, 6),
    "udp6": (pm.IPPROTO_UDP, 6),
}
V2_NETIDS = {pm.IPPROTO_TCP: "tcp", pm.IPPROTO_UDP: "udp"}
WILDCARD = {4: "0.0.0.0", 6: "::"}
LOOPBACK = {4: "127.0.0.1", 6: "::1"}


@dataclass(frozen=True, slots=True)
class Binding:
    """One row of the table; ``host`` None: the server's own address."""

    prog: int
    vers: int
    netid: str
    host: str | None
    port: int
    owner: str = OWNER
    fixed: bool = False


def netids_for(bind: str) -> tuple[str, ...]:
    """The netids a server listening on ``bind`` is reachable by."""
    ip = ipaddress.ip_address(bind)
    if ip.version == 4:
        return ("tcp", "udp")
    if ip.is_unspecified:  # "::" listens dual-stack
        return ("tcp", "udp", "tcp6", "udp6")
    return ("tcp6", "udp6")


def uaddr(host: str, port: int) -> str:
    """The universal address of ``host``, ``port`` (RFC 5665 §5.2.3)."""
    return f"{host}.{port >> 8}.{port & 0xFF}"


def parse_uaddr(text: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    """(address, port) of a universal address; ValueError if malformed."""
    host, p1, p2 = text.rsplit(".", 2)
    hi, lo = int(p1), int(p2)
    if not (0 <= hi <= 255 and 0 <= lo <= 255):
        raise ValueError(f"bad port bytes in {text!r}")
    return ipaddress.ip_address(host), hi << 8 | lo


def may_register(peer: str) -> bool:
    """Whether a ``host:port`` peer may SET or UNSET: 127.0.0.1 or ::1 (or the
    IPv4-mapped 127.0.0.1), from a reserved port, which only a privileged
    process can bind."""
    host, _, port = peer.rpartition(":")
    host = host.strip("[]").split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(host)
        privileged = int(port) < 1024
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return privileged and ip in (_V4_LOCAL, _V6_LOCAL)


_V4_LOCAL, _V6_LOCAL = ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")


def peer_is_loopback(peer: str) -> bool:
    """Whether a ``host:port`` peer (as the transport names it) is on loopback."""
    host = peer.rsplit(":", 1)[0].strip("[]").split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


class PortmapTable:
    """The bindings, safe to use from several worker threads."""

    def __init__(self) -> None:
        self._rows: dict[tuple[int, int, str], Binding] = {}
        self._lock = threading.Lock()

    def add(self, b: Binding) -> bool:
        """Add a binding; False if (prog, vers, netid) is taken (RFC 1833), or
        if the table holds :data:`MAX_BINDINGS` already."""
        with self._lock:
            key = (b.prog, b.vers, b.netid)
            if key in self._rows or len(self._rows) >= MAX_BINDINGS:
                return False
            self._rows[key] = b
            return True

    def remove(self, prog: int, vers: int, netids: tuple[str, ...]) -> bool:
        """Remove the non-fixed bindings of (prog, vers) on ``netids``; True if any."""
        with self._lock:
            keys = [
                k
                for k in ((prog, vers, n) for n in netids)
                if k in self._rows and not self._rows[k].fixed
            ]
            for k in keys:
                del self._rows[k]
            return bool(keys)

    def find(self, prog: int, vers: int, netid: str, *, any_version: bool) -> Binding | None:
        with self._lock:
            found = self._rows.get((prog, vers, netid))
            if found is None and any_version:
                others = [b for (p, _, n), b in self._rows.items() if p == prog and n == netid]
                found = max(others, key=lambda b: b.vers, default=None)
            return found

    def dump(self) -> list[Binding]:
        with self._lock:
            return sorted(self._rows.values(), key=lambda b: (b.prog, b.vers, b.netid))


def _bool(value: bool) -> Reply:
    p = PortmapPacker()
    p.pack_bool(value)
    return Reply([p.get_buffer()])


def _uint(value: int) -> Reply:
    p = PortmapPacker()
    p.pack_uint(value)
    return Reply([p.get_buffer()])


def _string(value: str) -> Reply:
    p = PortmapPacker()
    p.pack_string(value.encode())
    return Reply([p.get_buffer()])


class PortmapService:
    """The procedures of the portmapper over one table.

    ``bind`` is the address the server listens on (a wildcard or not).
    """

    def __init__(self, table: PortmapTable, bind: str) -> None:
        self.table = table
        self.bind = ipaddress.ip_address(bind)

    def _host(self, b: Binding, requested: str, ctx: CallContext | None) -> str:
        """The address part of ``b``'s universal address (see the notes' table)."""
        family = NETIDS[b.netid][1]
        if b.host is not None:
            return b.host
        if self.bind.version == family and not self.bind.is_unspecified:
            return str(self.bind)
        try:
            asked, _ = parse_uaddr(requested)
            if asked.version == family and not asked.is_unspecified:
                return str(asked)
        except ValueError:
            pass
        if ctx is not None and peer_is_loopback(ctx.peer):
            return LOOPBACK[family]
        return WILDCARD[family]

    # --- port mapper v2 (RFC 1833 §3) -----------------------------------

    # RFC 1833 §3.2 PMAPPROC_NULL; §2.2 RPCBPROC_NULL
    def null(self, ctx: CallContext, args: None) -> Reply:
        return Reply([])

    # RFC 1833 §3.2 PMAPPROC_SET
    def pmap_set(self, ctx: CallContext, m: pm.mapping) -> Reply:
        ctx.note = f"prog={m.prog} vers={m.vers} prot={m.prot} port={m.port}"
        netid = V2_NETIDS.get(m.prot)
        if netid is None or not may_register(ctx.peer) or not 0 < m.port <= 0xFFFF:
            return _bool(False)
        done = self.table.add(Binding(m.prog, m.vers, netid, None, m.port, owner="unknown"))
        if done:
            log.info("SET %d v%d %s port %d by %s", m.prog, m.vers, netid, m.port, ctx.peer)
        return _bool(done)

    # RFC 1833 §3.2 PMAPPROC_UNSET: the protocol and port are ignored
    def pmap_unset(self, ctx: CallContext, m: pm.mapping) -> Reply:
        ctx.note = f"prog={m.prog} vers={m.vers}"
        if not may_register(ctx.peer):
            return _bool(False)
        return _bool(self.table.remove(m.prog, m.vers, ("tcp", "udp")))

    # RFC 1833 §3.2 PMAPPROC_GETPORT: 0 when not registered
    def pmap_getport(self, ctx: CallContext, m: pm.mapping) -> Reply:
        netid = V2_NETIDS.get(m.prot)
        b = None if netid is None else self.table.find(m.prog, m.vers, netid, any_version=True)
        port = 0 if b is None else b.port
        ctx.note = f"prog={m.prog} vers={m.vers} prot={m.prot} -> {port}"
        return _uint(port)

    # RFC 1833 §3.2 PMAPPROC_DUMP
    def pmap_dump(self, ctx: CallContext, args: None) -> Reply:
        maps = [
            pm.mapping(b.prog, b.vers, NETIDS[b.netid][0], b.port)
            for b in self.table.dump()
            if NETIDS[b.netid][1] == 4
        ]
        p = PortmapPacker()
        p.pack_pmaplist(maps)
        return Reply([p.get_buffer()])

    # --- rpcbind v3 and v4 (RFC 1833 §2) --------------------------------

    # RFC 1833 §2.2 RPCBPROC_SET
    def rpcb_set(self, ctx: CallContext, r: pm.rpcb) -> Reply:
        netid = r.r_netid.decode(errors="replace")
        ctx.note = f"prog={r.r_prog} vers={r.r_vers} {netid} {r.r_addr!r}"
        if netid not in NETIDS or not may_register(ctx.peer) or len(r.r_owner) > MAX_OWNER:
            return _bool(False)
        try:
            ip, port = parse_uaddr(r.r_addr.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            return _bool(False)
        if ip.version != NETIDS[netid][1] or port == 0:
            return _bool(False)
        host = None if ip.is_unspecified else str(ip)
        owner = r.r_owner.decode(errors="replace") or "unknown"
        done = self.table.add(Binding(r.r_prog, r.r_vers, netid, host, port, owner=owner))
        if done:
            log.info("SET %d v%d %s %s by %s", r.r_prog, r.r_vers, netid, r.r_addr, ctx.peer)
        return _bool(done)

    # RFC 1833 §2.2 RPCBPROC_UNSET: an empty netid means every one
    def rpcb_unset(self, ctx: CallContext, r: pm.rpcb) -> Reply:
        netid = r.r_netid.decode(errors="replace")
        ctx.note = f"prog={r.r_prog} vers={r.r_vers} {netid}"
        if not may_register(ctx.peer) or (netid and netid not in NETIDS):
            return _bool(False)
        netids = (netid,) if netid else tuple(NETIDS)
        return _bool(self.table.remove(r.r_prog, r.r_vers, netids))

    def _getaddr(self, ctx: CallContext, r: pm.rpcb, any_version: bool) -> Reply:
        netid = r.r_netid.decode(errors="replace")
        b = None
        if netid in NETIDS:
            b = self.table.find(r.r_prog, r.r_vers, netid, any_version=any_version)
        requested = r.r_addr.decode("ascii", errors="replace")
        found = "" if b is None else uaddr(self._host(b, requested, ctx), b.port)
        ctx.note = f"prog={r.r_prog} vers={r.r_vers} {netid} -> {found!r}"
        return _string(found)

    # RFC 1833 §2.2 RPCBPROC_GETADDR: "" when not registered
    def rpcb_getaddr(self, ctx: CallContext, r: pm.rpcb) -> Reply:
        return self._getaddr(ctx, r, any_version=True)

    # RFC 1833 §2.2 RPCBPROC_GETVERSADDR (v4): this version only
    def rpcb_getversaddr(self, ctx: CallContext, r: pm.rpcb) -> Reply:
        return self._getaddr(ctx, r, any_version=False)

    # RFC 1833 §2.2 RPCBPROC_GETADDRLIST (v4): this version, every netid
    def rpcb_getaddrlist(self, ctx: CallContext, r: pm.rpcb) -> Reply:
        requested = r.r_addr.decode("ascii", errors="replace")
        entries = [
            pm.rpcb_entry(
                uaddr(self._host(b, requested, ctx), b.port).encode(),
                b.netid.encode(),
                pm.NC_TPI_COTS_ORD if NETIDS[b.netid][0] == pm.IPPROTO_TCP else pm.NC_TPI_CLTS,
                b"inet" if NETIDS[b.netid][1] == 4 else b"inet6",
                b"tcp" if NETIDS[b.netid][0] == pm.IPPROTO_TCP else b"udp",
            )
            for b in self.table.dump()
            if (b.prog, b.vers) == (r.r_prog, r.r_vers)
        ]
        ctx.note = f"prog={r.r_prog} vers={r.r_vers} -> {len(entries)}"
        p = PortmapPacker()
        p.pack_rpcb_entry_list(entries)
        return Reply([p.get_buffer()])

    # RFC 1833 §2.2 RPCBPROC_DUMP
    def rpcb_dump(self, ctx: CallContext, args: None) -> Reply:
        rows = [
            pm.rpcb(
                b.prog,
                b.vers,
                b.netid.encode(),
                uaddr(self._host(b, "", None), b.port).encode(),
                b.owner.encode(),
            )
            for b in self.table.dump()
        ]
        p = PortmapPacker()
        p.pack_rpcblist(rows)
        return Reply([p.get_buffer()])

    # RFC 1833 §2.2 RPCBPROC_GETTIME
    def rpcb_gettime(self, ctx: CallContext, args: None) -> Reply:
        return _uint(int(time.time()) & 0xFFFFFFFF)

    def program(self) -> Program:
        u = PortmapUnpacker
        rpcb3 = {
            pm.RPCBPROC_NULL: Procedure("RPCB_NULL", no_args, self.null),
            pm.RPCBPROC_SET: Procedure("RPCB_SET", u.unpack_rpcb, self.rpcb_set),
            pm.RPCBPROC_UNSET: Procedure("RPCB_UNSET", u.unpack_rpcb, self.rpcb_unset),
            pm.RPCBPROC_GETADDR: Procedure("RPCB_GETADDR", u.unpack_rpcb, self.rpcb_getaddr),
            pm.RPCBPROC_DUMP: Procedure("RPCB_DUMP", no_args, self.rpcb_dump),
            # 5 RPCBPROC_CALLIT: absent, PROC_UNAVAIL (see the notes)
            pm.RPCBPROC_GETTIME: Procedure("RPCB_GETTIME", no_args, self.rpcb_gettime),
            # 7 RPCBPROC_UADDR2TADDR, 8 RPCBPROC_TADDR2UADDR: absent, PROC_UNAVAIL
        }
        return Program(
            number=pm.PMAP_PROG,
            name="PORTMAP",
            unpacker=PortmapUnpacker,
            udp_no_amplify=True,  # no reflection: DUMP over UDP answers only if no larger
            versions={
                pm.PMAP_VERS: {
                    pm.PMAPPROC_NULL: Procedure("PMAP_NULL", no_args, self.null),
                    pm.PMAPPROC_SET: Procedure("PMAP_SET", u.unpack_mapping, self.pmap_set),
                    pm.PMAPPROC_UNSET: Procedure("PMAP_UNSET", u.unpack_mapping, self.pmap_unset),
                    pm.PMAPPROC_GETPORT: Procedure(
                        "PMAP_GETPORT", u.unpack_mapping, self.pmap_getport
                    ),
                    pm.PMAPPROC_DUMP: Procedure("PMAP_DUMP", no_args, self.pmap_dump),
                    # 5 PMAPPROC_CALLIT: absent, PROC_UNAVAIL (see the notes)
                },
                pm.RPCBVERS: rpcb3,
                pm.RPCBVERS4: {
                    **rpcb3,
                    # 5 RPCBPROC_BCAST: absent, PROC_UNAVAIL
                    pm.RPCBPROC_GETVERSADDR: Procedure(
                        "RPCB_GETVERSADDR", u.unpack_rpcb, self.rpcb_getversaddr
                    ),
                    # 10 RPCBPROC_INDIRECT: absent, PROC_UNAVAIL
                    pm.RPCBPROC_GETADDRLIST: Procedure(
                        "RPCB_GETADDRLIST", u.unpack_rpcb, self.rpcb_getaddrlist
                    ),
                    # 12 RPCBPROC_GETSTAT: absent, PROC_UNAVAIL
                },
            },
        )


def own_bindings(
    programs: list[Program], bind: str, port: int, portmap_port: int | None
) -> list[Binding]:
    """The fixed bindings of a server: every version of its programs on ``port``,
    and the portmapper's own versions on ``portmap_port`` when it serves one."""
    netids = netids_for(bind)
    rows = [
        Binding(p.number, v, n, None, port, fixed=True)
        for p in programs
        for v in p.versions
        for n in netids
        if p.udp or not n.startswith("udp")
    ]
    if portmap_port is not None:
        rows += [
            Binding(pm.PMAP_PROG, v, n, None, portmap_port, fixed=True)
            for v in (pm.PMAP_VERS, pm.RPCBVERS, pm.RPCBVERS4)
            for n in netids
        ]
    return rows


def build_portmap(programs: list[Program], bind: str, port: int, portmap_port: int) -> Program:
    """The portmapper program, with the server's programs registered."""
    table = PortmapTable()
    for b in own_bindings(programs, bind, port, portmap_port):
        table.add(b)
    return PortmapService(table, bind).program()
