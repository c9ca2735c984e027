"""The portmapper program, sans IO: calls as bytes in, replies as bytes out."""

from __future__ import annotations

import time

import pytest

from nfsd.programs.portmap import (
    Binding,
    PortmapService,
    PortmapTable,
    build_portmap,
    netids_for,
    own_bindings,
    parse_uaddr,
    peer_is_loopback,
    uaddr,
)
from nfsd.rpc import Dispatcher, Procedure, Program, Reply, no_args
from nfsd.transport.rpcclient import CallResult, decode_reply, encode_call
from xdr import portmap as pm
from xdr import rpc
from xdr.portmap import PortmapPacker, PortmapUnpacker

MOUNT, NFS, OTHER = 100005, 100003, 100099
LOCAL = "127.0.0.1:801"
REMOTE = "192.0.2.7:801"


def fake_programs() -> list[Program]:
    null = {0: Procedure("NULL", no_args, lambda ctx, a: Reply([]))}
    return [Program(MOUNT, "MOUNT", {3: null}), Program(NFS, "NFS", {3: null})]


def dispatcher(bind: str = "127.0.0.1", port: int = 2049) -> Dispatcher:
    return Dispatcher([build_portmap(fake_programs(), bind, port, 111)])


def ask(d: Dispatcher, vers: int, proc: int, args: bytes = b"", peer: str = LOCAL) -> CallResult:
    reply = d.dispatch(encode_call(7, pm.PMAP_PROG, vers, proc, args), peer, "tcp")
    assert reply is not None
    xid, result = decode_reply(b"".join(bytes(p) for p in reply.parts))
    assert xid == 7
    return result


def mapping(prog: int, vers: int, prot: int = pm.IPPROTO_TCP, port: int = 0) -> bytes:
    p = PortmapPacker()
    p.pack_mapping(pm.mapping(prog, vers, prot, port))
    return p.get_buffer()


def rpcb(prog: int, vers: int, netid: str, addr: str = "", owner: str = "") -> bytes:
    p = PortmapPacker()
    p.pack_rpcb(pm.rpcb(prog, vers, netid.encode(), addr.encode(), owner.encode()))
    return p.get_buffer()


def getport(d: Dispatcher, prog: int, vers: int, prot: int = pm.IPPROTO_TCP) -> int:
    r = ask(d, 2, pm.PMAPPROC_GETPORT, mapping(prog, vers, prot))
    assert r.ok
    return PortmapUnpacker(r.body).unpack_uint()


def boolean(r: CallResult) -> bool:
    assert r.ok
    u = PortmapUnpacker(r.body)
    value = u.unpack_bool()
    u.done()
    return value


def getaddr(
    d: Dispatcher,
    vers: int,
    prog: int,
    v: int,
    netid: str,
    *,
    addr: str = "",
    peer: str = LOCAL,
    proc: int = pm.RPCBPROC_GETADDR,
) -> str:
    r = ask(d, vers, proc, rpcb(prog, v, netid, addr), peer=peer)
    assert r.ok
    return PortmapUnpacker(r.body).unpack_string().decode()


# --- portmap v2 -------------------------------------------------------------


def test_null_answers_in_every_version() -> None:
    d = dispatcher()
    for vers in (2, 3, 4):
        r = ask(d, vers, 0)
        assert r.ok and r.body == b""


def test_getport_of_our_programs_tcp_and_udp() -> None:
    d = dispatcher(port=20490)
    for prog in (MOUNT, NFS):
        assert getport(d, prog, 3, pm.IPPROTO_TCP) == 20490
        assert getport(d, prog, 3, pm.IPPROTO_UDP) == 20490
    assert getport(d, pm.PMAP_PROG, 2) == 111


def test_getport_unknown_program_or_protocol_is_zero() -> None:
    d = dispatcher()
    assert getport(d, OTHER, 1) == 0
    assert getport(d, NFS, 3, prot=99) == 0


def test_getport_of_another_version_gives_the_programs_port() -> None:
    # As rpcbind: the client then learns the versions from PROG_MISMATCH.
    assert getport(dispatcher(port=2049), NFS, 4) == 2049


def test_dump_lists_every_ipv4_binding() -> None:
    d = dispatcher(port=2049)
    r = ask(d, 2, pm.PMAPPROC_DUMP)
    assert r.ok
    maps = PortmapUnpacker(r.body).unpack_pmaplist()
    got = {(m.prog, m.vers, m.prot, m.port) for m in maps}
    for prog in (MOUNT, NFS):
        for prot in (pm.IPPROTO_TCP, pm.IPPROTO_UDP):
            assert (prog, 3, prot, 2049) in got
    assert (pm.PMAP_PROG, 2, pm.IPPROTO_TCP, 111) in got
    assert len(got) == len(maps) == 2 * 2 + 3 * 2


def test_set_and_unset_from_loopback() -> None:
    d = dispatcher()
    assert boolean(ask(d, 2, pm.PMAPPROC_SET, mapping(OTHER, 1, port=4000)))
    assert getport(d, OTHER, 1) == 4000
    assert getport(d, OTHER, 1, pm.IPPROTO_UDP) == 0
    # RFC 1833: no second mapping for the same (prog, vers, prot).
    assert not boolean(ask(d, 2, pm.PMAPPROC_SET, mapping(OTHER, 1, port=4001)))
    assert boolean(ask(d, 2, pm.PMAPPROC_UNSET, mapping(OTHER, 1)))
    assert getport(d, OTHER, 1) == 0
    assert not boolean(ask(d, 2, pm.PMAPPROC_UNSET, mapping(OTHER, 1)))


@pytest.mark.parametrize(
    "peer",
    [REMOTE, "127.0.0.1:40123", "127.0.0.3:801", "[::1]:40123", "[::ffff:127.0.0.2]:801"],
    ids=["remote", "unprivileged port", "other loopback", "::1 unprivileged", "mapped other"],
)
def test_set_and_unset_refused_from_elsewhere(peer: str) -> None:
    """Only 127.0.0.1 or ::1 from a reserved port (a privileged process of this
    host) may register or unregister: any local user could point showmount's
    MOUNT v1 or NLM lookups at its own port (found by a probe)."""
    d = dispatcher()
    assert boolean(ask(d, 2, pm.PMAPPROC_SET, mapping(OTHER + 1, 2, port=4002)))  # LOCAL: 801
    assert not boolean(ask(d, 2, pm.PMAPPROC_SET, mapping(OTHER, 1, port=4000), peer=peer))
    assert not boolean(
        ask(d, 3, pm.RPCBPROC_SET, rpcb(OTHER, 1, "tcp", "127.0.0.1.15.160"), peer=peer)
    )
    assert getport(d, OTHER, 1) == 0
    assert not boolean(ask(d, 2, pm.PMAPPROC_UNSET, mapping(OTHER + 1, 2), peer=peer))
    assert not boolean(ask(d, 3, pm.RPCBPROC_UNSET, rpcb(OTHER + 1, 2, ""), peer=peer))
    assert getport(d, OTHER + 1, 2) == 4002
    assert boolean(ask(d, 2, pm.PMAPPROC_SET, mapping(OTHER + 2, 3, port=4003), peer="[::1]:900"))


def test_our_own_bindings_cannot_be_replaced_or_removed() -> None:
    d = dispatcher(port=2049)
    assert not boolean(ask(d, 2, pm.PMAPPROC_UNSET, mapping(NFS, 3)))
    assert not boolean(ask(d, 2, pm.PMAPPROC_SET, mapping(NFS, 3, port=9)))
    assert not boolean(ask(d, 3, pm.RPCBPROC_UNSET, rpcb(MOUNT, 3, "")))
    assert getport(d, NFS, 3) == 2049
    assert getport(d, MOUNT, 3) == 2049


def test_set_rejects_bad_protocol_and_port() -> None:
    d = dispatcher()
    assert not boolean(ask(d, 2, pm.PMAPPROC_SET, mapping(OTHER, 1, prot=99, port=4000)))
    assert not boolean(ask(d, 2, pm.PMAPPROC_SET, mapping(OTHER, 1, port=0)))
    assert not boolean(ask(d, 2, pm.PMAPPROC_SET, mapping(OTHER, 1, port=70000)))


def test_callit_and_other_absent_procedures_are_proc_unavail() -> None:
    d = dispatcher()
    for vers, proc in ((2, 5), (3, 5), (3, 7), (3, 8), (4, 5), (4, 10), (4, 12), (2, 6)):
        r = ask(d, vers, proc, b"\0" * 16)
        assert (r.reply_stat, r.stat) == (rpc.MSG_ACCEPTED, rpc.PROC_UNAVAIL), (vers, proc)


def test_unknown_version_is_prog_mismatch_2_to_4() -> None:
    r = ask(dispatcher(), 5, 0)
    assert r.stat == rpc.PROG_MISMATCH
    u = PortmapUnpacker(r.body)
    assert (u.unpack_uint(), u.unpack_uint()) == (2, 4)


def test_truncated_arguments_are_garbage_args() -> None:
    d = dispatcher()
    assert ask(d, 2, pm.PMAPPROC_GETPORT, mapping(NFS, 3)[:12]).stat == rpc.GARBAGE_ARGS
    assert ask(d, 3, pm.RPCBPROC_GETADDR, b"\0\0\0\1").stat == rpc.GARBAGE_ARGS


# --- rpcbind v3 / v4 ----------------------------------------------------------


@pytest.mark.parametrize("vers", [3, 4])
def test_getaddr_universal_address_of_a_specific_bind(vers: int) -> None:
    d = dispatcher(bind="127.0.0.1", port=2049)
    assert getaddr(d, vers, NFS, 3, "tcp") == "127.0.0.1.8.1"
    assert getaddr(d, vers, MOUNT, 3, "udp") == "127.0.0.1.8.1"
    assert getaddr(d, vers, NFS, 3, "tcp6") == ""
    assert getaddr(d, vers, OTHER, 1, "tcp") == ""
    assert getaddr(d, vers, NFS, 3, "rdma") == ""


def test_getaddr_of_a_wildcard_bind_uses_the_address_the_client_knows() -> None:
    d = dispatcher(bind="0.0.0.0", port=20490)
    # The Linux client sends the server's address as it knows it.
    assert getaddr(d, 4, NFS, 3, "tcp", addr="192.0.2.1.0.111", peer=REMOTE) == "192.0.2.1.80.10"
    assert getaddr(d, 4, NFS, 3, "tcp", addr="", peer=LOCAL) == "127.0.0.1.80.10"
    assert getaddr(d, 4, NFS, 3, "tcp", addr="", peer=REMOTE) == "0.0.0.0.80.10"
    assert getaddr(d, 4, NFS, 3, "tcp", addr="nonsense", peer=REMOTE) == "0.0.0.0.80.10"


def test_getaddr_ipv6_on_a_dual_stack_bind() -> None:
    d = dispatcher(bind="::", port=2049)
    assert getaddr(d, 4, NFS, 3, "tcp6", addr="", peer="::1:900") == "::1.8.1"
    assert getaddr(d, 4, NFS, 3, "udp6", addr="2001:db8::5.0.111", peer="2001:db8::9:900") == (
        "2001:db8::5.8.1"
    )
    assert getaddr(d, 4, NFS, 3, "tcp", addr="", peer=LOCAL) == "127.0.0.1.8.1"
    assert getport(d, NFS, 3) == 2049


def test_getversaddr_wants_the_exact_version() -> None:
    d = dispatcher(port=2049)
    v = pm.RPCBPROC_GETVERSADDR
    assert getaddr(d, 4, NFS, 3, "tcp", proc=v) == "127.0.0.1.8.1"
    assert getaddr(d, 4, NFS, 4, "tcp", proc=v) == ""
    assert getaddr(d, 4, NFS, 4, "tcp") == "127.0.0.1.8.1"  # GETADDR: any version
    assert ask(d, 3, pm.RPCBPROC_GETVERSADDR, rpcb(NFS, 3, "tcp")).stat == rpc.PROC_UNAVAIL


def test_rpcbind_set_and_unset() -> None:
    d = dispatcher()
    assert boolean(ask(d, 4, pm.RPCBPROC_SET, rpcb(OTHER, 1, "tcp6", "::1.15.160", "me")))
    assert not boolean(ask(d, 4, pm.RPCBPROC_SET, rpcb(OTHER, 1, "tcp6", "::1.15.161")))
    assert getaddr(d, 4, OTHER, 1, "tcp6") == "::1.15.160"
    assert boolean(ask(d, 3, pm.RPCBPROC_SET, rpcb(OTHER, 1, "udp", "0.0.0.0.15.160")))
    assert getport(d, OTHER, 1, pm.IPPROTO_UDP) == 4000
    assert boolean(ask(d, 3, pm.RPCBPROC_UNSET, rpcb(OTHER, 1, "")))  # every netid
    assert getaddr(d, 4, OTHER, 1, "tcp6") == ""
    assert getport(d, OTHER, 1, pm.IPPROTO_UDP) == 0


@pytest.mark.parametrize(
    ("netid", "addr", "peer"),
    [
        ("tcp", "::1.15.160", LOCAL),  # family does not match the netid
        ("tcp", "127.0.0.1.15.999", LOCAL),  # bad port byte
        ("tcp", "127.0.0.1.0.0", LOCAL),  # port 0
        ("local", "/run/x.sock", LOCAL),  # not an IP netid
        ("tcp", "127.0.0.1.15.160", REMOTE),
    ],
)
def test_rpcbind_set_refusals(netid: str, addr: str, peer: str) -> None:
    d = dispatcher()
    assert not boolean(ask(d, 4, pm.RPCBPROC_SET, rpcb(OTHER, 1, netid, addr), peer=peer))


def test_rpcbind_dump_lists_every_binding_with_universal_addresses() -> None:
    d = dispatcher(bind="::", port=2049)
    r = ask(d, 4, pm.RPCBPROC_DUMP)
    assert r.ok
    rows = PortmapUnpacker(r.body).unpack_rpcblist()
    got = {(x.r_prog, x.r_vers, x.r_netid.decode(), x.r_addr.decode()) for x in rows}
    assert (NFS, 3, "tcp6", "::.8.1") in got
    assert (NFS, 3, "udp", "0.0.0.0.8.1") in got
    assert (pm.PMAP_PROG, 4, "tcp", "0.0.0.0.0.111") in got
    assert all(x.r_owner == b"recovery-fs" for x in rows)


def test_getaddrlist_names_every_transport_of_a_version() -> None:
    d = dispatcher(bind="::", port=2049)
    r = ask(d, 4, pm.RPCBPROC_GETADDRLIST, rpcb(NFS, 3, "tcp"), peer="::1:900")
    assert r.ok
    got = {
        (
            e.r_maddr.decode(),
            e.r_nc_netid.decode(),
            e.r_nc_semantics,
            e.r_nc_protofmly,
            e.r_nc_proto,
        )
        for e in PortmapUnpacker(r.body).unpack_rpcb_entry_list()
    }
    assert got == {
        ("127.0.0.1.8.1", "tcp", pm.NC_TPI_COTS_ORD, b"inet", b"tcp"),
        ("127.0.0.1.8.1", "udp", pm.NC_TPI_CLTS, b"inet", b"udp"),
        ("::1.8.1", "tcp6", pm.NC_TPI_COTS_ORD, b"inet6", b"tcp"),
        ("::1.8.1", "udp6", pm.NC_TPI_CLTS, b"inet6", b"udp"),
    }
    r = ask(d, 4, pm.RPCBPROC_GETADDRLIST, rpcb(NFS, 4, "tcp"))
    assert PortmapUnpacker(r.body).unpack_rpcb_entry_list() == []


def test_gettime_is_now() -> None:
    r = ask(dispatcher(), 3, pm.RPCBPROC_GETTIME)
    assert abs(PortmapUnpacker(r.body).unpack_uint() - time.time()) < 5


# --- helpers ----------------------------------------------------------------


def test_universal_addresses() -> None:
    assert uaddr("127.0.0.1", 2049) == "127.0.0.1.8.1"
    assert uaddr("::1", 111) == "::1.0.111"
    assert parse_uaddr("10.1.2.3.80.10") == (parse_uaddr("10.1.2.3.0.0")[0], 20490)
    assert str(parse_uaddr("fe80::1.0.111")[0]) == "fe80::1"
    for bad in ("", "1.2.3.4", "1.2.3.4.256.0", "host.1.1", "1.2.3.4.-1.0"):
        with pytest.raises(ValueError):
            parse_uaddr(bad)


def test_netids_for_a_bind_address() -> None:
    assert netids_for("0.0.0.0") == ("tcp", "udp")
    assert netids_for("127.0.0.1") == ("tcp", "udp")
    assert netids_for("::") == ("tcp", "udp", "tcp6", "udp6")
    assert netids_for("::1") == ("tcp6", "udp6")


@pytest.mark.parametrize(
    ("peer", "loopback"),
    [
        ("127.0.0.1:700", True),
        ("127.1.2.3:700", True),
        ("::1:700", True),
        ("::ffff:127.0.0.1:700", True),
        ("192.0.2.7:700", False),
        ("::ffff:192.0.2.7:700", False),
        ("2001:db8::1:700", False),
        ("garbage", False),
    ],
)
def test_peer_is_loopback(peer: str, loopback: bool) -> None:
    assert peer_is_loopback(peer) is loopback


def test_table_any_version_prefers_the_highest() -> None:
    t = PortmapTable()
    t.add(Binding(OTHER, 1, "tcp", None, 1000))
    t.add(Binding(OTHER, 2, "tcp", None, 2000))
    found = t.find(OTHER, 9, "tcp", any_version=True)
    assert found is not None and found.port == 2000
    assert t.find(OTHER, 9, "tcp", any_version=False) is None
    assert t.find(OTHER, 1, "udp", any_version=True) is None


def test_own_bindings_without_a_portmapper_port() -> None:
    rows = own_bindings(fake_programs(), "127.0.0.1", 2049, None)
    assert {(b.prog, b.netid) for b in rows} == {
        (p, n) for p in (MOUNT, NFS) for n in ("tcp", "udp")
    }
    assert all(b.fixed and b.port == 2049 for b in rows)


def test_service_can_be_built_over_an_empty_table() -> None:
    d = Dispatcher([PortmapService(PortmapTable(), "0.0.0.0").program()])
    assert getport(d, NFS, 3) == 0
    assert PortmapUnpacker(ask(d, 2, pm.PMAPPROC_DUMP).body).unpack_pmaplist() == []
