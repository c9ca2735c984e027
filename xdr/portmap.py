"""Port mapper v2 and rpcbind v3/v4 (RFC 1833).

The server registers its programs with the host's binder (or answers as
one itself when run without it): calls are packed and replies unpacked by
the registering side, the other way round by the answering side, so every
type here is both packed and unpacked.

XDR linked lists (``pmaplist``, ``rpcblist``, ``rpcb_entry_list``) are Python
lists of their items: the ``next`` pointers are the list structure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from xdr.base import Packer, Unpacker

# --- Port mapper, version 2 (RFC 1833 §3) ---------------------------------

PMAP_PORT = 111
PMAP_PROG = 100000
PMAP_VERS = 2

IPPROTO_TCP = 6
IPPROTO_UDP = 17

PMAPPROC_NULL = 0
PMAPPROC_SET = 1
PMAPPROC_UNSET = 2
PMAPPROC_GETPORT = 3
PMAPPROC_DUMP = 4
PMAPPROC_CALLIT = 5

# --- rpcbind, versions 3 and 4 (RFC 1833 §2) ------------------------------

RPCB_PORT = 111
RPCBPROG = 100000
RPCBVERS = 3
RPCBVERS4 = 4

RPCBPROC_NULL = 0  # not in the .x text, but procedure 0 of every program
RPCBPROC_SET = 1
RPCBPROC_UNSET = 2
RPCBPROC_GETADDR = 3
RPCBPROC_DUMP = 4
RPCBPROC_CALLIT = 5  # version 3
RPCBPROC_BCAST = 5  # version 4: the same procedure, renamed
RPCBPROC_GETTIME = 6
RPCBPROC_UADDR2TADDR = 7
RPCBPROC_TADDR2UADDR = 8
RPCBPROC_GETVERSADDR = 9  # version 4 only from here on
RPCBPROC_INDIRECT = 10
RPCBPROC_GETADDRLIST = 11
RPCBPROC_GETSTAT = 12

# rpcb_entry.r_nc_semantics: the transport's semantics (netconfig nc_semantics)
NC_TPI_CLTS = 1
NC_TPI_COTS = 2
NC_TPI_COTS_ORD = 3
NC_TPI_RAW = 4


@dataclass(slots=True)
class mapping:
    """struct mapping { unsigned int prog; unsigned int vers;
    unsigned int prot; unsigned int port; };"""

    prog: int
    vers: int
    prot: int
    port: int


@dataclass(slots=True)
class call_args:
    """struct call_args { unsigned int prog; unsigned int vers;
    unsigned int proc; opaque args<>; };"""

    prog: int
    vers: int
    proc: int
    args: bytes


@dataclass(slots=True)
class call_result:
    """struct call_result { unsigned int port; opaque res<>; };"""

    port: int
    res: bytes


@dataclass(slots=True)
class rpcb:
    """struct rpcb { unsigned long r_prog; unsigned long r_vers;
    string r_netid<>; string r_addr<>; string r_owner<>; };

    (``unsigned long`` is 32 bits in XDR.)
    """

    r_prog: int
    r_vers: int
    r_netid: bytes
    r_addr: bytes
    r_owner: bytes


@dataclass(slots=True)
class rpcb_rmtcallargs:
    """struct rpcb_rmtcallargs { unsigned long prog; unsigned long vers;
    unsigned long proc; opaque args<>; };"""

    prog: int
    vers: int
    proc: int
    args: bytes


@dataclass(slots=True)
class rpcb_rmtcallres:
    """struct rpcb_rmtcallres { string addr<>; opaque results<>; };"""

    addr: bytes
    results: bytes


@dataclass(slots=True)
class netbuf:
    """struct netbuf { unsigned int maxlen; opaque buf<>; };"""

    maxlen: int
    buf: bytes


@dataclass(slots=True)
class rpcb_entry:
    """struct rpcb_entry { string r_maddr<>; string r_nc_netid<>;
    unsigned long r_nc_semantics; string r_nc_protofmly<>; string r_nc_proto<>; };"""

    r_maddr: bytes
    r_nc_netid: bytes
    r_nc_semantics: int
    r_nc_protofmly: bytes
    r_nc_proto: bytes


A = TypeVar("A", call_args, rpcb_rmtcallargs)


class PortmapPacker(Packer):
    """Packs port mapper v2 and rpcbind v3/v4 arguments and results."""

    def pack_mapping(self, m: mapping) -> None:
        self.pack_uint(m.prog)
        self.pack_uint(m.vers)
        self.pack_uint(m.prot)
        self.pack_uint(m.port)

    def pack_pmaplist(self, maps: list[mapping]) -> None:
        """struct *pmaplist { mapping map; pmaplist next; };"""
        self.pack_list(maps, self.pack_mapping)

    def pack_call_args(self, a: call_args | rpcb_rmtcallargs) -> None:
        self.pack_uint(a.prog)
        self.pack_uint(a.vers)
        self.pack_uint(a.proc)
        self.pack_opaque(a.args)

    def pack_call_result(self, r: call_result) -> None:
        self.pack_uint(r.port)
        self.pack_opaque(r.res)

    def pack_rpcb(self, r: rpcb) -> None:
        self.pack_uint(r.r_prog)
        self.pack_uint(r.r_vers)
        self.pack_string(r.r_netid)
        self.pack_string(r.r_addr)
        self.pack_string(r.r_owner)

    def pack_rpcblist(self, maps: list[rpcb]) -> None:
        """struct rp__list { rpcb rpcb_map; struct rp__list *rpcb_next; };
        typedef rp__list *rpcblist_ptr;"""
        self.pack_list(maps, self.pack_rpcb)

    pack_rpcb_rmtcallargs = pack_call_args  # the same layout

    def pack_rpcb_rmtcallres(self, r: rpcb_rmtcallres) -> None:
        self.pack_string(r.addr)
        self.pack_opaque(r.results)

    def pack_netbuf(self, n: netbuf) -> None:
        self.pack_uint(n.maxlen)
        self.pack_opaque(n.buf)

    def pack_rpcb_entry(self, e: rpcb_entry) -> None:
        self.pack_string(e.r_maddr)
        self.pack_string(e.r_nc_netid)
        self.pack_uint(e.r_nc_semantics)
        self.pack_string(e.r_nc_protofmly)
        self.pack_string(e.r_nc_proto)

    def pack_rpcb_entry_list(self, entries: list[rpcb_entry]) -> None:
        """struct rpcb_entry_list { rpcb_entry rpcb_entry_map;
        struct rpcb_entry_list *rpcb_entry_next; };
        typedef rpcb_entry_list *rpcb_entry_list_ptr;"""
        self.pack_list(entries, self.pack_rpcb_entry)


class PortmapUnpacker(Unpacker):
    """Unpacks port mapper v2 and rpcbind v3/v4 arguments and results."""

    def unpack_mapping(self) -> mapping:
        return mapping(
            prog=self.unpack_uint(),
            vers=self.unpack_uint(),
            prot=self.unpack_uint(),
            port=self.unpack_uint(),
        )

    def unpack_pmaplist(self) -> list[mapping]:
        return self.unpack_list(self.unpack_mapping)

    def _unpack_call(self, cls: type[A]) -> A:
        return cls(
            prog=self.unpack_uint(),
            vers=self.unpack_uint(),
            proc=self.unpack_uint(),
            args=self.unpack_opaque(),
        )

    def unpack_call_args(self) -> call_args:
        return self._unpack_call(call_args)

    def unpack_call_result(self) -> call_result:
        return call_result(port=self.unpack_uint(), res=self.unpack_opaque())

    def unpack_rpcb(self) -> rpcb:
        return rpcb(
            r_prog=self.unpack_uint(),
            r_vers=self.unpack_uint(),
            r_netid=self.unpack_string(),
            r_addr=self.unpack_string(),
            r_owner=self.unpack_string(),
        )

    def unpack_rpcblist(self) -> list[rpcb]:
        return self.unpack_list(self.unpack_rpcb)

    def unpack_rpcb_rmtcallargs(self) -> rpcb_rmtcallargs:
        return self._unpack_call(rpcb_rmtcallargs)

    def unpack_rpcb_rmtcallres(self) -> rpcb_rmtcallres:
        return rpcb_rmtcallres(addr=self.unpack_string(), results=self.unpack_opaque())

    def unpack_netbuf(self) -> netbuf:
        return netbuf(maxlen=self.unpack_uint(), buf=self.unpack_opaque())

    def unpack_rpcb_entry(self) -> rpcb_entry:
        return rpcb_entry(
            r_maddr=self.unpack_string(),
            r_nc_netid=self.unpack_string(),
            r_nc_semantics=self.unpack_uint(),
            r_nc_protofmly=self.unpack_string(),
            r_nc_proto=self.unpack_string(),
        )

    def unpack_rpcb_entry_list(self) -> list[rpcb_entry]:
        return self.unpack_list(self.unpack_rpcb_entry)
