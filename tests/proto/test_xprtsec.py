"""``xprtsec=`` and certificate identities through the dispatcher, bytes in, bytes out.

The connection's security (``nfsd.transport.tls.Security``) is what the
transport hands to ``dispatch``; here each peer states it.
"""

from __future__ import annotations

import pytest

from nfsd.rpc import Dispatcher
from nfsd.transport.tls import PLAIN, Security
from tests.proto.calls import auth_sys, call, parse
from tests.proto.nfsclient import Caller, open_access
from tests.proto.test_access import ModedNamespace, status
from xdr import mount3, nfs3, rpc
from xdr.mount3 import Mount3Packer, Mount3Unpacker
from xdr.nfs3 import NFS3Packer

TLS = Security("tls")
GUEST = Security("mtls", ("guest.example",), "ab" * 32)
OTHER = Security("mtls", ("other.example",), "cd" * 32)


@pytest.fixture(scope="module")
def ns():  # type: ignore[no-untyped-def]
    n = ModedNamespace({("f",): b"secret", ("d",): None})
    yield n
    n.close()


class Conn:
    """Calls from one ``host:port`` over a connection of one security level."""

    def __init__(self, d: Dispatcher, peer: str, security: Security) -> None:
        self.d, self.peer, self.security = d, peer, security
        self.xid = 1

    def raw(self, prog: int, proc: int, args: bytes):  # type: ignore[no-untyped-def]
        self.xid += 1
        record = call(prog, 3, proc, args, xid=self.xid, cred=auth_sys(1000, 1000))
        reply = self.d.dispatch(record, self.peer, "tcp", security=self.security)
        assert reply is not None
        r = parse(reply.parts)
        reply.free()
        assert r.stat == rpc.SUCCESS
        return r

    def mnt(self) -> mount3.mountres3:
        p = Mount3Packer()
        p.pack_dirpath(b"/recover/images")
        r = self.raw(mount3.MOUNT_PROGRAM, mount3.MOUNTPROC3_MNT, p.get_buffer())
        return Mount3Unpacker(r.body).unpack_mountres3()

    def getattr(self, fh: bytes) -> int:
        p = NFS3Packer()
        p.pack_nfs_fh3(nfs3.nfs_fh3(fh))
        return status(self.raw(nfs3.NFS_PROGRAM, nfs3.NFSPROC3_GETATTR, p.get_buffer()).body)


def build(ns, text: str) -> Dispatcher:  # type: ignore[no-untyped-def]
    return Caller(ns, access=open_access(text)).dispatcher


def root_handle(d: Dispatcher) -> bytes:
    res = Conn(d, "10.0.0.2:700", PLAIN).mnt()  # MNT in clear, as Linux sends it
    assert res.fhs_status == mount3.MNT3_OK
    return bytes(res.mountinfo.fhandle)


@pytest.mark.parametrize(
    ("xprtsec", "admitted"),
    [
        ("none", {"none"}),
        ("tls", {"tls"}),
        ("mtls", {"mtls"}),
        ("tls:mtls", {"tls", "mtls"}),
        (None, {"none", "tls", "mtls"}),  # no xprtsec=: any transport, as knfsd
    ],
)
def test_every_nfs_call_is_held_to_the_exports_xprtsec(ns, xprtsec, admitted) -> None:  # type: ignore[no-untyped-def]
    opts = "insecure" + (f",xprtsec={xprtsec}" if xprtsec else "")
    d = build(ns, f"/recover/images 10.0.0.0/8({opts})\n")
    fh = root_handle(d)
    for level, security in (("none", PLAIN), ("tls", TLS), ("mtls", GUEST)):
        got = Conn(d, "10.0.0.2:701", security).getattr(fh)
        want = nfs3.NFS3_OK if level in admitted else nfs3.NFS3ERR_ACCES
        assert got == want, (xprtsec, level)


def test_mnt_in_clear_is_answered_but_a_handle_gets_a_plain_connection_nothing(ns) -> None:  # type: ignore[no-untyped-def]
    """The Linux client sends MOUNT in clear even with xprtsec=tls: MNT answers; the
    NFS calls on a plain connection are refused, on a TLS one served."""
    d = build(ns, "/recover/images 10.0.0.0/8(insecure,xprtsec=tls)\n")
    clear = Conn(d, "10.0.0.2:702", PLAIN).mnt()
    assert clear.fhs_status == mount3.MNT3_OK
    fh = bytes(clear.mountinfo.fhandle)
    assert Conn(d, "10.0.0.2:703", PLAIN).getattr(fh) == nfs3.NFS3ERR_ACCES
    assert Conn(d, "10.0.0.2:704", TLS).getattr(fh) == nfs3.NFS3_OK
    # a MNT over TLS is held to xprtsec like any call; strangers are still strangers
    assert Conn(d, "10.0.0.2:705", GUEST).mnt().fhs_status == mount3.MNT3ERR_ACCES
    assert Conn(d, "192.0.2.1:706", PLAIN).mnt().fhs_status == mount3.MNT3ERR_ACCES


def test_a_certificate_name_is_a_client_identity_on_mtls_only(ns) -> None:  # type: ignore[no-untyped-def]
    d = build(
        ns,
        "/recover/images guest.example(insecure,xprtsec=mtls)"
        " *.backup.example(insecure,xprtsec=mtls) 10.0.0.0/8(insecure,xprtsec=tls)\n",
    )
    fh = root_handle(d)
    stranger = "192.0.2.7:710"  # an address no client spec names
    assert Conn(d, stranger, GUEST).getattr(fh) == nfs3.NFS3_OK
    assert Conn(d, stranger, OTHER).getattr(fh) == nfs3.NFS3ERR_STALE  # not listed
    wild = Security("mtls", ("host1.backup.example",), "ef" * 32)
    assert Conn(d, stranger, wild).getattr(fh) == nfs3.NFS3_OK
    deeper = Security("mtls", ("a.host1.backup.example",), "ef" * 32)  # * stops at dots
    assert Conn(d, stranger, deeper).getattr(fh) == nfs3.NFS3ERR_STALE
    # a name in a certificate proves nothing without a verified certificate (tls)
    assert Conn(d, stranger, TLS).getattr(fh) == nfs3.NFS3ERR_STALE
    # from a listed network: the certificate's spec comes first (host before network)
    assert Conn(d, "10.0.0.9:711", GUEST).getattr(fh) == nfs3.NFS3_OK
    assert Conn(d, "10.0.0.9:712", OTHER).getattr(fh) == nfs3.NFS3ERR_ACCES  # network: tls
    assert Conn(d, "10.0.0.9:713", TLS).getattr(fh) == nfs3.NFS3_OK


def test_decisions_are_remembered_per_security_level(ns) -> None:  # type: ignore[no-untyped-def]
    """One peer string, first plain then TLS (a reconnect reusing a port): a plain
    refusal is not reused for TLS, nor a TLS admission for plain."""
    d = build(ns, "/recover/images 10.0.0.0/8(insecure,xprtsec=tls)\n")
    fh = root_handle(d)
    peer = "10.0.0.2:720"
    assert Conn(d, peer, PLAIN).getattr(fh) == nfs3.NFS3ERR_ACCES
    assert Conn(d, peer, TLS).getattr(fh) == nfs3.NFS3_OK
    assert Conn(d, peer, PLAIN).getattr(fh) == nfs3.NFS3ERR_ACCES


def test_a_refusal_names_the_level_and_the_policy(ns, caplog) -> None:  # type: ignore[no-untyped-def]
    d = build(ns, "/recover/images 10.0.0.0/8(insecure,xprtsec=mtls)\n")
    fh = bytes(Conn(d, "10.0.0.2:730", GUEST).mnt().mountinfo.fhandle)
    assert Conn(d, "10.0.0.2:731", TLS).getattr(fh) == nfs3.NFS3ERR_ACCES
    assert "a tls connection, the export wants xprtsec=mtls" in caplog.text


def test_showmount_in_clear_lists_a_tls_export_to_its_clients(ns) -> None:  # type: ignore[no-untyped-def]
    """EXPORT, like MNT, comes in clear from showmount and the Linux client."""
    d = build(ns, "/recover/images 10.0.0.0/8(insecure,xprtsec=tls)\n")
    listed = Conn(d, "10.0.0.2:740", PLAIN).raw(mount3.MOUNT_PROGRAM, mount3.MOUNTPROC3_EXPORT, b"")
    assert b"/recover/images" in listed.body
    stranger = Conn(d, "192.0.2.1:741", PLAIN).raw(mount3.MOUNT_PROGRAM, 5, b"")
    assert b"/recover/images" not in stranger.body
