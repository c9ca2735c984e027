"""The one module that owns sockets: RPC over TCP and UDP.

Design notes
------------
One *loop* thread (epoll) accepts and reads every TCP connection,
reassembles records (``nfsd.transport.record``) and serves each call
itself unless the procedure says it would wait on the storage (it raises
``WouldBlock``: a READ of bytes not in the page cache, or one over 64 KiB
to copy into a buffer while the loop serves other connections too, a first
listing of a folder); those
go to a fixed pool of *workers*, started with the server::

    loop --quick call, served inline, sent MSG_DONTWAIT----------> client
    loop --record--> worker --reply, sent MSG_DONTWAIT------------> client
                         └── what did not fit: the connection's queue,
                             sent by the loop when POLLOUT says so

Why not a thread per connection (the design until issue 7): measured with
1,100 connections (1,000 trickling a byte a second, 100 idle) it took
2,204 threads and 125 MB of RSS (15.5 MB idle, so ~100 KB a connection),
and a good client's NULL took up to 104 ms; a flood up to the descriptor
limit would need two threads per descriptor.  With the loop, 2,000
connections (1,000 trickling, 1,000 idle) took 10 threads and 4.6 MB of
RSS over the idle server (about 2.3 KB a connection), the good client's
NULL at most 6 ms and its 64 KiB READ (on a worker) at most 4 ms, and the
server 0.01 s of CPU a second.  The GIL serialised the readers anyway.

* Quick calls stay on the loop (a hand-off to a worker costs more than a
  GETATTR), and the replies of one batch of records go out in one
  ``sendmsg``, straight from their buffers when nothing is queued before
  them (``_send_now``: framed and sent by one C call,
  ``nfsd._fastcall.send_replies``, or its twin :func:`send_replies_py`).
  With one connection open the loop has no one else
  to keep waiting, so a large READ from the page cache is served there too
  (``CallContext.alone``): on a worker its hand-off cost a third of its
  CPU.  One sent from the file's mapping (below) is served there on any
  connection: it costs the loop its send, which the loop makes anyway for
  the part of a worker's reply that the socket did not take at once.
  Workers send their own replies (the GIL is released in the system
  call, so large READ replies are copied in parallel); nobody ever
  blocks on a socket: every send is ``MSG_DONTWAIT``, and the rest waits in
  the connection's queue for POLLOUT.
* Only the loop touches the selector and closes sockets.  A worker that
  needs the loop (a connection to resume or to close, bytes left to send)
  appends the connection to a wake list and writes one byte to a socket
  pair.  A connection's lock covers its queue, its in-flight count and its
  socket: a worker never sends on a closed (possibly reused) descriptor.
* A deferred reply (``Reply.later``, ``nfsd.rpc``: a session WRITE answered
  when its group commits) keeps its call counted in ``conn.inflight`` until
  it resolves, on whichever thread resolves it; it is then sent or queued
  as a worker's reply is (``_deliver``); a connection closed meanwhile
  just frees it.  Those a store's committer settles in a group (inside
  ``nfsd.rpc.batched``) go when the group's are all there, one
  ``sendmsg`` per connection (``_deliver_all``): one GIL hand-over to the
  loop per group, not per reply (measured: docs/performance-writes.md).
  Each round of the loop (one ``epoll`` result) is such a batch too: the
  WRITEs it queued wake the store (its syncer, then its committer) when
  the round is served.
* READ replies are built in pooled buffers (``nfsd.programs.buffers``).  A queue
  that makes no progress for ``DETACH_AFTER`` copies its replies out of
  the pool, so a client that does not read cannot starve the others of
  buffers.
* A large READ on plain TCP whose bytes are in the page cache is sent from
  the storage file's read-only mapping (``nfs3.read.by_mapping``): ``sendmsg``
  copies the pages into the socket, no copy into a pooled buffer first.
  Only the kernel reads such a view: a file cut short under it makes
  ``sendmsg`` fail (EFAULT, or a short send then EFAULT: the connection is
  closed, its record's length already sent) where a user-space read would
  fault the process.  So a stalled queue copies only its writable (pooled)
  buffers and keeps read-only parts as they are, and TLS, which reads the
  bytes to encrypt them, never gets one.
* To a remote peer, a large READ on plain TCP sends its file bytes by reference: its reply
  holds :class:`~nfsd.rpc.FileRun` parts (a descriptor of its own, an
  offset, a count), which the queue sends with ``os.sendfile`` (the kernel
  references page-cache pages: no copy in user space, none into a pooled
  buffer); a partial send moves the run on and the rest goes on POLLOUT,
  like any buffer.  ``sendmsg`` refuses a FileRun before it sends a byte, so
  ``_send_now`` leaves such a batch to the queue.  A run's descriptor is a
  ``dup`` (0.3 µs with its close): no cache eviction can close it under a
  queued run; it is closed once the run is sent, or with the connection.
  A run holds no pooled buffer: a stalled queue keeps it as it is when it
  leaves the pool, its bytes counted in ``unsent`` and ``max_buffered``.
  The bytes are read when they are sent, not when the READ was served:
  the same bytes, because the storage is read-only to us (nothing writes
  it; a file replaced by rename keeps its old inode open behind the
  ``dup``).  The READ takes this form only when every byte is in the page
  cache (``cachestat``), so the loop sending a run on POLLOUT does not
  wait for the disk (unless the pages were evicted in between); a file
  cut short under a queued run (a fault of the storage) closes the
  connection, its record's length already sent.  Not under TLS: there the
  bytes must be read and encrypted.  Not to a loopback peer (unless
  ``sendfile_loopback``): there the client reads the page-cache pages
  itself, from memory rather than from the cache a copy leaves them in;
  measured with one connection of 1 MiB READs (``bench/oneworker.py``),
  the server's CPU fell from 408 to 290 µs a call and the client's rose
  from 176 to 383: the calls a second fell by 15 %.  Over a network the
  saving is the server's alone.

Limits (:class:`Limits`), each logged when it bites, at most once per kind
per ``log_interval`` (a flood cannot flood the log):

=====================  =====================================================
limit                  when it bites
=====================  =====================================================
``max_connections``    a new connection past it: the oldest unvalidated one
                       is closed, else the oldest not validated again since
                       the exports last changed, or, if every one has made a
                       valid call under the lists in force, the new one is
                       refused
``max_unvalidated``    connections that have not yet had a call the exports
                       admit answered (a NULL, a portmapper query or a
                       refused call does not count: a host not listed could
                       otherwise hold every slot): a new one past it closes
                       the oldest (as knfsd does)
``idle_timeout``       nothing received, in flight or queued for that long
                       (counted from the last sweep that found a call in
                       flight or a reply queued, so a slow call's connection
                       is not closed the moment its reply is out): closed
``record_timeout``     a record begun and not completed, from its first
                       byte (a byte-a-second trickle is not progress)
``max_inflight``,      past either, the connection is no longer read until
``max_unsent``         it drains (TCP pushes back on the client); logged
                       for ``max_unsent`` only: a client that fills its
                       call slots is busy, not hostile
``send_timeout``       replies queued and none of their bytes taken: closed
``max_buffered``       bytes of incomplete records and of detached replies,
                       over all connections: the largest holder is closed
``max_record``         a record announced larger: closed (``nfsd.transport.record``)
=====================  =====================================================

Out of descriptors (``accept`` fails with EMFILE, ENFILE, ENOBUFS or
ENOMEM): the oldest unvalidated connection is closed to make room; with
none, the listeners are set aside for a growing delay (10 ms to 1 s) and
the burst is logged once: the loop never spins on a listener it cannot
accept from.  No thread is started after :meth:`RpcServer.start`, so a
thread that cannot be started cannot take a connection (or the loop) down.

Memory, whatever the number of connections (the defaults): the pool
(48 MiB of READ buffers), plus ``max_buffered`` (64 MiB: incomplete
records, and the replies of every queue stalled for ``DETACH_AFTER``;
a large fragment received straight into its record's buffer may have up
to as much again allocated ahead of its bytes, and 64 KiB more a
connection: ``nfsd.transport.record``), plus about 2.5 KB per connection
(socket object, reader state: 1,024 connections ~ 2.5 MiB), plus, for at
most ``DETACH_AFTER``, the small replies just queued (under ``max_unsent``
a connection), plus the storage pages that sends from file mappings map
into the process (not copies: ``nfsd.programs.buffers.MAP_BUDGET``, 2 MiB,
and the replies being sent).

UDP datagrams are read by a thread of their own and served by the workers;
replies go back by ``sendto``.

RPC-with-TLS (``nfsd.transport.tls``, RFC 9289), when the server is given a
:class:`~nfsd.transport.tls.ContextSource`: a reply marked ``starttls`` (the
answer to an AUTH_TLS NULL) is sent in clear, and from then on everything
the connection receives goes to its :class:`~nfsd.transport.tls.TlsSession`;
the plaintext that comes out is fed to the same record reader, and each
reply is encrypted (``TlsSession.encrypt``) into one buffer, queued and
sent like any other; the reply itself (its pooled READ buffer) is freed
once that buffer is sent or the queue detached, as a plain reply is, so
the pool bounds what TLS queues hold too.  The invariants:

* No record is read between the STARTTLS call and the handshake: a STARTTLS
  call with anything behind it (bytes buffered, records waiting, calls in
  flight) closes the connection, and so do bytes that are no ClientHello.
* What the session emits (handshake, alerts) and every encrypted reply
  enter the queue under ``conn.lock``, taken from the session's output in
  the same critical section: TLS records leave in the order they were
  made, whichever thread made them.
* A connection is validated by its first admitted call answered *inside*
  TLS, not by the STARTTLS reply; a handshake unfinished after
  ``handshake_timeout`` is closed; ciphertext of an incomplete TLS record
  counts as a record begun (``record_timeout``) and as bytes held
  (``max_buffered``).
* A refusal (:class:`~nfsd.transport.tls.TlsRefused`: a failed handshake,
  a plain call, garbage or an alert inside TLS) closes that connection
  only, counted and logged as ``tls``; a close_notify is an ordinary close.
  A worker encrypting a reply after the loop's refusal gets one too: it
  frees the reply (its pooled READ buffer) and the connection fails.
  Whatever fails, every reply taken to be sent is freed exactly once.
* The plain path pays one attribute test per reply and per read.

Behind a TCP balancer, connections from the ``proxy_from`` networks must
begin with a PROXY protocol header (``nfsd.transport.proxy``), which names
the client that the exports check then sees; a header from anyone else
closes the connection.  Several processes may serve one port
(``nfsd.service.supervisor``): :meth:`RpcServer.adopt` takes a listener
bound by another process.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import itertools
import logging
import os
import queue
import select
import socket
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

from nfsd.native import fastcall
from nfsd.rpc import Buffer, Dispatcher, FileRun, Later, Reply, WouldBlock, batched, hold
from nfsd.transport.proxy import HeaderReader, ProxyError, Trusted, peer_name, starts_like_header
from nfsd.transport.record import DEFAULT_MAX_RECORD, RecordReader, RecordTooLarge, frame
from nfsd.transport.tls import (
    HANDSHAKE_TIMEOUT,
    PLAIN,
    ContextSource,
    Security,
    TlsClosed,
    TlsRefused,
    TlsSession,
)

log = logging.getLogger("recovery_fs.server")

RECV_SIZE = 64 * 1024
IOV_BATCH = 512  # buffers per sendmsg, under the kernel's IOV_MAX of 1024
ACCEPT_BATCH = 64  # connections accepted per wake-up before others are served
DETACH_AFTER = 1.0  # seconds a queue may make no progress before it leaves the pool
STOP_WAIT = 5.0  # seconds a stop waits for all the worker threads together
BACKOFF_FIRST = 0.01
BACKOFF_MAX = 1.0
UDP_MAX = 65535
UDP_BACKLOG = 256
"""Datagrams waiting for a worker past which new ones are dropped: UDP is lossy
(a client sends again), and a flood with forged sources must not queue without
bound behind calls that wait (a MNT's name look-up)."""
FD_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
READ, WRITE = select.EPOLLIN, select.EPOLLOUT
TROUBLE = select.EPOLLERR | select.EPOLLHUP


class _Poller:
    """epoll keyed by descriptor, with the object each stands for: the
    ``selectors`` module costs microseconds a wake-up, a GETATTR's worth."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._data: dict[int, object] = {}

    def register(self, sock: socket.socket, events: int, data: object) -> None:
        fd = sock.fileno()
        self._epoll.register(fd, events)
        self._data[fd] = data

    def modify(self, sock: socket.socket, events: int) -> None:
        self._epoll.modify(sock.fileno(), events)

    def unregister(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        self._epoll.unregister(fd)
        del self._data[fd]

    def poll(self, timeout: float) -> list[tuple[object, int]]:
        data = self._data
        return [(data[fd], mask) for fd, mask in self._epoll.poll(timeout) if fd in data]

    def close(self) -> None:
        self._epoll.close()


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client, or a crowd of them, may hold of the server."""

    max_connections: int = 1024
    max_unvalidated: int = 64
    idle_timeout: float = 300.0
    record_timeout: float = 30.0
    max_inflight: int = 16
    max_unsent: int = 4 * 1024 * 1024
    send_timeout: float = 120.0
    max_record: int = DEFAULT_MAX_RECORD
    max_buffered: int = 64 * 1024 * 1024
    log_interval: float = 60.0
    handshake_timeout: float = HANDSHAKE_TIMEOUT  # STARTTLS reply to a finished TLS handshake


class _Throttle:
    """Warnings of one kind at most once per interval, with a count of the
    ones held back, so that a flood of events makes a trickle of lines."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._held: Counter[str] = Counter()

    def warn(self, kind: str, msg: str, *args: object, exc_info: bool = False) -> None:
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._held[kind] += 1
            return
        self._last[kind] = now
        held = self._held.pop(kind, 0)
        if held:
            msg += " (and %d more since the last report)"
            args = (*args, held)
        log.warning(msg, *args, exc_info=exc_info)


class _Connection:
    """One TCP client's state; the loop owns it, workers take ``lock``."""

    __slots__ = (
        "backlog",
        "closed",
        "detached",
        "events",
        "failed",
        "idle_from",
        "inflight",
        "last_recv",
        "lock",
        "outq",
        "paused",
        "peer",
        "proxy",
        "reader",
        "record_started",
        "security",
        "send_progress",
        "sendfile",
        "sock",
        "tls",
        "unsent",
        "validated",
    )

    def __init__(self, sock: socket.socket, peer: str, max_record: int, now: float) -> None:
        self.sock = sock
        self.peer = peer
        self.reader = RecordReader(max_record)
        self.lock = threading.Lock()
        # Bytes to send: [view, reply to free once the view is sent, or None].
        self.outq: deque[list] = deque()
        self.unsent = 0
        self.inflight = 0
        self.backlog: deque[bytes | bytearray] = deque()  # complete records not yet dispatched
        self.events = 0  # what the selector watches for
        self.paused = False  # not read: too much in flight or unsent
        self.detached = False  # the queue left the buffer pool (stalled client)
        self.validated = False
        self.closed = False
        self.proxy: HeaderReader | None = None  # a PROXY header still to come
        self.failed: tuple[str, str] | None = None  # (kind, why), set by a worker
        self.last_recv = now
        self.idle_from = now  # the last receive, or the last sweep that found it busy
        self.record_started: float | None = None
        self.send_progress = now
        self.tls: TlsSession | None = None  # set once STARTTLS was answered
        self.security: Security = PLAIN  # what the TLS handshake proved
        self.sendfile = False  # large READs by reference (FileRun): a remote peer

    def held(self) -> int:
        """Bytes counted against ``max_buffered``."""
        tls = self.tls.pending if self.tls is not None else 0
        return self.reader.pending + tls + (self.unsent if self.detached else 0)


class _Workers:
    """A fixed pool of threads, all started up front: no thread is ever
    started while serving, so none can fail to start under load."""

    def __init__(self, count: int, name: str) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[..., None], tuple] | None] = (
            queue.SimpleQueue()
        )
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-worker-{i}", daemon=True)
            for i in range(count)
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable[..., None], *args: object) -> None:
        self._queue.put((fn, args))

    def backlog(self) -> int:
        """Tasks waiting for a thread (approximate: another thread may take one)."""
        return self._queue.qsize()

    def stop(self) -> None:
        """Ask every thread to end and wait for them, :data:`STOP_WAIT` seconds
        for all together: a thread stuck in a call (a READ waiting for a
        pooled buffer, a storage that does not answer) is a daemon, left
        behind, and cannot hold a stop (SIGTERM) for the pool's size times
        a per-thread wait."""
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + STOP_WAIT
        for t in self._threads:
            if t.is_alive():  # never started: a server that could not listen
                t.join(timeout=max(0.0, deadline - time.monotonic()))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            fn, args = item
            try:
                fn(*args)
            except Exception:
                log.exception("worker task failed")


class RpcServer:
    """Serves one dispatcher on TCP and UDP listeners."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        name: str,
        workers: int = 8,
        limits: Limits = Limits(),
        tls: ContextSource | None = None,
        proxy_from: tuple[str, ...] = (),
    ) -> None:
        self.dispatcher = dispatcher
        self._trusted = Trusted(proxy_from)
        self.accept_batch = ACCEPT_BATCH
        self.name = name
        self.limits = limits
        self.tls = tls  # RPC-with-TLS offered (the dispatcher's ``starttls``) when set
        if tls is not None:
            dispatcher.starttls = True
        self._workers = _Workers(workers, name)
        self._listeners: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._sel = _Poller()
        self._conns: dict[_Connection, None] = {}
        self._unvalidated: OrderedDict[_Connection, None] = OrderedDict()
        # Validated under lists no longer in force, not since (exports_changed).
        self._stale: OrderedDict[_Connection, None] = OrderedDict()
        self._rejudge = False  # exports_changed asked; the sweep demotes
        self._lock = threading.Lock()  # _unvalidated, _stale, validated flags, _calls
        self._stopping = threading.Event()
        self._throttle = _Throttle(limits.log_interval)
        self._buf = bytearray(RECV_SIZE)
        self._view = memoryview(self._buf)
        self._pending_total = 0  # sum of reader.pending over connections
        self._wakes: deque[_Connection | None] = deque()
        self._wake_sent = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._accept_paused_until: float | None = None
        self._backoff = 0.0
        self._sweep_every = max(
            0.02,
            min(
                1.0,
                limits.idle_timeout,
                limits.record_timeout,
                limits.send_timeout,
                limits.handshake_timeout,
            )
            / 4,
        )
        self._next_sweep = 0.0
        self._calls = 0  # answered by workers
        self._calls_inline = 0  # answered by the loop
        self._udp_dropped = 0  # datagrams dropped past UDP_BACKLOG (the UDP thread's)
        self._accepted = 0
        # Large READs by reference to a peer on this machine too (tests):
        # see the design notes, "not to a loopback peer".
        self.sendfile_loopback = False
        self._refused: Counter[str] = Counter()
        self._closed: Counter[str] = Counter()

    # -- set-up ---------------------------------------------------------
    def listen(
        self,
        host: str,
        port: int,
        *,
        tcp: bool = True,
        udp: bool = True,
        reuse_port: bool = False,
    ) -> int:
        """Bind TCP and/or UDP on ``host:port`` now; returns the bound port."""
        socks = bind_listeners(host, port, tcp=tcp, udp=udp, reuse_port=reuse_port)
        self._listeners += socks
        return socks[0].getsockname()[1]

    def adopt(self, sock: socket.socket) -> None:
        """Serve a listener bound elsewhere (a supervisor's, inherited)."""
        sock.setblocking(sock.type == socket.SOCK_DGRAM)
        self._listeners.append(sock)

    def start(self) -> None:
        self._workers.start()
        self._sel.register(self._wake_r, READ, None)
        for s in self._tcp_listeners():
            self._sel.register(s, READ, s)
        self._spawn(self._loop, "loop")
        for s in self._listeners:
            if s.type == socket.SOCK_DGRAM:
                self._spawn(self._udp_loop, "udp", s)

    def _spawn(self, target: Callable[..., None], what: str, *args: object) -> None:
        t = threading.Thread(target=target, args=args, name=f"{self.name}-{what}", daemon=True)
        t.start()
        self._threads.append(t)

    def _tcp_listeners(self) -> list[socket.socket]:
        return [s for s in self._listeners if s.type == socket.SOCK_STREAM]

    def stop(self) -> None:
        """Close listeners and connections; wait for the threads."""
        self._stopping.set()
        self._wake(None)
        for s in self._listeners:
            if s.type == socket.SOCK_DGRAM:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
        for t in self._threads:
            t.join(timeout=5)
        for s in self._listeners:
            s.close()
        self._workers.stop()
        self._wake_r.close()
        self._wake_w.close()
        self._sel.close()

    def stats(self) -> dict[str, object]:
        """Counts for ``recovery-fs status``: connections open, those not yet
        validated, connections accepted and calls answered since the start,
        connections refused and closed by a limit, by reason."""
        with self._lock:
            return {
                "connections": len(self._conns),
                "unvalidated": len(self._unvalidated),
                "stale": len(self._stale),
                "accepted": self._accepted,
                "calls": self._calls + self._calls_inline,
                "refused": dict(self._refused),
                "closed": dict(self._closed),
            }

    # -- the loop -------------------------------------------------------
    def _loop(self) -> None:
        try:
            while not self._stopping.is_set():
                now = time.monotonic()
                timeout = self._next_sweep - now
                if self._accept_paused_until is not None:
                    timeout = min(timeout, self._accept_paused_until - now)
                with batched():  # what the calls read together put off (nfsd.rpc)
                    for data, mask in self._sel.poll(max(timeout, 0.0)):
                        try:
                            if isinstance(data, _Connection):
                                self._ready(data, mask)
                            elif isinstance(data, socket.socket):
                                self._accept(data)
                            else:
                                self._drain_wakes()
                        except Exception:
                            # A bug must cost one connection, never the server.
                            log.exception("%s: serving %s failed", self.name, data)
                            if isinstance(data, _Connection):
                                self._close(data, "error", "an internal error")
                now = time.monotonic()
                if self._accept_paused_until is not None and now >= self._accept_paused_until:
                    self._accept_paused_until = None
                    for s in self._tcp_listeners():
                        self._sel.register(s, READ, s)
                if now >= self._next_sweep:
                    self._next_sweep = now + self._sweep_every
                    self._sweep(now)
        except Exception:
            log.exception("%s: the connection loop failed", self.name)
            raise
        finally:
            for conn in list(self._conns):
                self._close(conn)
            for s in self._tcp_listeners():
                s.close()

    def _ready(self, conn: _Connection, mask: int) -> None:
        if conn.closed:
            return
        if mask & TROUBLE:
            mask |= conn.events  # an error or a hang-up: the next call says which
        if mask & WRITE:
            self._on_writable(conn)
        if mask & READ and not conn.closed:
            self._on_readable(conn)

    def _wake(self, conn: _Connection | None) -> None:
        """Ask the loop to look at ``conn`` (any thread)."""
        self._wakes.append(conn)
        if not self._wake_sent:
            self._wake_sent = True
            with contextlib.suppress(OSError):
                self._wake_w.send(b"w")

    def _drain_wakes(self) -> None:
        # The bytes first, then the flag: a wake that set the flag after the
        # reset has its byte still to come, so none is lost.
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass
        self._wake_sent = False
        while self._wakes:
            conn = self._wakes.popleft()
            if conn is not None and not conn.closed:
                self._update(conn)

    # -- accepting ------------------------------------------------------
    def _accept(self, listener: socket.socket) -> None:
        for _ in range(self.accept_batch):
            try:
                sock, addr = listener.accept()
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno in FD_ERRNOS:
                    # Linux takes the descriptor before it looks at the queue:
                    # EMFILE with no one waiting is no shortage yet.
                    if _waiting(listener):
                        self._out_of_descriptors(e)
                    return
                if self._stopping.is_set():
                    return
                log.info("%s: accept failed: %s", self.name, e)
                continue
            self._backoff = 0.0
            self._admit(sock, f"{addr[0]}:{addr[1]}")

    def _out_of_descriptors(self, e: OSError) -> None:
        """Make room by closing the oldest unvalidated connection, or set the
        listeners aside for a growing delay: never spin on accept."""
        with self._lock:
            self._refused["fd_limit"] += 1
        if self._evict_oldest("fd_limit", f"out of descriptors ({e.strerror})", stale=True):
            return
        self._backoff = min(max(self._backoff * 2, BACKOFF_FIRST), BACKOFF_MAX)
        if self._backoff == BACKOFF_FIRST:
            self._throttle.warn(
                "accept_paused",
                "%s: cannot accept (%s, %d connections open): pausing accepts",
                self.name,
                e.strerror,
                len(self._conns),
            )
        self._accept_paused_until = time.monotonic() + self._backoff
        for s in self._tcp_listeners():
            with contextlib.suppress(KeyError, OSError):
                self._sel.unregister(s)

    def _admit(self, sock: socket.socket, peer: str) -> None:
        lim = self.limits
        if len(self._unvalidated) >= lim.max_unvalidated:
            self._evict_oldest("unvalidated", f"over {lim.max_unvalidated} unvalidated")
        if len(self._conns) >= lim.max_connections and not self._evict_oldest(
            "max_connections", f"{len(self._conns)} connections open", stale=True
        ):
            with self._lock:
                self._refused["max_connections"] += 1
            self._throttle.warn(
                "refused",
                "%s: refusing %s: %d connections open, all validated",
                self.name,
                peer,
                len(self._conns),
            )
            sock.close()
            return
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        except OSError:
            sock.close()  # reset before we got to it
            return
        conn = _Connection(sock, peer, self.limits.max_record, time.monotonic())
        conn.sendfile = self.sendfile_loopback or not _loopback(peer)
        if self._trusted and peer.rsplit(":", 1)[0] in self._trusted:
            conn.proxy = HeaderReader()
            conn.record_started = conn.last_recv  # the header is bounded by record_timeout
        self._conns[conn] = None
        with self._lock:
            self._unvalidated[conn] = None
            self._accepted += 1
        conn.events = READ
        self._sel.register(sock, READ, conn)
        log.info("%s: connection from %s", self.name, peer)

    def _evict_oldest(self, kind: str, why: str, stale: bool = False) -> bool:
        """Close the oldest unvalidated connection, or with ``stale`` the oldest
        not validated again since the exports changed; False if there is none."""
        with self._lock:
            if self._unvalidated:
                conn, what = next(iter(self._unvalidated)), "unvalidated connection"
            elif stale and self._stale:
                conn = next(iter(self._stale))
                what = "connection not validated since the exports changed"
            else:
                return False
        self._close(conn, kind, f"{why}: closing the oldest {what}")
        return True

    def exports_changed(self) -> None:
        """(any thread) The lists of who may call changed: the exports file was
        reloaded, or a session's client list came or went.

        A connection validated under the old lists is so no longer: its peer may
        have been taken off them, and its NULLs (which every client sends, and
        which are answered whoever calls) would keep its slot for good, so that a
        listed host could be refused for want of one.  Within a sweep every
        validated connection moves to the stale set, oldest first; its next call
        the lists admit validates it again.  A stale connection is closed, after
        every unvalidated one, only to make room under ``max_connections`` or
        the descriptor limit: a listed client that was idle reconnects, as after
        an idle timeout; a host taken off the lists gets no slot back."""
        with self._lock:
            self._rejudge = True

    # -- reading and serving --------------------------------------------
    def _on_readable(self, conn: _Connection) -> None:
        # The rest of a large fragment is received straight into its record's
        # buffer (``RecordReader.space``): a 1 MiB WRITE is not copied again.
        space = conn.reader.space() if conn.tls is None else None
        try:
            if space is not None:
                with space:
                    n = conn.sock.recv_into(space)
            else:
                n = conn.sock.recv_into(self._buf)
        except BlockingIOError:
            return
        except OSError as e:
            log.info("connection of %s ended: %s", conn.peer, e)
            self._close(conn)
            return
        if n == 0:
            self._close(conn)
            return
        now = time.monotonic()
        conn.last_recv = conn.idle_from = now
        before = conn.reader.pending
        if space is not None:
            records = conn.reader.filled(n)
        else:
            data: memoryview | bytes = self._view[:n]
            if conn.proxy is not None:
                rest = self._proxy_header(conn, data)
                if rest is None:
                    return
                data = rest
            if conn.tls is not None:
                plain = self._tls_receive(conn, data)
                if plain is None:
                    return
                data = plain
            try:
                records = conn.reader.feed(data)
            except RecordTooLarge as e:
                if starts_like_header(data):
                    self._close(conn, "proxy", "a PROXY header from an address not in proxy-from")
                else:
                    self._close(conn, "record_too_large", str(e))
                return
        pending = conn.reader.pending
        self._pending_total += pending - before
        if not conn.reader.begun and not (conn.tls is not None and conn.tls.pending):
            conn.record_started = None
        elif records or conn.record_started is None:
            conn.record_started = now  # a new record begins in this read
        conn.backlog.extend(records)
        self._update(conn)
        if self._pending_total > self.limits.max_buffered:
            self._shed()

    def _proxy_header(self, conn: _Connection, data: memoryview | bytes) -> bytes | None:
        """(loop) Feed a balancer's connection its PROXY header: the bytes
        after it once complete (the peer is then the client it names), None
        while incomplete or when the connection was closed."""
        assert conn.proxy is not None
        try:
            done = conn.proxy.feed(data)
        except ProxyError as e:
            self._close(conn, "proxy", str(e))
            return None
        if done is None:
            return None
        header, rest = done
        conn.proxy = None
        conn.record_started = None
        if header.source is not None:
            log.info(
                "%s: %s is %s (PROXY v%d)",
                self.name,
                conn.peer,
                peer_name(header.source),
                header.version,
            )
            conn.peer = peer_name(header.source)
        return rest

    def _tls_receive(self, conn: _Connection, data: memoryview | bytes) -> bytes | None:
        """(loop) Ciphertext in, plaintext out; what the session has to send
        is queued at once.  None: the connection was closed."""
        session = conn.tls
        assert session is not None
        was = session.established
        try:
            plain = session.receive(data)
        except TlsClosed as e:
            self._close(conn, "", str(e))
            return None
        except TlsRefused as e:
            with conn.lock:  # the alert, if OpenSSL wrote one
                self._queue_bytes(conn, session.outgoing())
                self._flush_locked(conn)
            self._close(conn, "tls", str(e))
            return None
        with conn.lock:
            self._queue_bytes(conn, session.outgoing())
            self._flush_locked(conn)
        if not was and session.security is not None:
            conn.security = session.security
            log.info("%s: TLS with %s: %s", self.name, conn.peer, session.security.describe())
        return plain

    def _start_tls(self, conn: _Connection) -> None:
        """(loop) The STARTTLS reply is queued: read no more records, expect a
        ClientHello.  Anything already behind the call closes the connection."""
        assert self.tls is not None
        if conn.backlog or conn.reader.begun or conn.inflight:
            self._close(conn, "tls", "bytes or calls after the STARTTLS call")
            return
        conn.tls = TlsSession(
            self.tls.context(),
            time.monotonic(),
            self.limits.handshake_timeout,
            require_alpn=self.tls.settings.require_alpn,
        )
        conn.record_started = None
        log.debug("%s: STARTTLS with %s", self.name, conn.peer)

    def _process(self, conn: _Connection) -> None:
        """Dispatch backlogged records while the connection's limits allow:
        quick ones here, the rest on workers; send the quick replies at once."""
        lim = self.limits
        quick: list[Reply] = []
        size = conn.unsent
        backlog = conn.backlog
        alone = len(self._conns) == 1  # no other connection waits while the loop serves this one
        # What each call is dispatched with, read once a batch (nothing in
        # the batch changes it: the peer, TLS and its security change only
        # while reading, before the records are cut, or after the batch).
        dispatch = self.dispatcher.dispatch
        peer, security = conn.peer, conn.security
        sendfile = conn.sendfile and conn.tls is None
        while backlog and conn.inflight < lim.max_inflight and size < lim.max_unsent:
            record = backlog.popleft()
            try:
                reply = dispatch(
                    record, peer, "tcp", True, security, alone=alone, sendfile=sendfile
                )
                if reply is not None:
                    self._calls_inline += 1  # the loop's own count: no lock
                    if not conn.validated and reply.admitted and not reply.starttls:
                        self._validate(conn)
            except WouldBlock:
                with conn.lock:
                    conn.inflight += 1
                self._workers.submit(self._serve, conn, record)
                continue
            except Exception:
                log.exception("dispatch failed for %s", conn.peer)
                reply = None
            if reply is not None and reply.dropped:
                continue  # a duplicate of a call still running: no reply; the connection goes on
            if reply is not None and reply.later is not None:  # in flight until it resolves
                with conn.lock:
                    conn.inflight += 1
                reply.later.then(partial(self._deferred, conn))
                continue
            if reply is None:
                for r in quick:
                    r.free()
                self._close(conn, "not_rpc", "a record that is not an RPC call")
                return
            quick.append(reply)
            size += sum(map(len, reply.parts))
            if reply.starttls:
                break
        if quick:
            with conn.lock:
                self._send_or_queue(conn, quick)
            if quick[-1].starttls and conn.tls is None and self.tls is not None:
                self._start_tls(conn)

    def _dispatch(self, conn: _Connection, record: bytes | bytearray) -> Reply | None:
        """A worker's dispatch of one call (the loop's inline calls are
        dispatched in :meth:`_process`, with what it reads once a batch)."""
        try:
            reply = self.dispatcher.dispatch(
                record,
                conn.peer,
                "tcp",
                False,
                security=conn.security,
                sendfile=conn.sendfile and conn.tls is None,
            )
        except WouldBlock:
            raise
        except Exception:
            log.exception("dispatch failed for %s", conn.peer)
            return None
        if reply is not None:
            with self._lock:
                self._calls += 1
            if not conn.validated and reply.admitted and not reply.starttls:
                self._validate(conn)
        return reply

    def _validate(self, conn: _Connection) -> None:
        """A call of ``conn`` the exports admitted was answered: it no longer counts
        as unvalidated.  Not any call: a host the exports do not list could hold
        every connection slot with NULL calls or refused ones (never evicted)."""
        with self._lock:
            conn.validated = True
            self._unvalidated.pop(conn, None)
            self._stale.pop(conn, None)

    def _serve(self, conn: _Connection, record: bytes | bytearray) -> None:
        """A worker's call: dispatch, send or queue the reply, wake the loop
        if it has something to do about this connection."""
        reply = self._dispatch(conn, record)
        if reply is not None and reply.later is not None:
            reply.later.then(partial(self._deferred, conn))  # conn.inflight counts it meanwhile
            return
        self._deliver(conn, reply)

    def _deferred(self, conn: _Connection, done: Later[Reply | None]) -> None:
        """A deferred reply resolved (on whichever thread resolved it): delivered
        as a worker's reply is; a connection closed meanwhile just frees it."""
        try:
            reply = done.result()
        except BaseException:  # still delivered (None: the connection goes), inflight kept right
            log.exception("a deferred reply failed for %s", conn.peer)
            reply = None
        self._deliver(conn, reply)

    def _deliver(self, conn: _Connection, reply: Reply | None) -> None:
        """Send or queue a reply of a call counted in ``conn.inflight``, and
        wake the loop if it has something to do about this connection; in a
        :func:`~nfsd.rpc.batched` block, with the block's others (``_deliver_all``)."""
        if hold(conn, reply, self._deliver_all):
            return
        with conn.lock:
            conn.inflight -= 1
            if conn.closed:
                wake = False
            elif reply is not None and reply.dropped:
                wake = conn.paused or bool(conn.backlog)  # a slot is free again
            elif reply is None:
                conn.failed = ("not_rpc", "a record that is not an RPC call")
                wake = True
            else:
                sending, reply = reply, None  # the queue's now: freed by it, whatever happens
                try:
                    self._enqueue(conn, sending)
                    self._flush_locked(conn)
                except Exception:
                    self._send_failed(conn)
                wake = self._wanted(conn)
        if reply is not None:
            reply.free()
        if wake:
            self._wake(conn)

    def _deliver_all(self, conn: _Connection, replies: list[Reply | None]) -> None:
        """``_deliver`` of several replies (a WRITE group's, held by
        ``batched``): one ``sendmsg`` when nothing is queued before them (and
        one lock, one wake-up of the loop at most), else queued and flushed."""
        drop = replies
        wake = False
        with conn.lock:
            conn.inflight -= len(replies)
            if not conn.closed:
                if None in replies:
                    conn.failed = ("not_rpc", "a record that is not an RPC call")
                send = [r for r in replies if r is not None and not r.dropped]
                drop = [r for r in replies if r is not None and r.dropped]
                if send:
                    try:
                        self._send_or_queue(conn, send)  # theirs now, freed whatever happens
                    except Exception:
                        self._send_failed(conn)
                wake = self._wanted(conn)
        for r in drop:
            if r is not None:
                r.free()
        if wake:
            self._wake(conn)

    @staticmethod
    def _wanted(conn: _Connection) -> bool:
        """Whether the loop has something to do about ``conn`` after a reply went."""
        return (
            conn.failed is not None
            or conn.paused
            or bool(conn.backlog)
            or (bool(conn.outq) and not conn.events & WRITE)
        )

    def _send_failed(self, conn: _Connection) -> None:
        """(``conn.lock`` held, in an ``except``) Sending or queueing replies
        raised something unexpected (a bug; the replies were freed where it
        was raised): the connection is closed by the loop, the traceback
        logged at most once per ``log_interval``, and the worker goes on."""
        self._throttle.warn(
            "send_error", "%s: a reply to %s failed", self.name, conn.peer, exc_info=True
        )
        if conn.failed is None:
            conn.failed = ("error", "an internal error sending a reply")

    def _update(self, conn: _Connection) -> None:
        """(loop) Serve what the limits allow, then watch for what is next:
        reading only while under ``max_inflight`` and ``max_unsent``."""
        if conn.failed is not None:
            self._close(conn, *conn.failed)
            return
        if conn.backlog:
            self._process(conn)
            if conn.closed:
                return
        lim = self.limits
        if (
            conn.events == READ
            and not conn.outq
            and conn.inflight < lim.max_inflight
            and conn.failed is None
        ):
            return  # reading, nothing to send: the common case, without the lock
        with conn.lock:
            if conn.failed is not None:
                pass
            else:
                reading = (
                    not conn.backlog
                    and conn.inflight < lim.max_inflight
                    and conn.unsent < lim.max_unsent
                )
                if not reading and not conn.paused and conn.unsent >= lim.max_unsent:
                    # A client that does not read its replies.  (A full
                    # max_inflight is a client using its slots: not logged.)
                    self._throttle.warn(
                        "unsent",
                        "%s: not reading %s: %d reply bytes unsent",
                        self.name,
                        conn.peer,
                        conn.unsent,
                    )
                elif reading and conn.paused and conn.reader.begun:
                    conn.record_started = time.monotonic()  # its wait was ours
                conn.paused = not reading
                events = (READ if reading else 0) | (WRITE if conn.outq else 0)
                if events != conn.events:
                    if not conn.events:
                        self._sel.register(conn.sock, events, conn)
                    elif not events:
                        self._sel.unregister(conn.sock)
                    else:
                        self._sel.modify(conn.sock, events)
                    conn.events = events
        if conn.failed is not None:
            self._close(conn, *conn.failed)

    # -- sending ----------------------------------------------------------
    def _enqueue(self, conn: _Connection, reply: Reply) -> None:
        """(conn.lock held) Queue a reply's framed buffers; it is freed once
        its last byte is sent.

        The reply is the queue's from this call on: one that cannot be
        queued is freed here, once, before the exception goes on (a pooled
        READ buffer never freed is lost to the pool for good, and once all
        are lost every READ waits for ever).
        """
        if conn.tls is not None:
            self._enqueue_tls(conn, reply)
            return
        try:
            parts = [p for p in frame(reply.parts) if len(p)]
            # A FileRun is its own entry's to free (its descriptor: once sent, or
            # with the connection); a reply with runs holds no pooled buffer, so
            # it is not kept (its release would close runs still queued).
            entries: list[list[Any]] = [[p, p if type(p) is FileRun else None] for p in parts]
            runs = any(entry[1] is not None for entry in entries)
            if conn.detached:
                for entry in entries:
                    if entry[1] is None and _borrowed(entry[0]):
                        entry[0] = bytes(entry[0])
        except BaseException:
            reply.free()
            raise
        if conn.detached:
            if not runs:
                reply.free()
        elif not runs:
            entries[-1][1] = reply
        if not conn.outq:
            conn.send_progress = time.monotonic()
        conn.outq.extend(entries)
        conn.unsent += sum(map(len, parts))

    def _enqueue_tls(self, conn: _Connection, reply: Reply) -> None:
        """(conn.lock held) Encrypt a reply into the queue.  The reply (its pooled
        READ buffer) is freed once its ciphertext is sent, or when the queue is
        detached, as a plain reply is: so the pool bounds what TLS queues hold
        as it bounds plain TCP's.  Freed at once, the buffers of 100 clients that
        sent 16 large READs each and read nothing became 1.6 GB of ciphertext
        (the pool no longer held any workers back).  A session that refuses (it
        refused a record on the loop meanwhile) closes the connection; the
        reply is then freed at once, as it is on any failure."""
        assert conn.tls is not None
        try:
            plain = frame(cast(list[Buffer], reply.parts))  # no FileRun: not plain TCP
            data = conn.tls.encrypt(plain)
        except TlsRefused as e:
            reply.free()
            if conn.failed is None:
                conn.failed = ("tls", str(e))
            return
        except BaseException:
            reply.free()
            raise
        if not data or conn.detached:  # a detached queue holds copies only
            reply.free()
            self._queue_bytes(conn, data)
            return
        self._queue_bytes(conn, data, reply)

    def _enqueue_all(self, conn: _Connection, replies: list[Reply]) -> None:
        """(conn.lock held) :meth:`_enqueue` each reply; if one raises, those
        after it are freed before the exception goes on (each freed once)."""
        for i, reply in enumerate(replies):
            try:
                self._enqueue(conn, reply)
            except BaseException:
                for rest in replies[i + 1 :]:
                    rest.free()
                raise

    def _send_or_queue(self, conn: _Connection, replies: list[Reply]) -> None:
        """(``conn.lock`` held) ``replies`` sent in one ``sendmsg`` if the queue
        is empty and the socket takes them all, else queued and flushed.
        They are this method's from the call on: each freed once, when sent
        or before an exception goes on."""
        if not self._send_now(conn, replies):
            self._enqueue_all(conn, replies)
            self._flush_locked(conn)

    def _send_now(self, conn: _Connection, replies: list[Reply]) -> bool:
        """(conn.lock held) Send a batch of replies in one ``sendmsg`` without
        queueing them: True if all of it went (the replies are then freed).

        The common case of the loop's quick calls: nothing queued before,
        no TLS, and the socket takes the lot.  Otherwise (False) nothing
        was sent and the caller queues the replies as usual; the queue's
        entries, a list per buffer, cost more than the send itself.
        """
        if conn.outq or conn.tls is not None or conn.closed:
            return False
        try:
            done = send_replies(conn.sock, [r.parts for r in replies], IOV_BATCH)
        except BlockingIOError:
            return False
        except OSError as e:
            if conn.failed is None:
                conn.failed = ("", f"send failed: {e}")
            for reply in replies:
                reply.free()
            return True
        except BaseException:
            for reply in replies:
                reply.free()
            raise
        if done is None:
            return False  # a FileRun (the queue sends the runs), or too many buffers
        sent, total = done
        if sent != total:
            # Part of it went: queue the rest from where the socket stopped.
            self._enqueue_all(conn, replies)
            conn.unsent -= sent
            conn.send_progress = time.monotonic()
            self._drop_sent(conn.outq, sent)
            return True
        for reply in replies:
            if reply.release is not None:
                reply.release()
        return True

    def _queue_bytes(self, conn: _Connection, data: bytes, reply: Reply | None = None) -> None:
        """(conn.lock held) Queue TLS output; ``reply``, the plaintext it was made
        from, is freed once ``data`` is sent (or the queue detached)."""
        if not data:
            return
        if not conn.outq:
            conn.send_progress = time.monotonic()
        conn.outq.append([data, reply])
        conn.unsent += len(data)

    def _flush_locked(self, conn: _Connection) -> None:
        """(conn.lock held) Send what the socket takes now, without waiting."""
        q = conn.outq
        try:
            while q:
                run = q[0][0]
                if type(run) is FileRun:
                    if not self._send_run(conn, run):
                        return
                    continue
                parts = []
                for e in itertools.islice(q, IOV_BATCH):
                    if type(e[0]) is FileRun:
                        break
                    parts.append(e[0])
                try:
                    sent = conn.sock.sendmsg(parts, [], socket.MSG_DONTWAIT)
                except BlockingIOError:
                    return
                conn.unsent -= sent
                conn.send_progress = time.monotonic()
                if len(parts) == len(q) and not conn.unsent:
                    for entry in q:  # all of it: the common case
                        if entry[1] is not None:
                            entry[1].free()
                    q.clear()
                    break
                if self._drop_sent(q, sent):
                    return  # the socket is full
            conn.detached = False
        except OSError as e:
            if conn.failed is None:
                conn.failed = ("", f"send failed: {e}")

    @staticmethod
    def _send_run(conn: _Connection, run: FileRun) -> bool:
        """(conn.lock held) ``sendfile`` the file run at the queue's head as far
        as the socket takes it; True if the socket may take more now."""
        try:
            sent = os.sendfile(conn.sock.fileno(), run.fd, run.offset, run.count)
        except BlockingIOError:
            return False
        if sent == 0:
            # The file ended before the run: it changed under the server
            # (the storage is read-only to us; a file replaced by rename keeps
            # its inode).  The record's length is already sent: only closing
            # the connection keeps the client from taking wrong bytes.
            if conn.failed is None:
                conn.failed = ("", "a file shrank under a queued READ reply")
            return False
        conn.unsent -= sent
        conn.send_progress = time.monotonic()
        if sent < run.count:
            run.offset += sent
            run.count -= sent
            return True  # the next call says whether the socket is full
        conn.outq.popleft()
        run.free()
        return True

    @staticmethod
    def _drop_sent(q: deque[list], sent: int) -> bool:
        """(conn.lock held) Take ``sent`` bytes off the queue's head, freeing
        each reply whose last byte went; True if a buffer was sent in part."""
        while sent:
            entry = q[0]
            n = len(entry[0])
            if sent < n:
                entry[0] = memoryview(entry[0]).cast("B")[sent:]
                return True
            sent -= n
            q.popleft()
            if entry[1] is not None:
                entry[1].free()
        return False

    def _on_writable(self, conn: _Connection) -> None:
        with conn.lock:
            self._flush_locked(conn)
        self._update(conn)

    # -- closing and sweeping -------------------------------------------
    def _close(self, conn: _Connection, kind: str = "", why: str = "") -> None:
        """(loop) Close a connection; a limit that bit is counted and logged."""
        if conn.closed:
            return
        if kind:  # counted and logged before the peer can see the close (status, tests)
            with self._lock:
                self._closed[kind] += 1
            self._throttle.warn(
                kind, "%s: closing the connection of %s: %s", self.name, conn.peer, why
            )
        with conn.lock:
            conn.closed = True
            if conn.events:
                with contextlib.suppress(KeyError, OSError):
                    self._sel.unregister(conn.sock)
                conn.events = 0
            conn.sock.close()
            for entry in conn.outq:
                if entry[1] is not None:
                    entry[1].free()
            conn.outq.clear()
            conn.unsent = 0
            conn.backlog.clear()
        self._pending_total -= conn.reader.pending
        self._conns.pop(conn, None)
        with self._lock:
            self._unvalidated.pop(conn, None)
            self._stale.pop(conn, None)
        if not kind and why:
            log.info("%s: closing the connection of %s: %s", self.name, conn.peer, why)

    def _sweep(self, now: float) -> None:
        """(loop) The timeouts, stalled queues leaving the pool, the budget,
        the demotion asked by :meth:`exports_changed`."""
        lim = self.limits
        held = 0
        if self._rejudge:
            with self._lock:
                self._rejudge = False
                for conn in self._conns:  # in the order they were accepted
                    if conn.validated:
                        conn.validated = False
                        self._stale[conn] = None
        for conn in list(self._conns):
            why = self._expired(conn, now)
            if why is not None:
                self._close(conn, *why)
                continue
            if conn.outq and now - conn.send_progress > DETACH_AFTER and not conn.detached:
                self._detach(conn)
            if conn.paused or conn.backlog or (conn.outq and not conn.events & WRITE):
                self._update(conn)  # what a wake asks for, in case one was missed
                if conn.closed:
                    continue
            held += conn.held()
        if held > lim.max_buffered:
            self._shed()
        try:
            self.dispatcher.idle(now)
        except Exception:
            log.exception("%s: the programs' housekeeping failed", self.name)

    def _expired(self, conn: _Connection, now: float) -> tuple[str, str] | None:
        """The (kind, why) of a timeout that closes ``conn`` now, if any."""
        lim = self.limits
        if conn.failed is not None:
            return conn.failed
        if conn.tls is not None and conn.tls.expired(now):
            return "tls", f"TLS handshake not finished within {lim.handshake_timeout:g} s"
        if conn.outq and now - conn.send_progress > lim.send_timeout:
            return "send_timeout", f"no reply bytes taken for {lim.send_timeout:.0f} s"
        started = conn.record_started
        if started is not None and not conn.paused and now - started > lim.record_timeout:
            return "record_timeout", f"a record unfinished after {lim.record_timeout:.0f} s"
        if conn.outq or conn.inflight or conn.backlog or started is not None:
            conn.idle_from = now  # idle, if ever, from its reply on: not from its call
        elif now - conn.idle_from > lim.idle_timeout:
            return "idle", f"idle for {lim.idle_timeout:g} s"
        return None

    def _detach(self, conn: _Connection) -> None:
        """Copy a stalled queue out of the READ buffer pool."""
        with conn.lock:
            for entry in conn.outq:
                if type(entry[0]) is FileRun:
                    continue  # no pooled buffer; its bytes count as the rest do
                if _borrowed(entry[0]):
                    entry[0] = bytes(entry[0])
                if entry[1] is not None:
                    entry[1].free()
                    entry[1] = None
            conn.detached = True

    def _shed(self) -> None:
        """Over ``max_buffered``: close the largest holders until under."""
        lim = self.limits
        holders = sorted(self._conns, key=_Connection.held, reverse=True)
        total = sum(c.held() for c in holders)
        for conn in holders:
            if total <= lim.max_buffered:
                break
            total -= conn.held()
            self._close(
                conn,
                "max_buffered",
                f"holding {conn.held()} bytes, over {lim.max_buffered} for all connections",
            )

    # -- UDP --------------------------------------------------------------
    def _udp_loop(self, sock: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                data, addr = sock.recvfrom(UDP_MAX)
            except OSError:
                if self._stopping.is_set():
                    return
                continue
            if addr is None:  # shut down
                continue
            if self._workers.backlog() >= UDP_BACKLOG:
                self._udp_dropped += 1
                self._throttle.warn(
                    "udp_backlog", "%s: %d UDP calls wait for a worker: dropping new ones",
                    self.name, UDP_BACKLOG,
                )  # fmt: skip
                continue
            self._workers.submit(self._serve_udp, sock, data, addr)

    def _serve_udp(self, sock: socket.socket, data: bytes, addr: tuple) -> None:
        peer = f"{addr[0]}:{addr[1]}"
        try:
            reply = self.dispatcher.dispatch(data, peer, "udp")
        except Exception:
            log.exception("dispatch failed for %s (udp)", peer)
            return
        if reply is not None and reply.later is not None:
            reply.later.then(partial(self._deferred_udp, sock, addr, peer))
            return
        self._send_udp(sock, addr, peer, reply)

    def _deferred_udp(
        self, sock: socket.socket, addr: tuple, peer: str, done: Later[Reply | None]
    ) -> None:
        try:
            reply = done.result()
        except Exception:
            log.exception("a deferred reply failed for %s (udp)", peer)
            return
        self._send_udp(sock, addr, peer, reply)

    @staticmethod
    def _send_udp(sock: socket.socket, addr: tuple, peer: str, reply: Reply | None) -> None:
        if reply is None or reply.dropped:
            return
        try:
            parts = [memoryview(cast(Buffer, p)).cast("B") for p in reply.parts]  # no FileRun
            if len(parts) > IOV_BATCH:
                # A datagram is one sendmsg, whose buffers the kernel caps at IOV_MAX
                # (1024; EMSGSIZE past it): a READDIR of ~1,000 names in one 32 KiB
                # reply was never sent.  Joined: at most a UDP reply's 64 KiB copied.
                parts = [memoryview(b"".join(parts))]
            sock.sendmsg(parts, [], 0, addr)
        except OSError as e:
            log.info("UDP reply to %s failed: %s", peer, e)
        finally:
            reply.free()


def send_replies_py(
    sock: socket.socket, replies: list[list[Any]], max_iov: int
) -> tuple[int, int] | None:
    """Replies (each its parts) framed as one last fragment each, in one
    ``sendmsg`` (``MSG_DONTWAIT``): (bytes sent, bytes there were).  None,
    nothing sent, when a part is no buffer (a FileRun, which ``sendmsg``
    refuses before it sends a byte: the queue sends the runs) or the batch
    takes more than ``max_iov`` buffers.  A failed send raises OSError
    (BlockingIOError: the socket takes nothing now).  The twin of
    ``nfsd._fastcall.send_replies``."""
    iov: list[Any] = []  # buffers, or a FileRun that sendmsg refuses
    for parts in replies:
        iov += frame(parts)
    if len(iov) > max_iov:
        return None
    total = sum(map(len, iov))
    try:
        return sock.sendmsg(iov, [], socket.MSG_DONTWAIT), total
    except TypeError:
        return None


def _send_replies_c(
    sock: socket.socket, replies: list[list[Any]], max_iov: int
) -> tuple[int, int] | None:
    """``send_replies_py`` in one C call (``nfsd._fastcall.send_replies``)."""
    assert fastcall is not None
    return fastcall.send_replies(sock.fileno(), replies, max_iov, socket.MSG_DONTWAIT)


send_replies = send_replies_py if fastcall is None else _send_replies_c


def bind_listeners(
    host: str, port: int, *, tcp: bool = True, udp: bool = True, reuse_port: bool = False,
    listen: bool = True,
) -> list[socket.socket]:  # fmt: skip
    """TCP and/or UDP sockets bound to ``host:port`` (0: a free port, the
    same for both), the TCP one listening (unless not ``listen``) and non-blocking."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    out: list[socket.socket] = []
    bound = port
    try:
        for kind in ([socket.SOCK_STREAM] if tcp else []) + ([socket.SOCK_DGRAM] if udp else []):
            s = socket.socket(family, kind)
            out.append(s)
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.bind((host, bound))
            bound = s.getsockname()[1]
            if kind == socket.SOCK_STREAM and listen:
                s.listen(128)
                s.setblocking(False)
    except BaseException:
        for s in out:
            s.close()
        raise
    return out


def _borrowed(part: Buffer) -> bool:
    """Whether a queued buffer is borrowed: a view of a writable buffer (a
    pooled READ buffer), which a stalled queue copies before the reply gives
    it back.  A read-only one is the reply's own: bytes, or a view of a
    storage file's mapping (``nfs3.read.by_mapping``), which only the kernel
    may read (a page the file lost since would fault in user space)."""
    return not memoryview(part).readonly


def _loopback(peer: str) -> bool:
    """Whether ``host:port`` is an address of this machine (127/8, ::1, mapped)."""
    try:
        ip = ipaddress.ip_address(peer.rsplit(":", 1)[0].strip("[]"))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _waiting(listener: socket.socket) -> bool:
    """Whether a connection waits in ``listener``'s queue."""
    poller = select.poll()
    poller.register(listener, select.POLLIN)
    return bool(poller.poll(0))


def cpu_count() -> int:
    """Worker threads worth starting on this machine."""
    return max(4, 4 * (os.cpu_count() or 1))
