"""Who may call: the exports list applied to every MOUNT and NFS call.

Design notes
------------
A handle is never a capability by itself.  MNT checks the caller, and so
does every NFS call except NULL, *before* its handle is resolved: a host
that copied a valid handle from an allowed one gets no attribute, name or
byte.  The answers are knfsd's, because the Linux client is built against
them:

==============================  ==================  =====================
the caller                      MNT                  any other NFS call
==============================  ==================  =====================
not in the list                 MNT3ERR_ACCES        NFS3ERR_STALE
source port >= 1024, `secure`   MNT3ERR_ACCES        NFS3ERR_PERM
flavour not in `sec=`           MNT3ERR_ACCES        NFS3ERR_ACCES
`mountpoint` not mounted        MNT3ERR_NOENT        NFS3ERR_STALE
connection not in `xprtsec=`    MNT3ERR_ACCES (TLS)  NFS3ERR_ACCES
==============================  ==================  =====================

(``xprtsec=``: a MNT in clear is not held to it - the Linux client sends
MOUNT without TLS even with ``xprtsec=tls`` - and, on an ``mtls``
connection, a host name or wildcard client also admits a client whose
certificate names it: ``nfsd.programs.xprtsec``.  The connection's security
level is part of the key of a remembered decision.)

(ganesha answers AUTH_TOOWEAK at the RPC level instead; knfsd's statuses
keep the refusal inside NFS, where the Linux client turns it into an
ordinary errno - ``ESTALE``, ``EPERM``, ``EACCES`` - rather than retrying.)

Cost on the READ path: a clock read and, for a call whose peer string,
flavour, export and ``Security`` are the very objects of the previous
call's (one connection's calls), the decision that call found, if the
dict it came from is still the one in force (``decide``); else one dict
look-up by the peer's ``host:port`` string.  Squashing gives the
credential it made last for the same credential object and options.
Decisions are kept per peer and per list *generation*, for at most
:data:`DECISION_TTL` seconds (a decision made from a host name must not
outlive the resolver's answer); a reload starts
a new generation, so a client taken off the list is refused from its next
call on, while connections of clients still allowed are kept.  Each change
of the lists in force (a reload, a session's clients) is also told to the
transport (``changed``): a connection then holds its slot only once a call
the new lists admit validates it again, so that a host taken off the list
cannot keep the slots with NULLs (``RpcServer.exports_changed``).
Host names and wildcards are resolved by ``exports.Resolver`` on its own
thread: a per-call check never waits for a resolver (``wait=0``); MNT waits
at most :data:`MOUNT_RESOLVE_WAIT`, and only on a worker over TCP, at most
:data:`MOUNT_WAITERS` at once (past it a MNT whose name is not known yet is
refused, not held: look-ups that never answer must not hold every worker): on the
server's loop it is handed to a worker (WouldBlock: a name whose look-up
never answers must not stall every connection), and over UDP it gets no
reply while the look-up runs (DropCall: the client sends it again and finds
the answer; a forged source cannot tie a worker up for each datagram).
A peer admitted before whose match now waits on a look-up stays admitted
meanwhile (its name's answer evicted by a flood must not refuse it), but
only while a look-up *its* match asked for runs (``_Asked``: a stranger's
never-answering reverse zone is not this client's) and for at most one
more :data:`DECISION_TTL` past that decision's expiry: a look-up kept
pending does not keep a host in after its name stopped resolving to it.

Squashing (``root_squash``, ``all_squash``, AUTH_NONE) rewrites the call's
credentials here, once: ACCESS and the permission checks below then see the
squashed uid and gids.  Each refusal is logged at level 0 (a warning) once
per client, reason and generation.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from exports import ClientSpec, ExportOptions, ExportsError, ExportTable, Resolver, loopback_only
from exports import load as load_exports
from exports.clients import Lookups
from nfsd.programs.xprtsec import lookups_for
from nfsd.rpc import CallContext, DropCall, WouldBlock
from nfsd.transport.tls import PLAIN, Security
from xdr import mount3
from xdr import nfs3const as nfs3
from xdr.rpc import AUTH_NONE, AUTH_SYS, authsys_parms

log = logging.getLogger("recovery_fs.access")

MOUNT_RESOLVE_WAIT = 2.0  # seconds a MNT may wait for a first name look-up
MOUNT_WAITERS = 2  # MNTs waiting for a look-up at once; past it one does not wait (refused)
MOUNTPOINT_RECHECK = 1.0  # seconds between checks of a `mountpoint` export
DECISION_TTL = 30.0  # seconds a peer's decision is reused before it is made again
MAX_DECISIONS = 8192  # peers remembered; past that the memo starts again
MAX_LOGGED = 4096

_FLAVOR = {"sys": AUTH_SYS, "none": AUTH_NONE}

# Refusal reasons, with the status each program answers.
OK, NOT_LISTED, INSECURE_PORT, WEAK_FLAVOR, NOT_MOUNTED = range(5)
WRONG_XPRTSEC = 5  # the connection's TLS is not what the export's xprtsec= asks
_NFS_STATUS = {
    NOT_LISTED: nfs3.NFS3ERR_STALE,
    INSECURE_PORT: nfs3.NFS3ERR_PERM,
    WEAK_FLAVOR: nfs3.NFS3ERR_ACCES,
    NOT_MOUNTED: nfs3.NFS3ERR_STALE,
    WRONG_XPRTSEC: nfs3.NFS3ERR_ACCES,  # knfsd's answer to a wrong xprtsec policy
}
_MNT_STATUS = {
    NOT_LISTED: mount3.MNT3ERR_ACCES,
    INSECURE_PORT: mount3.MNT3ERR_ACCES,
    WEAK_FLAVOR: mount3.MNT3ERR_ACCES,
    NOT_MOUNTED: mount3.MNT3ERR_NOENT,
    WRONG_XPRTSEC: mount3.MNT3ERR_ACCES,
}
_WHY = {
    NOT_LISTED: "not in the exports list",
    INSECURE_PORT: "source port {port} is not below 1024 and the export is `secure`",
    WEAK_FLAVOR: "credential flavour {flavor} not in sec={sec}",
    NOT_MOUNTED: "{mp} is not a mounted file system (`mountpoint`)",
    WRONG_XPRTSEC: "a {level} connection, the export wants xprtsec={xprtsec}",
}


@functools.lru_cache(maxsize=4096)
def split_peer(peer: str) -> tuple[str, int]:
    """``host:port`` (IPv6 hosts unbracketed) → (normalised address, port).

    Cached: a connection's peer string is asked for on every call (access,
    reply cache key, the session's client list), and parsing it is ~2.4 µs.

    IPv4-mapped IPv6 addresses are the IPv4 address: a dual-stack socket
    must not make 10.1.2.3 and ::ffff:10.1.2.3 two different clients.
    """
    host, _, port = peer.rpartition(":")
    host = host.strip("[]").split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host, int(port) if port.isdigit() else 65535
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip), int(port) if port.isdigit() else 65535


@dataclass(frozen=True, slots=True)
class Decision:
    """What the list says of one peer: a reason (OK or a refusal) and its spec."""

    reason: int
    spec: ClientSpec | None
    generation: int
    until: float = 0.0  # monotonic time after which it is made again
    waiting: bool = False  # NOT_LISTED while a look-up it asked runs: no verdict yet


class _Asked:
    """One decision's look-ups (``lookups_for``'s), noting whether a question it
    asked got no answer while its look-up runs (``Resolver.looking_up``): then the
    decision is no verdict yet.  Another client's look-up is not this one's."""

    __slots__ = ("lookups", "resolver", "waiting")

    def __init__(self, lookups: Lookups, resolver: Resolver) -> None:
        self.lookups = lookups
        self.resolver = resolver
        self.waiting = False

    def addresses(self, name: str, wait: float = 0.0) -> set[str] | None:
        return self._ask("addresses", name, wait, self.lookups.addresses)

    def names(self, addr: str, wait: float = 0.0) -> set[str] | None:
        return self._ask("names", addr, wait, self.lookups.names)

    def _ask(
        self, kind: str, arg: str, wait: float, ask: Callable[[str, float], set[str] | None]
    ) -> set[str] | None:
        found = ask(arg, wait)
        if found is None and not self.resolver.looking_up(kind, arg):
            found = ask(arg, 0.0)  # it may have ended just now: its answer is kept
        if found is None and self.resolver.looking_up(kind, arg):
            self.waiting = True
        return found


class _MountpointCheck:
    """Whether a `mountpoint` path is mounted, re-checked at most once a second."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[float, bool]] = {}

    def mounted(self, path: str) -> bool:
        now = time.monotonic()
        seen = self._seen.get(path)
        if seen is not None and now - seen[0] < MOUNTPOINT_RECHECK:
            return seen[1]
        ok = os.path.ismount(path)
        self._seen[path] = (now, ok)
        return ok


class AccessControl:
    """The exports list in force, and the checks every call goes through.

    ``source`` is the exports file, or None for the built-in loopback-only
    list.  ``storage`` is what a bare ``mountpoint`` option names.
    """

    def __init__(
        self,
        source: Path | None,
        export_path: str,
        storage: Path,
        *,
        resolver: Resolver | None = None,
        table: ExportTable | None = None,
    ) -> None:
        self.source = source
        self.export_path = export_path
        self.storage = storage
        self.resolver = resolver if resolver is not None else Resolver()  # (an empty one is falsy)
        # Run after the lists in force changed (a reload, the sessions' lists):
        # the transport then asks every connection to be admitted again
        # (nfsd.transport.server.RpcServer.exports_changed).
        self.changed: list[Callable[[], None]] = []
        # ``table`` given (tests, embedders) is used as is; else read: an
        # ExportsError here stops the server at start.
        self.table: ExportTable = table if table is not None else self._read()
        # The instant-recovery sessions' exports (nfsd.programs.sessions): each
        # session path has its own clients, checked like the file's.
        self.sessions_table = ExportTable(())
        self.generation = 1
        self.loaded_at = time.time()
        self.last_error: str | None = None
        self._decisions: dict[tuple, Decision] = {}  # (peer, flavour, ..., security)
        # The decisions that admitted, apart: a flood of strangers empties
        # _decisions (its bound) and the resolver's cache (its own), and an
        # admitted client whose name is being looked up again is not refused
        # meanwhile (it was: NFS3ERR_STALE); only admitted peers enter here.
        self._admitted: dict[tuple, Decision] = {}
        # The last decision found in _decisions, with its key's parts and that dict:
        # see decide.  One tuple, read and replaced whole.
        self._last: tuple = (None, None, None, None, None, None)
        self._logged: set[tuple[str, int, int]] = set()
        # Workers a MNT may hold waiting for names: a client with a reverse zone
        # that never answers, from many addresses, would otherwise hold them all
        # (2 s each, again and again) and every call needing a worker with them.
        self._mount_waiters = threading.BoundedSemaphore(MOUNT_WAITERS)
        self._mountpoints = _MountpointCheck()
        self._reload_lock = threading.Lock()

    # -- the list ------------------------------------------------------------
    def _read(self) -> ExportTable:
        if self.source is None:
            return loopback_only(self.export_path)
        table = load_exports(self.source)
        table.check_only(self.export_path, self.source)
        if table.get(self.export_path) is None:
            log.warning(
                "%s lists no client for %s: nobody can mount", self.source, self.export_path
            )
        return table

    def reload(self) -> str | None:
        """Read the list again; None when applied, else why it was not (old list kept)."""
        with self._reload_lock:
            try:
                table = self._read()
            except (ExportsError, OSError) as e:
                why = str(e) if isinstance(e, ExportsError) else f"{self.source}: {e.strerror or e}"
                self.last_error = why
                log.error("exports not reloaded, the previous list stays in force: %s", why)
                return why
            self.table = table
            self.generation += 1
            self.loaded_at = time.time()
            self.last_error = None
            self._decisions = {}
            self._admitted = {}
            for w in table.warnings:
                log.warning("%s", w)
            log.warning("exports reloaded from %s (generation %d)", self.source, self.generation)
        self._changed()
        return None

    def set_sessions(self, table: ExportTable) -> None:
        """The sessions' exports changed: every decision is made again.

        (Not a new generation: that counts reloads of the exports file.)
        """
        self.sessions_table = table
        self._decisions = {}
        self._admitted = {}
        self._changed()

    def _changed(self) -> None:
        for callback in self.changed:
            try:
                callback()
            except Exception:
                log.exception("a listener of the exports' changes failed")

    def table_for(self, export: str | None) -> ExportTable:
        """The list holding ``export`` (None: the read-only export)."""
        if export is None or export == self.export_path:
            return self.table
        return self.sessions_table

    def describe(self) -> str:
        """Where the list comes from, for the start-up line."""
        if self.source is None:
            return "no exports file: serving loopback only (127.0.0.1, ::1)"
        return f"exports from {self.source}"

    # -- decisions ----------------------------------------------------------
    def _spec(
        self, addr: str, wait: float, export: str | None = None, security: Security = PLAIN
    ) -> tuple[ClientSpec | None, bool]:
        """The spec admitting ``addr``, and whether a look-up the match asked for
        is still running (no answer yet: a None spec is then no verdict)."""
        path = export or self.export_path
        asked = _Asked(lookups_for(self.resolver, addr, security), self.resolver)
        spec = self.table_for(export).match(path, addr, asked, wait=wait)
        return spec, asked.waiting

    def decide(self, ctx: CallContext, wait: float = 0.0, export: str | None = None) -> Decision:
        """The list's verdict on this call's peer, port and flavour, for ``export``."""
        # One connection's calls carry the same peer string and Security object:
        # the last call's key, its parts compared by identity, finds the same
        # decision in the same dict (not replaced since: a reload, the sessions
        # set, the bound) without a key built and hashed (Security's hash is
        # Python code).  Still checked for its generation and expiry below.
        peer, security = ctx.peer, ctx.security
        decisions = self._decisions
        last = self._last
        now = time.monotonic()
        if (
            last[0] is peer
            and last[3] is security
            and last[2] is export
            and last[1] == ctx.flavor
            and last[5] is decisions
        ):
            d = last[4]
            if d.generation == self.generation and now < d.until:
                if d.reason == OK and not self._mounted(d.spec):
                    return Decision(NOT_MOUNTED, d.spec, d.generation)
                return d
        key = (peer, ctx.flavor, export, security)
        d = decisions.get(key)
        if d is not None and d.generation == self.generation and now < d.until:
            self._last = (peer, ctx.flavor, export, security, d, decisions)
            if d.reason == OK and not self._mounted(d.spec):
                return Decision(NOT_MOUNTED, d.spec, d.generation)
            return d
        addr, port = split_peer(ctx.peer)  # only when deciding: ipaddress costs ~4 µs a call
        generation = self.generation
        until = now + DECISION_TTL
        spec, waiting = self._spec(addr, wait, export, ctx.security)
        if spec is None:
            d = Decision(NOT_LISTED, None, generation, until, waiting)
            # A name not resolved yet is no verdict: ask again next call; one
            # admitted before stays admitted while a look-up this decision asked
            # for runs (not anyone's: a stranger's slow reverse zone must not keep
            # a host in after its name stopped resolving to it), and at most one
            # more DECISION_TTL past that decision's expiry.
            if wait == 0.0 and self._has_names(export):
                before = self._admitted.get(key)
                if before is not None and before.generation == generation:
                    if waiting and now < before.until + DECISION_TTL:
                        if not self._mounted(before.spec):
                            return Decision(NOT_MOUNTED, before.spec, generation)
                        return before
                    self._admitted.pop(key, None)  # answered since, or too old: not listed
                return d
        else:
            o = spec.options
            if o.secure and port >= 1024:
                d = Decision(INSECURE_PORT, spec, generation, until)
            elif ctx.flavor not in self.flavors(o):
                d = Decision(WEAK_FLAVOR, spec, generation, until)
            elif ctx.security.level not in o.xprtsec:
                d = Decision(WRONG_XPRTSEC, spec, generation, until)
            else:
                d = Decision(OK, spec, generation, until)
        if len(self._decisions) >= MAX_DECISIONS:
            self._decisions = {}
        self._decisions[key] = d
        if d.reason == OK:
            if len(self._admitted) >= MAX_DECISIONS:
                self._admitted = {}
            self._admitted[key] = d
        if d.reason == OK and not self._mounted(spec):
            return Decision(NOT_MOUNTED, spec, generation)
        return d

    def _has_names(self, path: str | None = None) -> bool:
        export = self.table_for(path).get(path or self.export_path)
        return export is not None and any(c.kind in ("host", "wildcard") for c in export.clients)

    def _mounted(self, spec: ClientSpec | None) -> bool:
        mp = spec.options.mountpoint if spec is not None else None
        if mp is None:
            return True
        return self._mountpoints.mounted(mp or str(self.storage))

    @staticmethod
    def flavors(options: ExportOptions) -> tuple[int, ...]:
        """The RPC flavour numbers ``sec=`` allows, in its order."""
        return tuple(_FLAVOR[s] for s in options.sec if s in _FLAVOR)

    def _log_refusal(self, ctx: CallContext, d: Decision, what: str) -> None:
        addr, port = split_peer(ctx.peer)
        key = (addr, d.reason, d.generation)
        if key in self._logged:
            return
        if len(self._logged) >= MAX_LOGGED:
            self._logged.clear()
        self._logged.add(key)
        o = d.spec.options if d.spec is not None else None
        why = _WHY[d.reason].format(
            port=port,
            flavor=ctx.flavor,
            sec=":".join(o.sec) if o else "",
            mp=(o.mountpoint or str(self.storage)) if o else "",
            level=ctx.security.level,
            xprtsec=":".join(o.xprtsec) if o else "",
        )
        log.warning("refused %s from %s: %s", what, addr, why)

    # -- the checks the programs call -----------------------------------------
    def check_mount(
        self, ctx: CallContext, export: str | None = None
    ) -> tuple[int, ExportOptions | None]:
        """(MNT3_OK, options) or (an MNT3ERR status, None) for a MNT call."""
        d = self._mount_decision(ctx, export)
        if d.reason != OK:
            self._log_refusal(ctx, d, "MNT")
            return _MNT_STATUS[d.reason], None
        assert d.spec is not None
        return mount3.MNT3_OK, d.spec.options

    def admits(self, ctx: CallContext, export: str | None = None) -> bool:
        """Whether the list admits this caller at all (EXPORT and DUMP answers)."""
        return self._mount_decision(ctx, export).reason == OK

    def _mount_decision(self, ctx: CallContext, export: str | None) -> Decision:
        """:meth:`decide` for MOUNT's procedures, which Linux sends in clear even
        with ``xprtsec=tls``: a plain connection is not held to ``xprtsec``
        (``nfsd.programs.xprtsec``)."""
        d = self.decide(ctx, export=export)
        if d.reason == NOT_LISTED and self._has_names(export):
            # Maybe no verdict yet: a look-up this answer needs may be running.
            if not ctx.inline and ctx.transport != "udp":
                if self._mount_waiters.acquire(blocking=False):
                    try:
                        d = self.decide(ctx, wait=MOUNT_RESOLVE_WAIT, export=export)
                    finally:
                        self._mount_waiters.release()
                # else: MOUNT_WAITERS MNTs wait already: this one is answered from
                # what is known (refused unless its name is known), not held.
            elif d.waiting:  # its own look-ups: another client's are not this MNT's
                if ctx.inline:
                    raise WouldBlock
                raise DropCall("a name look-up is running")
            else:  # the look-ups it started have answered meanwhile
                d = self.decide(ctx, export=export)
        if d.reason == WRONG_XPRTSEC and ctx.security.level == "none":
            d = Decision(OK, d.spec, d.generation)
        if d.reason == OK:
            ctx.admitted = True
        return d

    def nfs_status(self, ctx: CallContext, export: str | None = None) -> int:
        """NFS3_OK after squashing ``ctx``'s credentials, else the refusal status.

        ``export``: the export the call's handle belongs to (None: the read-only one).
        """
        d = self.decide(ctx, export=export)
        if d.reason != OK:
            self._log_refusal(ctx, d, "NFS calls")
            return _NFS_STATUS[d.reason]
        assert d.spec is not None
        squash(ctx, d.spec.options)
        ctx.admitted = True
        return nfs3.NFS3_OK


def squash(ctx: CallContext, o: ExportOptions) -> None:
    """Rewrite the call's credentials as the export's squash options say.

    AUTH_NONE is always the anonymous user; `root_squash` maps uid 0 and
    gid 0 (in the primary and the supplementary groups) to anonuid/anongid;
    `all_squash` maps everyone.

    The credential it made last is given again for the same credential
    object and options (the fast path hands a connection's calls the same
    ``authsys_parms``: ``nfsd.programs.nfs3.fastpath``): what it would make
    is a function of those alone, and nothing changes a credential in place.
    """
    cred = ctx.cred
    last = _last_squash
    if last[0] is cred and last[1] is o:
        if last[2] is not None:
            ctx.cred = last[2]
        return
    squashed = _squashed(cred, o)
    _remember_squash(cred, o, squashed)
    if squashed is not None:
        ctx.cred = squashed


def _squashed(cred: authsys_parms | None, o: ExportOptions) -> authsys_parms | None:
    """The credential ``squash`` puts in the call's place, or None to keep ``cred``."""
    if cred is None or o.squash == "all":
        return authsys_parms(0, b"", o.anonuid, o.anongid, [])
    if o.squash == "root" and (cred.uid == 0 or cred.gid == 0 or 0 in cred.gids):
        return authsys_parms(
            cred.stamp,
            cred.machinename,
            o.anonuid if cred.uid == 0 else cred.uid,
            o.anongid if cred.gid == 0 else cred.gid,
            [o.anongid if g == 0 else g for g in cred.gids],
        )
    return None


# (credential, options, what squash made of them or None): one tuple, replaced whole.
_last_squash: tuple[object, object, authsys_parms | None] = (object(), object(), None)


def _remember_squash(cred: object, o: object, squashed: authsys_parms | None) -> None:
    global _last_squash  # noqa: PLW0603 (one tuple, replaced whole: safe across threads)
    _last_squash = (cred, o, squashed)
