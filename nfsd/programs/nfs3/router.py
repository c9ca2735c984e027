"""One NFS program, two kinds of export: each call goes where its handle belongs.

Design notes
------------
The read-only export (``/recover/images``, path handles of
``nfsd.programs.handles``) and the instant-recovery sessions
(``/recover/instant/NAME``, handles of ``nfsd.programs.sessions``) share
the NFS program.  Every procedure is routed by its first handle (the
object, or the directory of a directory operation): a session handle
(version byte 2) goes to ``session``/``write``, anything else to the
read-only procedures, which stay exactly as they were (their changes are
ROFS refusals).

The access check (``nfsd.programs.access``) is made here rather than as
the program's guard, because which client list applies depends on the
export the handle belongs to: a handle claiming a session is checked
against that session's clients before anything else is looked at (the
claim is not even MAC-verified yet; a forged claim only picks a list that
must admit the caller anyway).  A handle of a session this process does
not know (stopped, or never was) is STALE, which is also what an unlisted
client gets.

Session calls that change the session do not run inline on the loop:
:class:`nfsd.rpc.WouldBlock` sends them to a worker; except READ, GETATTR,
ACCESS and LOOKUP (:data:`INLINE`), on any connection, as the read-only
export's, under ``Store.nowait`` (a READ that must copy a large reply
only while the loop serves its connection alone, ``CallContext.alone``,
as the read-only export's); and a WRITE of up to :data:`INLINE_WRITE`
bytes on any connection: it only checks, writes its bytes into the data log and queues
them for the store's committer, its reply deferred (``nfsd.rpc.Later``) and
under ``Store.nowait`` (a node or map to load, the log's lock held, the
log's zeros to extend: a worker serves it, nothing changed).  Measured end
to end (16 random 4 KiB FILE_SYNC WRITEs in flight, one worker process):
the hand-off to a worker cost more than the call's own work there.

The duplicate request cache (``nfsd.programs.drc``) wraps the session's
non-idempotent procedures; a deferred reply (WRITE, ``nfsd.rpc.Later``) is
recorded when it resolves, and a duplicate meanwhile is dropped as the
duplicate of a call still running.  A cache miss for REMOVE, RMDIR, RENAME,
CREATE, MKDIR or SYMLINK also asks the session database whether the same
call already succeeded before a restart (the key commits in the change's
transaction): such a retransmission is answered success rather than
NOENT or EXIST, and never run again (``nfs3.replay``).  That look, a plain
read before the call, cannot see the same call still running in another
worker process (a retransmission on a new connection may reach another
worker): the change's own transaction looks again under sqlite's write lock,
which the processes take in turn, and makes nothing if the key is there
(``instant.errors.MadeAlready``), the call then answered as a recorded one.
This costs nothing measurable: one lookup of the ``calls`` table's primary
key in the transaction the change takes anyway, and for these six
procedures only (not WRITE or SETATTR).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any, cast

from instant.errors import MadeAlready, WouldWait
from merge.namespace import NamespaceError
from nfsd.programs.access import AccessControl
from nfsd.programs.drc import ReplyCache, key_of
from nfsd.programs.errors import NfsError
from nfsd.programs.nfs3 import session, write
from nfsd.programs.nfs3.replay import made_reply, replay
from nfsd.programs.nfs3.service import Nfs3Service, failure_body
from nfsd.programs.nfs3.session import SessionNfs
from nfsd.programs.sessions import Session, SessionManager, is_session_handle
from nfsd.rpc import (
    Buffer,
    CallContext,
    DropCall,
    Later,
    Procedure,
    ProcedureError,
    Program,
    Reply,
    WouldBlock,
)
from xdr import nfs3
from xdr.base import XdrError

Run = Callable[[CallContext, Any], Reply]
Keep = Callable[[bytes, Procedure, CallContext, Any, "Reply | BaseException"], Reply]
"""``Router._keep``."""
_FAIL = failure_body(nfs3.NFSPROC3_WRITE)
log = logging.getLogger("recovery_fs.rpc")

# The handle each procedure is routed (and access-checked) by.
HANDLE: dict[int, Callable[[Any], nfs3.nfs_fh3]] = {
    nfs3.NFSPROC3_GETATTR: lambda a: a.object,
    nfs3.NFSPROC3_SETATTR: lambda a: a.object,
    nfs3.NFSPROC3_LOOKUP: lambda a: a.what.dir,
    nfs3.NFSPROC3_ACCESS: lambda a: a.object,
    nfs3.NFSPROC3_READLINK: lambda a: a.symlink,
    nfs3.NFSPROC3_READ: lambda a: a.file,
    nfs3.NFSPROC3_WRITE: lambda a: a.file,
    nfs3.NFSPROC3_CREATE: lambda a: a.where.dir,
    nfs3.NFSPROC3_MKDIR: lambda a: a.where.dir,
    nfs3.NFSPROC3_SYMLINK: lambda a: a.where.dir,
    nfs3.NFSPROC3_MKNOD: lambda a: a.where.dir,
    nfs3.NFSPROC3_REMOVE: lambda a: a.object.dir,
    nfs3.NFSPROC3_RMDIR: lambda a: a.object.dir,
    nfs3.NFSPROC3_RENAME: lambda a: a.from_.dir,
    nfs3.NFSPROC3_LINK: lambda a: a.file,
    nfs3.NFSPROC3_READDIR: lambda a: a.dir,
    nfs3.NFSPROC3_READDIRPLUS: lambda a: a.dir,
    nfs3.NFSPROC3_FSSTAT: lambda a: a.fsroot,
    nfs3.NFSPROC3_FSINFO: lambda a: a.fsroot,
    nfs3.NFSPROC3_PATHCONF: lambda a: a.object,
    nfs3.NFSPROC3_COMMIT: lambda a: a.file,
}

SESSION_RUN: dict[int, Callable[[SessionNfs, CallContext, Any], Reply]] = {
    nfs3.NFSPROC3_GETATTR: session.getattr3,
    nfs3.NFSPROC3_SETATTR: write.setattr3,
    nfs3.NFSPROC3_LOOKUP: session.lookup3,
    nfs3.NFSPROC3_ACCESS: session.access3,
    nfs3.NFSPROC3_READLINK: session.readlink3,
    nfs3.NFSPROC3_READ: session.read3,
    nfs3.NFSPROC3_WRITE: write.write3,
    nfs3.NFSPROC3_CREATE: write.create3,
    nfs3.NFSPROC3_MKDIR: write.mkdir3,
    nfs3.NFSPROC3_SYMLINK: write.symlink3,
    nfs3.NFSPROC3_MKNOD: write.mknod3,
    nfs3.NFSPROC3_REMOVE: write.remove3,
    nfs3.NFSPROC3_RMDIR: write.rmdir3,
    nfs3.NFSPROC3_RENAME: write.rename3,
    nfs3.NFSPROC3_LINK: write.link3,
    nfs3.NFSPROC3_READDIR: session.readdir3,
    nfs3.NFSPROC3_READDIRPLUS: session.readdirplus3,
    nfs3.NFSPROC3_FSSTAT: session.fsstat3,
    nfs3.NFSPROC3_FSINFO: session.fsinfo3,
    nfs3.NFSPROC3_PATHCONF: session.pathconf3,
    nfs3.NFSPROC3_COMMIT: write.commit3,
}

# Served inline on any connection, as the read-only export's: they only read the
# session (mostly answers it keeps, instant.answers; else a small database in the
# page cache, its read lock taken at once or WouldWait), and a READ goes to a worker
# when its bytes are not in the page cache (RWF_NOWAIT), or must be copied while
# other connections wait (session.read3).  The hand-off costs more than the call:
# one worker, two connections, 8 GETATTRs in flight, 5,720 a second on workers
# (199 µs of CPU a call) against the read-only export's 79,730 inline.
INLINE = frozenset(
    {nfs3.NFSPROC3_READ, nfs3.NFSPROC3_GETATTR, nfs3.NFSPROC3_ACCESS, nfs3.NFSPROC3_LOOKUP}
)

# A session WRITE up to this many bytes is served on the loop (any connection): it
# only decodes, checks, pwrites into the log and queues for the store's committer;
# its reply comes later (nfsd.rpc.Later).  No hand-off to a worker; what would wait
# (a map or node to load, the log's lock held, a zero-ahead to write) goes to one.
INLINE_WRITE = 64 * 1024

# knfsd's and ganesha's list of procedures whose replies are cached.
CACHED = frozenset(
    {
        nfs3.NFSPROC3_SETATTR,
        nfs3.NFSPROC3_WRITE,
        nfs3.NFSPROC3_CREATE,
        nfs3.NFSPROC3_MKDIR,
        nfs3.NFSPROC3_SYMLINK,
        nfs3.NFSPROC3_MKNOD,
        nfs3.NFSPROC3_REMOVE,
        nfs3.NFSPROC3_RMDIR,
        nfs3.NFSPROC3_RENAME,
        nfs3.NFSPROC3_LINK,
    }
)
# ...of which a success is recorded in the session database, for after a restart.
RECORDED = frozenset(
    {
        nfs3.NFSPROC3_CREATE,
        nfs3.NFSPROC3_MKDIR,
        nfs3.NFSPROC3_SYMLINK,
        nfs3.NFSPROC3_REMOVE,
        nfs3.NFSPROC3_RMDIR,
        nfs3.NFSPROC3_RENAME,
    }
)


class Router:
    """Routes each NFS call to the read-only export or to a session."""

    def __init__(self, svc: SessionNfs, access: AccessControl, drc: ReplyCache) -> None:
        self.svc = svc
        self.access = access
        self.drc = drc
        self._ro_write: Procedure | None = None  # the read-only WRITE (its failure body)

    def table(self, readonly: dict[int, Procedure]) -> dict[int, Procedure]:
        """The procedure table: ``readonly``'s rows, routed."""
        self._ro_write = readonly[nfs3.NFSPROC3_WRITE]
        out = {}
        for number, proc in readonly.items():
            if number not in HANDLE:
                out[number] = proc  # NULL
                continue
            run = partial(self._route, number, proc)
            out[number] = Procedure(proc.name, proc.decode, run, proc.fail)
        return out

    def _route(self, number: int, ro: Procedure, ctx: CallContext, args: Any) -> Reply:
        fh = HANDLE[number](args)
        if not is_session_handle(fh.data):
            self._check(ctx, None)
            return ro.run(ctx, args)
        if ctx.inline and not (
            number in INLINE or (number == nfs3.NFSPROC3_WRITE and args.count <= INLINE_WRITE)
        ):
            raise WouldBlock
        s = self._admitted(ctx, fh.data)
        run = SESSION_RUN[number]
        if ctx.inline and number == nfs3.NFSPROC3_WRITE:
            inline = partial(self._inline_write, fh)
            return self._cached(number, ro, ctx, args, inline)
        if ctx.inline:
            return self._inline(run, ctx, args, s)
        if number not in CACHED:
            return run(self.svc, ctx, args)
        return self._cached(number, ro, ctx, args, run)

    def _inline(
        self, run: Callable[[SessionNfs, CallContext, Any], Reply], ctx: CallContext, args: Any,
        s: Session,
    ) -> Reply:  # fmt: skip
        """One of INLINE on the loop: never waiting on the session's database
        (``Store.nowait``), else a worker serves it (WouldBlock).  A READ of a file
        whose map another thread is loading would otherwise stall the loop, and with
        it this connection's heartbeat GETATTRs, for as long as the load takes.
        ``s``: the session the handle claims, as known (``SessionManager.known``):
        its handle is verified, and its liveness looked at, once, by the procedure
        (``SessionNfs.target``), which answers one it does not name before
        anything could wait."""
        try:
            with s.ns.nowait():
                return run(self.svc, ctx, args)
        except WouldWait:
            raise WouldBlock from None

    def _inline_write(
        self, fh: nfs3.nfs_fh3, svc: SessionNfs, ctx: CallContext, args: Any, *,
        out: Later[Reply | None] | None = None,
    ) -> Reply:  # fmt: skip
        """A small WRITE on the loop: decoded, checked, its bytes in the log and
        queued for the committer, answered later (``write.write3``); anything that
        would wait on the database or on the log's lock is WouldBlock.  The handle
        is resolved once (``write.write_to``: a session's liveness is a ``stat``)."""
        s, fid = svc.target(fh)
        try:
            with s.ns.nowait():
                return write.write_to(svc, ctx, args, s, fid, out=out)
        except WouldWait:
            raise WouldBlock from None

    def quick_write(self, ctx: CallContext, args: nfs3.WRITE3args, head: bytes) -> Reply | None:
        """A session WRITE for the fast path (``nfs3.fastwrite``): what :meth:`_route`
        does with it, in the same order.  None leaves the call to the general path,
        always before the reply cache has begun it: a refused client or an unknown
        session (that path answers and logs them), a duplicate of a call still
        running (that path drops it, or finds its reply if it has finished since).
        ``head``: the reply's RPC header, which a deferred reply gets as it settles
        (:class:`_Recorded`); a reply returned now is the body alone."""
        if ctx.inline and args.count > INLINE_WRITE:
            raise WouldBlock
        assert self._ro_write is not None, "quick_write before table()"
        try:
            self._admitted(ctx, args.file.data)
        except NfsError:
            return None  # the general path answers (and logs) it
        number = nfs3.NFSPROC3_WRITE
        run = partial(self._inline_write, args.file) if ctx.inline else write.write3
        try:
            return self._cached(number, self._ro_write, ctx, args, run, head=head)
        except DropCall:
            return None

    def quick(self, number: int, ctx: CallContext, args: Any) -> Reply | None:
        """A session's GETATTR, ACCESS, READ or LOOKUP for the fast path (``nfs3.fastpath``):
        its reply, or None to leave the call to the general path (a refusal, an
        error, a failure body: that path answers and logs them)."""
        try:
            s = self._admitted(ctx, HANDLE[number](args).data)
        except NfsError:
            return None  # the general path answers (and logs) it
        try:
            if ctx.inline:
                reply = self._inline(SESSION_RUN[number], ctx, args, s)
            else:
                reply = SESSION_RUN[number](self.svc, ctx, args)
        except (ProcedureError, NamespaceError, XdrError):
            return None
        if ctx.status:
            reply.free()
            return None
        return reply

    def _check(self, ctx: CallContext, export: str | None) -> None:
        status = self.access.nfs_status(ctx, export)
        if status:
            raise NfsError(status)

    def _admitted(self, ctx: CallContext, data: bytes) -> Session:
        """The session a handle's bytes claim, as this process knows it, once its
        client list admitted the caller (who is noted for ``instant list``):
        NfsError STALE for a session it does not know, the refusal's status for a
        caller the list does not admit."""
        manager = self.svc.manager
        key = manager.session_key(data)
        s = manager.known(key)
        if s is None:
            raise NfsError(nfs3.NFS3ERR_STALE, "no such session")
        self._check(ctx, s.info.export_path)
        manager.note_client(key, ctx.peer)
        return s

    def _cached(
        self, number: int, ro: Procedure, ctx: CallContext, args: Any,
        run: Callable[..., Reply], *, head: bytes | None = None,
    ) -> Reply:  # fmt: skip
        """``run`` under the reply cache.  ``head``: the fast path's WRITE, whose
        deferred reply ``run`` settles into a :class:`_Recorded` given to it, which
        records it and puts this RPC header on in the same step."""
        key = key_of(ctx, args)
        hit = self.drc.begin(key)
        if hit is not None:
            ctx.note += " (duplicate: the first reply)"
            return Reply([hit])
        try:
            if number in RECORDED:
                s, _ = self.svc.target(HANDLE[number](args))
                again = replay(self.svc, ctx, number, args, s, key)
                if again is None:
                    again = self._recording(number, ctx, args, s, key, run)
                reply = again
            elif head is not None:
                reply = run(
                    self.svc, ctx, args, out=_Recorded(self._keep, key, ro, ctx, args, head=head)
                )
            else:
                reply = run(self.svc, ctx, args)
        except BaseException as e:
            return self._keep(key, ro, ctx, args, e)
        if reply.later is not None and head is not None:
            return reply  # its _Recorded records it
        if reply.later is not None:
            # Deferred (WRITE): recorded once its answer is there; until then a
            # duplicate finds the call running and is dropped.
            def kept(done: Later[Reply | None]) -> Reply:
                try:
                    settled = done.result()
                except BaseException as e:
                    return self._keep(key, ro, ctx, args, e)
                assert settled is not None
                return self._keep(key, ro, ctx, args, settled)

            return Reply([], later=reply.later.map(kept))
        return self._keep(key, ro, ctx, args, reply)

    def _recording(  # noqa: PLR0917
        self, number: int, ctx: CallContext, args: Any, s: Session, key: bytes,
        run: Callable[..., Reply],
    ) -> Reply:  # fmt: skip
        """One of RECORDED, its change recording ``key``; if the same call served by
        another process made it meanwhile (found under the write lock), answered as
        a recorded call, nothing made again."""
        try:
            with s.ns.recording(key):
                return run(self.svc, ctx, args)
        except MadeAlready:
            ctx.note += " (made meanwhile by another process: success again)"
            return made_reply(self.svc, number, args, s)

    def _keep(
        self, key: bytes, ro: Procedure, ctx: CallContext, args: Any,
        outcome: Reply | BaseException,
    ) -> Reply:  # fmt: skip
        """Record a finished call's reply bytes; a failure as its failure body, or
        (no body to record) forgotten and raised."""
        if isinstance(outcome, BaseException):
            if not isinstance(outcome, ProcedureError) or ro.fail is None:
                self.drc.abandon(key)
                raise outcome
            ctx.status = outcome.status
            outcome = ro.fail(outcome.status, args)
        data = b"".join(bytes(cast(Buffer, p)) for p in outcome.parts)  # no FileRun: a session's
        outcome.free()
        self.drc.finish(key, data)
        return Reply([data])


class _Recorded(Later["Reply | None"]):
    """The fast path's deferred WRITE reply: settled by ``write.write_to`` with the
    body (or the failure), it records that in the reply cache (``Router._keep``) and
    settles itself with the whole reply, the RPC header put on, in the same step.

    One Later a WRITE, its settling the only hop, where the general path's reply
    is a Later mapped onto the procedure's (the cache's step) and the fast path's
    header was a third: two Laters, their locks and four closures fewer on the
    store's committer a WRITE (docs/performance-writes.md).  The bytes are the
    general path's (``tests/proto/test_instant_write_fast.py``).  An unexpected
    failure (what ``_keep`` raises once it has forgotten the call) is logged
    and answered ``NFS3ERR_SERVERFAULT`` with WRITE's failure body, as the
    dispatcher's ``_mapped`` does."""

    __slots__ = ("_args", "_ctx", "_head", "_keep", "_key", "_ro")

    def __init__(
        self, keep: Keep, key: bytes, ro: Procedure, ctx: CallContext, args: Any, *, head: bytes
    ) -> None:
        super().__init__()
        self._keep, self._key, self._ro = keep, key, ro
        self._ctx, self._args, self._head = ctx, args, head

    def resolve(self, value: Reply | None) -> None:
        assert value is not None  # write_to's body
        self._record(value)

    def fail(self, error: BaseException) -> None:
        self._record(error)

    def _record(self, outcome: Reply | BaseException) -> None:
        ctx = self._ctx
        try:
            try:
                reply = self._keep(self._key, self._ro, ctx, self._args, outcome)
            except Exception:
                log.exception("unexpected error in WRITE xid=%#x from %s", ctx.xid, ctx.peer)
                ctx.status = nfs3.NFS3ERR_SERVERFAULT
                reply = _FAIL(nfs3.NFS3ERR_SERVERFAULT, self._args)
            reply.parts[0] = self._head + bytes(cast(Buffer, reply.parts[0]))  # no FileRun
        except BaseException as e:  # handed on (the transport logs it and closes)
            self._settle(None, e)
            return
        self._settle(reply, None)


def route_sessions(
    program: Program, nfs: Nfs3Service, access: AccessControl, sessions: SessionManager
) -> Router:
    """Serve ``sessions`` through the NFS ``program`` too; the access check moves here."""
    svc = SessionNfs(sessions, access, nfs.buffers, nfs.cookieverf)
    router = Router(svc, access, ReplyCache())
    program.versions[3] = router.table(program.versions[3])
    program.guard = None  # checked per export in Router._route
    sessions.on_change.append(access.set_sessions)
    sessions.refresh(force=True)
    return router
