"""What a connection's TLS proves, as the exports list sees it (``xprtsec=``, certificate names).

Design notes
------------
A connection is ``none`` (plain TCP or UDP), ``tls``, or ``mtls`` (a client
certificate that verified against ``--tls-client-ca``;
``nfsd.transport.tls.Security``).  Two things follow from it:

* **The export's ``xprtsec=``** lists the levels it admits, as knfsd reads
  it: ``xprtsec=tls`` admits TLS without a client certificate only,
  ``xprtsec=mtls`` verified certificates only, ``xprtsec=tls:mtls`` both
  (without ``xprtsec=`` all three, ``none`` included, as knfsd:
  ``exports.options``).  A call on a connection of another
  level is refused with ``NFS3ERR_ACCES`` (``nfsd.programs.access``).
* **Certificate identities.**  On an ``mtls`` connection a host-name or
  wildcard client (``guest.example``, ``*.backup.example``) also admits a
  client whose certificate holds a matching subjectAltName DNS name,
  whatever its address and without a name look-up: the certificate is the
  proof that a forward-confirmed look-up is for names.  This is done by
  :class:`IdentityLookups`, a wrapper of the resolver that adds the
  certificate's names to what the resolver knows, so the matching rules of
  ``exports.clients`` (precedence, wildcards that stop at dots) apply
  unchanged.  On ``none`` and ``tls`` connections names resolve as before.

MNT in clear (NFSv3).  The Linux client sends MOUNT without TLS even when
it mounts with ``xprtsec=tls`` or ``mtls`` (measured: one STARTTLS per
mount, on the NFS connection, with Linux 6.12 and tlshd 1.0.0; the kernel's
MOUNT client has no TLS), and knfsd's mountd does not check ``xprtsec``
either.  So a MNT on a *plain* connection is judged by address, port and
flavour but not held to ``xprtsec`` (``AccessControl.check_mount``); a MNT
sent *over* TLS is held to it like any NFS call.  What a MNT in clear
exposes is the export's root handle (to the client, and to anyone watching
the wire).  It gets nobody in: every NFS call but NULL is checked, before
its handle is looked at, against the address or certificate, the port, the
flavour and the ``xprtsec`` of the connection it arrives on, so a plain
connection holding the root handle of a ``tls`` export gets
``NFS3ERR_ACCES`` for every call.  A client known only by a certificate
name therefore also needs its address (or network) listed for the MNT in
clear, e.g. ``guest.example(xprtsec=mtls) 10.1.0.0/16(xprtsec=mtls)``.
"""

from __future__ import annotations

from exports.clients import Lookups, normalize_addr, normalize_name
from nfsd.transport.tls import Security


class IdentityLookups:
    """A resolver whose answers also hold the names a client certificate proves.

    ``names(addr)`` of the client's own address gives the certificate's DNS
    names (and whatever the resolver knows); ``addresses(name)`` of one of
    those names gives the client's address.  Other questions go to the
    resolver unchanged.
    """

    def __init__(self, resolver: Lookups, addr: str, names: frozenset[str]) -> None:
        self.resolver = resolver
        self.addr = normalize_addr(addr)
        self.proven = names

    def addresses(self, name: str, wait: float = 0.0) -> set[str] | None:
        if normalize_name(name) in self.proven:
            return {self.addr}
        return self.resolver.addresses(name, wait)

    def names(self, addr: str, wait: float = 0.0) -> set[str] | None:
        if self.proven and normalize_addr(addr) == self.addr:
            known = self.resolver.names(addr, 0.0)  # the certificate needs no waiting
            return set(self.proven) | (known or set())
        return self.resolver.names(addr, wait)


def lookups_for(resolver: Lookups, addr: str, security: Security) -> Lookups:
    """The resolver to match a call with: certificate names added on ``mtls``."""
    if security.level != "mtls" or not security.names:
        return resolver
    try:
        return IdentityLookups(resolver, addr, frozenset(normalize_name(n) for n in security.names))
    except ValueError:  # not an address: nothing to add
        return resolver
