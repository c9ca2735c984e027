"""ONC-RPC v2 call dispatch (RFC 5531), sans IO: a record in, a reply out.

The transport hands every complete record to :meth:`Dispatcher.dispatch`
and sends back whatever buffers it returns.  Everything the RFC says a
server answers at the RPC level is decided here, in this order:

==========================  ===============================================
condition                    reply
==========================  ===============================================
header undecodable, REPLY    none (the record is dropped and logged)
``rpcvers != 2``             MSG_DENIED / RPC_MISMATCH (2, 2)
AUTH_TLS (RFC 9289)          NULL on plain TCP: the STARTTLS reply
                             (``Reply.starttls``); else AUTH_BADCRED /
                             AUTH_BADVERF (``nfsd.transport.tls``)
flavour not NONE or SYS      MSG_DENIED / AUTH_ERROR AUTH_BADCRED
bad AUTH_SYS body / verf     MSG_DENIED / AUTH_ERROR AUTH_BADCRED / BADVERF
cred / verf over 400 bytes   MSG_DENIED / AUTH_ERROR AUTH_BADCRED / BADVERF
unknown program, or one not  PROG_UNAVAIL
served over this transport
unknown version              PROG_MISMATCH (lowest, highest)
unknown procedure            PROC_UNAVAIL
arguments undecodable,       GARBAGE_ARGS
or bytes left over
the program's guard refuses  the procedure's failure body with that status
procedure raises             its failure body with the status it raised;
                             anything unexpected is logged with its
                             traceback and answered with the program's
                             server-fault status, or SYSTEM_ERR
==========================  ===============================================

Procedures are plain functions registered in one explicit table per program
and version (:class:`Program`); there is no dispatch by reflection.

Deferred replies
----------------
A procedure may answer before its work is done: it returns a
``Reply([], later=...)`` whose :class:`Later` resolves to the body (or
fails with what the procedure would have raised) on another thread, e.g.
the session store's committer once a WRITE's group is durable.  Whoever
finishes a call composes onto the ``Later`` (:meth:`Later.map`) rather than
onto the body: the dispatcher's accepted header, failure mapping, per-call
log line and UDP amplification rule; the session router's duplicate request
cache; the transport's send.  So no thread waits for the storage, and the
reply leaves exactly as a plain one would, only later.  :func:`settle` waits
for one (for callers that are themselves synchronous: tests, benchmarks).

Batches (:func:`batched`, thread-local): work a thread does together puts
off what it would otherwise do once per call to the batch's end, once.

* The replies a storage settles together (a WRITE group's, on the store's
  committer) are sent together: the procedure hands the storage
  :func:`batched` (the store enters it around the group's ``done`` calls),
  and the transport's send of a reply settled inside it asks :func:`hold` to
  keep it; at the end each connection's replies go in one ``sendmsg``: one
  release of the GIL to the loop per group and connection, not per reply.
* The calls the transport's loop reads together (one ``epoll`` round) form
  one batch too: a WRITE queued there wakes the store's first stage (its
  syncer) at the batch's end (:func:`at_end`), not at once, so the store does
  not take the GIL from the loop to sync and commit the first of them alone:
  the group holds them all (measured: docs/performance-writes.md).

A reply settled, or a write queued, on any other thread or outside a batch is
sent, or wakes the store, at once, as before.  The batch's end runs even
when what ran in it raised (``finally``): nothing stays held.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from nfsd.transport.tls import AUTH_TLS, PLAIN, Security, starttls_refusal, starttls_reply
from xdr.base import Unpacker, XdrError
from xdr.rpc import (
    AUTH_BADCRED,
    AUTH_BADVERF,
    AUTH_NONE,
    AUTH_SYS,
    CALL,
    GARBAGE_ARGS,
    NULL_AUTH,
    PROC_UNAVAIL,
    PROG_UNAVAIL,
    RPC_VERSION,
    SUCCESS,
    SYSTEM_ERR,
    BadAuthLength,
    RpcPacker,
    RpcUnpacker,
    accepted_header,
    authsys_parms,
    decode_call,
)

log = logging.getLogger("recovery_fs.rpc")

Buffer = bytes | bytearray | memoryview
T = TypeVar("T")
U = TypeVar("U")


class Later(Generic[T]):
    """A result that arrives later, exactly once: a value or an exception.

    Thread-safe, and safe whichever comes first: a callback added after the
    result is called at once (on the adding thread), one added before is
    called on the thread that settles it.  Settling twice is a bug
    (RuntimeError): a reply must not be sent twice.  A callback that raises
    is logged and does not stop the others.
    """

    __slots__ = ("_callbacks", "_done", "_error", "_lock", "_value")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done = False
        self._value: T | None = None
        self._error: BaseException | None = None
        self._callbacks: list[Callable[[Later[T]], None]] = []

    def resolve(self, value: T) -> None:
        self._settle(value, None)

    def fail(self, error: BaseException) -> None:
        self._settle(None, error)

    def complete(self, outcome: T | BaseException) -> None:
        """``resolve`` a value, ``fail`` an exception: the storage's ``done(size | error)``."""
        if isinstance(outcome, BaseException):
            self._settle(None, outcome)
        else:
            self._settle(outcome, None)

    def _settle(self, value: T | None, error: BaseException | None) -> None:
        with self._lock:
            if self._done:
                raise RuntimeError("a Later is settled once")
            self._value, self._error, self._done = value, error, True
            callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            _call_back(fn, self)

    @property
    def done(self) -> bool:
        return self._done

    def result(self) -> T:
        """The value, or raise the exception (only once settled)."""
        if not self._done:
            raise RuntimeError("a Later asked for its result before it was settled")
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]

    def then(self, fn: Callable[[Later[T]], None]) -> None:
        """Call ``fn(self)`` once settled: now if it is, else on the settling thread."""
        with self._lock:
            if not self._done:
                self._callbacks.append(fn)
                return
        _call_back(fn, self)

    def map(self, fn: Callable[[Later[T]], U]) -> Later[U]:
        """A Later of ``fn(self)`` once this one is settled (``fn`` calls
        :meth:`result` and maps its exceptions as it would a call's); what
        ``fn`` raises fails the new one."""
        out: Later[U] = Later()

        def step(src: Later[T]) -> None:
            try:
                value = fn(src)
            except BaseException as e:  # handed on, raised where it is read
                out.fail(e)
                return
            out.resolve(value)

        self.then(step)
        return out

    def wait(self, timeout: float | None = None) -> T:
        """Block until settled (TimeoutError after ``timeout``), then :meth:`result`."""
        if not self._done:
            ev = threading.Event()
            self.then(lambda _: ev.set())
            if not ev.wait(timeout):
                raise TimeoutError("a deferred reply did not come")
        return self.result()


class _Held(threading.local):
    batches: dict[Any, tuple[Callable[[Any, list[Any]], None], list[Any]]] | None = None


_held = _Held()


class batched:
    """A batch on this thread: what :func:`hold` and :func:`at_end` keep is done
    when the block ends, one ``flush(key, items)`` per key, in the order the
    keys came.  Nested, only the outermost block ends the batch.

    A class rather than a ``@contextmanager`` generator: the loop enters one
    a round, and a generator's context manager costs three times as much.
    """

    __slots__ = ("_batches",)

    def __enter__(self) -> None:
        if _held.batches is not None:
            self._batches = None  # nested: the outer block ends the batch
            return
        self._batches = _held.batches = {}

    def __exit__(self, *exc: object) -> None:
        batches = self._batches
        if batches is None:
            return
        _held.batches = None  # what the flushes settle is sent at once
        for key, (flush, items) in batches.items():
            try:
                flush(key, items)
            except BaseException:  # the other keys' still go
                log.exception("the end of a batch failed")


def hold(key: Any, item: Any, flush: Callable[[Any, list[Any]], None]) -> bool:
    """In a :func:`batched` block on this thread: keep ``item`` for
    ``flush(key, [items of key...])`` at the block's end, True; else False
    (the caller sends it now)."""
    batches = _held.batches
    if batches is None:
        return False
    entry = batches.get(key)
    if entry is None:
        batches[key] = (flush, [item])
    else:
        entry[1].append(item)
    return True


def at_end(fn: Callable[[], None]) -> bool:
    """In a :func:`batched` block on this thread: ``fn()`` once at its end
    (however often asked), True; else False (the caller calls it now)."""
    return hold(fn, None, _called)


def _called(fn: Callable[[], None], items: list[Any]) -> None:
    fn()


def _call_back(fn: Callable[[Later[Any]], None], src: Later[Any]) -> None:
    try:
        fn(src)
    except BaseException:  # whatever it is, the thread settling the Later goes on
        log.exception("a deferred reply's callback failed")


class FileRun:
    """``count`` bytes of an open file at ``offset``, to be sent as they lie.

    A part of a large READ reply on plain TCP (``CallContext.sendfile``):
    the transport sends it with ``os.sendfile`` (socket <- page cache, no
    copy in user space) and moves ``offset``/``count`` on as the socket
    takes bytes.  It owns ``fd`` (a ``dup`` of the reader's descriptor, so
    that no cache eviction closes it under a queued run) and closes it with
    :meth:`free`, once, whoever gets there first: the transport when the
    run is sent or its connection closes, or the reply's release.  It is no
    buffer: ``len`` is its bytes, and ``socket.sendmsg`` refuses it whole.
    """

    __slots__ = ("count", "fd", "offset")

    def __init__(self, fd: int, offset: int, count: int) -> None:
        self.fd = fd
        self.offset = offset
        self.count = count

    def __len__(self) -> int:
        return self.count

    def free(self) -> None:
        """Close the descriptor (idempotent)."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


Part = Buffer | FileRun


@dataclass(slots=True)
class Reply:
    """A procedure's result body as buffers to send in order.

    ``release`` is called once the buffers have been sent (or dropped): it
    gives back a pooled READ buffer.  ``starttls``: the STARTTLS reply; once
    it is sent the connection reads no more records and a TLS handshake
    must follow (``nfsd.transport.tls``).  ``later``: the reply is not
    ready; ``parts`` is empty and the real reply (or None: no reply) comes
    from it (see "Deferred replies" above).  ``dropped``: no reply, on
    purpose (a duplicate of a call still running, :class:`DropCall`); the
    connection goes on, unlike after None (a record that is no RPC call).
    ``admitted``: the exports admitted the call (``CallContext.admitted``): only
    such a call validates a connection (``nfsd.transport.server``).
    """

    parts: list[Part]  # FileRun only where the context allowed it (``CallContext.sendfile``)
    release: Callable[[], None] | None = None
    starttls: bool = False
    later: Later[Reply | None] | None = None
    dropped: bool = False
    admitted: bool = False

    def free(self) -> None:
        """Give back what the reply holds (a pooled buffer), if anything."""
        if self.release is not None:
            self.release()


def settle(reply: Reply | None, timeout: float | None = None) -> Reply | None:
    """``reply`` itself, or the reply a deferred one resolves to (waiting for it);
    None for no reply (a ``dropped`` one too)."""
    if reply is not None and reply.later is not None:
        reply = reply.later.wait(timeout)
    return None if reply is None or reply.dropped else reply


@dataclass(slots=True)
class CallContext:
    """What a procedure may know of the call it serves."""

    xid: int
    prog: int
    vers: int
    proc: int
    flavor: int
    cred: authsys_parms | None
    peer: str
    transport: str
    note: str = ""  # key arguments and outcome, for the per-call log line
    status: int = 0  # the procedure's own status, for the per-call log line
    inline: bool = False  # served on a connection's reader: must not wait on storage
    alone: bool = False  # inline on the server's only connection: no one waits behind it
    security: Security = PLAIN  # what the connection proved: none, tls, mtls (+ names)
    sendfile: bool = False  # the transport takes FileRun parts (plain TCP, not TLS)
    admitted: bool = False  # the exports admitted the caller (set by the access check)

    @property
    def uid(self) -> int:
        return self.cred.uid if self.cred else 65534

    @property
    def gids(self) -> Sequence[int]:
        return (self.cred.gid, *self.cred.gids) if self.cred else (65534,)


class WouldBlock(Exception):
    """Raised by a procedure served inline that would have to wait on storage.

    The transport then serves the same call again on a worker thread.
    """


class DropCall(Exception):
    """Raised by a procedure whose call must get no reply at all.

    The duplicate request cache drops a retransmission of a call still
    running (``nfsd.programs.drc``): the client sends it again later.
    """


class ProcedureError(Exception):
    """Raised below a procedure: answered with the procedure's failure body."""

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message or str(status))
        self.status = status


@dataclass(frozen=True, slots=True)
class Procedure:
    """One row of a program's procedure table.

    ``decode`` unpacks the arguments (raising XdrError on bad input);
    ``run`` serves the call; ``fail`` writes the failure body for a status,
    given the decoded arguments (or None if unavailable).
    """

    name: str
    decode: Callable[[Any], Any]
    run: Callable[[CallContext, Any], Reply]
    fail: Callable[[int, Any], Reply] | None = None


def no_args(u: Unpacker) -> None:
    """Decoder of a void argument."""
    return None


# The decoded AUTH_SYS credentials by their bytes: (stamp, machinename, uid, gid, gids).
CredCache = dict[bytes, tuple[int, bytes, int, int, tuple[int, ...]]]

# A program's shortcut (``Program.fast``): given a TCP record, the peer,
# ``inline``, the connection's security, the dispatcher's credentials, ``alone`` and ``sendfile``,
# the whole reply (RPC header included), or None to leave the call to the
# general path.  It must answer exactly what the general path would, byte
# for byte, and may raise WouldBlock as a procedure may.
FastPath = Callable[[bytes, str, bool, Security, CredCache, bool, bool], Reply | None]


@dataclass(slots=True)
class Program:
    """An RPC program: its number, one procedure table per version.

    ``unpacker`` builds the argument unpacker from the argument bytes;
    ``fault_status`` is the status its failure bodies carry for an
    unexpected exception (NFS3ERR_SERVERFAULT for NFS), or None to answer
    SYSTEM_ERR.  ``guard`` admits every call but NULL before it runs: it
    returns 0, or the status of the procedure's failure body (the access
    check, ``nfsd.programs.access``).  ``udp`` False answers the program's calls over
    UDP with PROG_UNAVAIL; ``udp_no_amplify`` sends no UDP reply larger
    than its call (portmapper DUMP: no reflection amplifier).  ``fast``: a
    shortcut for the program's commonest calls over TCP, tried before the
    general path (``nfsd.programs.nfs3.fastpath``; see :data:`FastPath`).
    ``idle(now)``: housekeeping the transport runs every sweep, between calls
    (the READ buffer pool giving back the pages of buffers long unused).
    """

    number: int
    name: str
    versions: dict[int, dict[int, Procedure]]
    unpacker: Callable[[bytes | bytearray], Unpacker] = Unpacker
    fault_status: int | None = None
    guard: Callable[[CallContext], int] | None = None
    udp: bool = True
    udp_no_amplify: bool = False
    fast: FastPath | None = None
    idle: Callable[[float], object] | None = None
    low: int = field(init=False)
    high: int = field(init=False)

    def __post_init__(self) -> None:
        self.low = min(self.versions)
        self.high = max(self.versions)


_CALL_HEAD = struct.Struct(">6I")  # xid, msg_type, rpcvers, prog, vers, proc
FAST_FAILURE_LOG_EVERY = 10_000
CRED_CACHE = 1024  # distinct AUTH_SYS credentials kept decoded (cleared when full)


class Dispatcher:
    """Decodes calls, checks them against the programs, runs procedures."""

    def __init__(self, programs: Sequence[Program], slow_call_seconds: float = 5.0) -> None:
        self.programs = {p.number: p for p in programs}
        self.slow_call_seconds = slow_call_seconds
        self.starttls = False  # True once a TLS certificate is configured
        self._creds: CredCache = {}
        fast = [p.fast for p in programs if p.fast is not None]
        self._fast: FastPath | None = fast[0] if len(fast) == 1 else None
        self.fast_failures = 0  # calls the fast path raised on (served the usual way)

    def idle(self, now: float) -> None:
        """The programs' housekeeping (``Program.idle``), from the transport's sweep."""
        for program in self.programs.values():
            if program.idle is not None:
                program.idle(now)

    def dispatch(
        self,
        record: bytes | bytearray,
        peer: str,
        transport: str,
        inline: bool = False,
        security: Security = PLAIN,
        *,
        alone: bool = False,
        sendfile: bool = False,
    ) -> Reply | None:
        """Serve one call; None when the record is no RPC call to answer (the
        connection should go), a ``dropped`` reply for a call deliberately
        left unanswered (a duplicate of one still running).

        ``security`` is what the connection proved (``nfsd.transport.tls``): it
        decides the answer to AUTH_TLS and is handed to the procedures.

        With ``inline``, a procedure may raise :class:`WouldBlock` rather
        than wait on storage; it propagates to the caller.  ``alone`` (with
        ``inline``): the caller serves no other connection, so a call may
        take long on the CPU (a large READ from the page cache) inline.
        ``sendfile``: the caller sends :class:`FileRun` parts (plain TCP);
        without it every part of the reply is a buffer.

        A program's fast path (``Program.fast``) is tried first, for TCP
        calls while no per-call log line is wanted; a call it leaves, or one
        it fails on unexpectedly, takes the general path below.
        """
        fast = self._fast
        if (
            fast is not None
            and transport == "tcp"
            and type(record) is bytes  # a large record (bytearray) is never a fast call
            and not log.isEnabledFor(logging.DEBUG)
        ):
            started = time.monotonic()
            try:
                reply = fast(record, peer, inline, security, self._creds, alone, sendfile)
            except WouldBlock:
                raise
            except Exception:
                # A bug, not bad input: logged with its traceback the first time and
                # every FAST_FAILURE_LOG_EVERY-th after, so it cannot flood the log.
                self.fast_failures += 1
                if (self.fast_failures - 1) % FAST_FAILURE_LOG_EVERY == 0:
                    log.exception(
                        "the fast path failed on a call from %s (served the usual way; "
                        "%d failures so far)",
                        peer,
                        self.fast_failures,
                    )
                reply = None
            if reply is not None:
                elapsed = time.monotonic() - started
                if elapsed > self.slow_call_seconds:
                    xid, _, _, prog, vers, proc = _CALL_HEAD.unpack_from(record)
                    log.warning(
                        "xid=%#x %s tcp program %d v%d procedure %d (fast path) %.3fms",
                        xid,
                        peer,
                        prog,
                        vers,
                        proc,
                        elapsed * 1000,
                    )
                reply.admitted = True  # the fast path answers only what the exports admit
                return reply
        try:
            xid, mtype, call, args_at = decode_call(record)
        except BadAuthLength as e:
            log.info("%s in a call from %s", e, peer)
            p = RpcPacker()
            p.pack_auth_error(e.xid, e.stat)
            return Reply([p.get_buffer()])
        except XdrError as e:
            log.info("dropped an undecodable RPC header from %s: %s", peer, e)
            return None
        if mtype != CALL:
            log.debug("dropped a non-call message from %s", peer)
            return None
        p = RpcPacker()
        if call.rpcvers != RPC_VERSION:
            p.pack_rpc_mismatch(xid)
            return Reply([p.get_buffer()])
        cred: authsys_parms | None = None
        if call.cred.flavor == AUTH_SYS:
            cred = self._authsys(call.cred.body)
            if cred is None:
                p.pack_auth_error(xid, AUTH_BADCRED)
                return Reply([p.get_buffer()])
        elif call.cred.flavor == AUTH_TLS:
            stat = starttls_refusal(call, transport, security.level, self.starttls)
            if stat:
                log.info("AUTH_TLS refused (auth_stat %d) from %s %s", stat, peer, transport)
                p.pack_auth_error(xid, stat)
                return Reply([p.get_buffer()])
            log.debug("STARTTLS to %s", peer)
            return Reply([starttls_reply(xid)], starttls=True)
        elif call.cred.flavor != AUTH_NONE:
            p.pack_auth_error(xid, AUTH_BADCRED)
            return Reply([p.get_buffer()])
        if call.verf.flavor != AUTH_NONE:
            p.pack_auth_error(xid, AUTH_BADVERF)
            return Reply([p.get_buffer()])

        program = self.programs.get(call.prog)
        if program is None or (transport == "udp" and not program.udp):
            p.pack_accepted_header(xid, NULL_AUTH, PROG_UNAVAIL)
            return Reply([p.get_buffer()])
        table = program.versions.get(call.vers)
        if table is None:
            p.pack_prog_mismatch(xid, program.low, program.high)
            return Reply([p.get_buffer()])
        proc = table.get(call.proc)
        if proc is None:
            p.pack_accepted_header(xid, NULL_AUTH, PROC_UNAVAIL)
            return Reply([p.get_buffer()])

        ctx = CallContext(
            xid,
            call.prog,
            call.vers,
            call.proc,
            call.cred.flavor,
            cred,
            peer,
            transport,
            inline=inline,
            alone=alone,
            security=security,
            sendfile=sendfile,
        )
        started = time.monotonic()
        try:
            # The arguments are read in place: a slice would copy a WRITE's data.
            au = program.unpacker(record)
            au.set_position(args_at)
            args = proc.decode(au)
            au.done()
        except XdrError as e:
            log.info("GARBAGE_ARGS for %s xid=%#x from %s: %s", proc.name, xid, peer, e)
            p.pack_accepted_header(xid, NULL_AUTH, GARBAGE_ARGS)
            return Reply([p.get_buffer()])

        status = program.guard(ctx) if program.guard is not None and call.proc != 0 else 0
        if status:
            # Refused before the procedure runs: no handle is even resolved.
            ctx.status = status
            body = proc.fail(status, args) if proc.fail is not None else None
        else:
            try:
                body = self._run(program, proc, ctx, args)
            except DropCall as e:
                log.debug("xid=%#x %s from %s dropped: %s", xid, proc.name, peer, e)
                return Reply([], dropped=True)
        if body is not None and body.later is not None:
            # Deferred: the same finishing work, once the body is there.
            size = len(record)

            def finish(src: Later[Reply | None]) -> Reply | None:
                try:
                    done = self._mapped(program, proc, ctx, args, src.result)
                except DropCall as e:
                    log.debug("xid=%#x %s from %s dropped: %s", xid, proc.name, peer, e)
                    return Reply([], dropped=True)
                return self._finish(program, proc, ctx, size=size, started=started, body=done)

            return Reply([], later=body.later.map(finish), admitted=ctx.admitted)
        reply = self._finish(program, proc, ctx, size=len(record), started=started, body=body)
        if reply is not None:
            reply.admitted = ctx.admitted
        return reply

    def _finish(
        self, program: Program, proc: Procedure, ctx: CallContext, *, size: int,
        started: float, body: Reply | None,
    ) -> Reply | None:  # fmt: skip
        """The accepted header, the per-call log line, the UDP amplification rule."""
        head = accepted_header(ctx.xid, SUCCESS if body is not None else SYSTEM_ERR)
        elapsed = time.monotonic() - started
        if log.isEnabledFor(logging.DEBUG) or elapsed > self.slow_call_seconds:
            log.log(
                logging.DEBUG if elapsed <= self.slow_call_seconds else logging.WARNING,
                "xid=%#x %s %s %s v%d %s status=%d %.3fms",
                ctx.xid,
                ctx.peer,
                ctx.transport,
                proc.name,
                ctx.vers,
                ctx.note,
                ctx.status,
                elapsed * 1000,
            )
        if body is None:
            return Reply([head])
        body.parts.insert(0, head)
        if ctx.transport == "udp" and program.udp_no_amplify:
            total = sum(len(b) for b in body.parts)
            if total > size:
                log.info(
                    "no UDP reply of %d bytes to a %d-byte %s call from %s (amplification)",
                    total,
                    size,
                    proc.name,
                    ctx.peer,
                )
                body.free()
                return None
        return body

    def _authsys(self, body: bytes) -> authsys_parms | None:
        """The AUTH_SYS credentials of ``body``, None if malformed.

        A client sends the same credential bytes on every call: they are
        decoded once and kept (bounded by :data:`CRED_CACHE`), which saves
        a third of a GETATTR's decoding.  Each call gets its own
        ``authsys_parms`` (squashing replaces ``ctx.cred``; nothing shares it).
        """
        fields = self._creds.get(body)
        if fields is None:
            try:
                cu = RpcUnpacker(body)
                c = cu.unpack_authsys_parms()
                cu.done()
            except XdrError:
                return None
            if len(self._creds) >= CRED_CACHE:
                self._creds.clear()
            fields = self._creds[bytes(body)] = (
                c.stamp,
                c.machinename,
                c.uid,
                c.gid,
                tuple(c.gids),
            )
        return authsys_parms(fields[0], fields[1], fields[2], fields[3], list(fields[4]))

    def _run(self, program: Program, proc: Procedure, ctx: CallContext, args: Any) -> Reply | None:
        """Run a procedure; map its failures to its failure body."""
        return self._mapped(program, proc, ctx, args, lambda: proc.run(ctx, args))

    def _mapped(
        self, program: Program, proc: Procedure, ctx: CallContext, args: Any,
        body: Callable[[], Reply | None],
    ) -> Reply | None:  # fmt: skip
        """``body()``, its failures mapped to the procedure's failure body (a call
        run now, or a deferred reply's result)."""
        try:
            return body()
        except (WouldBlock, DropCall):
            raise
        except ProcedureError as e:
            ctx.status = e.status
            if proc.fail is None:
                log.error("%s raised status %d but has no failure body", proc.name, e.status)
                return None
            return proc.fail(e.status, args)
        except Exception:
            log.exception("unexpected error in %s xid=%#x from %s", proc.name, ctx.xid, ctx.peer)
            if program.fault_status is None or proc.fail is None:
                return None
            ctx.status = program.fault_status
            return proc.fail(program.fault_status, args)
