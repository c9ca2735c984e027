"""The one module that owns sockets: RPC over TCP and UDP, with threads.

Design notes
------------
Every TCP connection has a *reader* thread and a *writer* thread; the
reader serves each call itself unless the procedure says it would wait on
the storage (it raises ``WouldBlock``: a READ of bytes not in the page
cache or over 64 KiB, a first listing of a folder), and those go to a
shared pool of *workers*::

    reader --quick call, served and sent inline------------> client
    reader --record--> workers --reply--> writer --sendmsg--> client

* A hand-off to a worker and back costs more than a GETATTR: quick calls
  stay on the reader, and the replies of one batch of records go out in
  one ``sendmsg``.
* The reader reassembles records (``nfsd.record``); a record over the size
  cap, one that is not an RPC call, or one left unfinished for
  ``STALL_TIMEOUT`` closes the connection (UDP: the datagram is dropped).
  Memory held for a connection is thus at most one record cap, for a
  bounded time.
* Workers run the sans-IO dispatcher.  They never block on the network: a
  client that stops reading stalls only its own reader and writer, which
  give up after ``send_timeout`` and close the connection.
* Several calls of one connection run at once and are answered as each
  completes (a slow READ does not hold up a GETATTR behind it).  At most
  ``max_inflight`` calls per connection are in flight; past that the
  reader stops reading, which pushes back on the client through TCP.
* READ replies are built in pooled buffers (``nfsd.buffers``): their count
  bounds the memory that in-flight READs can take, whatever the number of
  clients.

UDP datagrams go through the same workers; replies go back by ``sendto``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from nfsd.record import DEFAULT_MAX_RECORD, RecordReader, RecordTooLarge, frame
from nfsd.rpc import Buffer, Dispatcher, Reply, WouldBlock

log = logging.getLogger("recovery_fs.server")

RECV_SIZE = 64 * 1024
STALL_TIMEOUT = 60.0  # a record begun and not finished for this long closes the connection
IOV_BATCH = 512  # buffers per sendmsg, under the kernel's IOV_MAX of 1024
WRITE_BATCH = 32  # replies the writer gathers into one send
UDP_MAX = 65535


class _Connection:
    """One TCP client: a reader thread, a writer thread, a bounded in-flight count."""

    def __init__(self, server: RpcServer, sock: socket.socket, peer: str) -> None:
        self.server = server
        self.sock = sock
        self.peer = peer
        self.inflight = threading.BoundedSemaphore(server.max_inflight)
        self.outbox: queue.SimpleQueue[Reply | None] = queue.SimpleQueue()
        self.closed = threading.Event()
        self.send_lock = threading.Lock()
        self.reader = threading.Thread(target=self._read_loop, name=f"rpc-read {peer}", daemon=True)
        self.writer = threading.Thread(
            target=self._write_loop, name=f"rpc-write {peer}", daemon=True
        )

    def start(self) -> None:
        self.reader.start()
        self.writer.start()

    def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.outbox.put(None)

    def _read_loop(self) -> None:
        reader = RecordReader(self.server.max_record)
        buf = bytearray(RECV_SIZE)
        view = memoryview(buf)
        stall = self.server.stall_timeout
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        last_data = time.monotonic()
        try:
            while not self.closed.is_set():
                if not poller.poll(stall * 250):
                    # Idle is fine; half a record left hanging is a client
                    # holding memory: it gets STALL_TIMEOUT, then is closed.
                    if reader.pending and time.monotonic() - last_data > stall:
                        log.warning(
                            "closing the connection of %s: half a record for %.0f s",
                            self.peer,
                            STALL_TIMEOUT,
                        )
                        break
                    continue
                n = self.sock.recv_into(buf)
                if n == 0:
                    break
                last_data = time.monotonic()
                quick: list[Reply] = []
                for record in reader.feed(view[:n]):
                    try:
                        reply = self._dispatch(record, inline=True)
                    except WouldBlock:
                        pass  # it would wait on the storage: a worker serves it
                    else:
                        if reply is not None:
                            quick.append(reply)
                        continue
                    # Bound the calls in flight: wait for a slot, checking for close.
                    while not self.inflight.acquire(timeout=1.0):
                        if self.closed.is_set():
                            return
                    self.server.submit(self._serve, record)
                if quick:
                    # Every quick reply of this batch in one send: on loopback
                    # the system call costs more than the call itself.
                    self._send(quick)
        except RecordTooLarge as e:
            log.warning("closing the connection of %s: %s", self.peer, e)
        except OSError as e:
            if not self.closed.is_set():
                log.info("connection of %s ended: %s", self.peer, e)
        finally:
            self.close()
            self.server.forget(self)

    def _dispatch(self, record: bytes, inline: bool = False) -> Reply | None:
        try:
            reply = self.server.dispatcher.dispatch(record, self.peer, "tcp", inline)
        except WouldBlock:
            raise
        except Exception:
            log.exception("dispatch failed for %s", self.peer)
            reply = None
        if reply is None:
            # Not a call we can answer (undecodable header, not a CALL): a
            # client that sends such bytes is told by a closed connection
            # rather than left waiting for a reply that never comes.
            log.info("closing the connection of %s: a record that is not an RPC call", self.peer)
            self.close()
        return reply

    def _send(self, replies: list[Reply]) -> None:
        """Send replies whole, then free them; a client that stops reading
        loses its connection."""
        try:
            if not self.closed.is_set():
                parts: list[Buffer] = []
                for reply in replies:
                    parts += frame(reply.parts)
                with self.send_lock:
                    _send_all(self.sock, parts, self.server.send_timeout)
        except OSError as e:
            log.info("closing the connection of %s: send failed: %s", self.peer, e)
            self.close()
        finally:
            for reply in replies:
                reply.free()

    def _serve(self, record: bytes) -> None:
        reply = self._dispatch(record)
        if reply is None:
            self.inflight.release()
            return
        if self.closed.is_set():
            reply.free()
            self.inflight.release()
            return
        self.outbox.put(reply)

    def _write_loop(self) -> None:
        sock = self.sock
        try:
            while True:
                reply = self.outbox.get()
                if reply is None:
                    break
                batch = [reply]
                while len(batch) < WRITE_BATCH:
                    try:
                        more = self.outbox.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        self.outbox.put(None)
                        break
                    batch.append(more)
                try:
                    self._send(batch)
                finally:
                    for _ in batch:
                        self.inflight.release()
        finally:
            # Drain what workers still hand in, returning their buffers.
            self.closed.set()
            with contextlib.suppress(OSError):
                sock.close()
            while True:
                try:
                    reply = self.outbox.get_nowait()
                except queue.Empty:
                    break
                if reply is not None:
                    reply.free()
                    self.inflight.release()


def _send_all(sock: socket.socket, parts: list, timeout: float) -> None:
    """sendmsg every buffer, resuming after partial sends without copying.

    The socket stays blocking for the reader; sends use MSG_DONTWAIT and
    wait for room with poll, so that a client which stops reading costs at
    most ``timeout`` seconds.
    """
    views = [memoryview(p).cast("B") for p in parts if len(p)]
    deadline = time.monotonic() + timeout
    poller = None
    while views:
        try:
            sent = sock.sendmsg(views[:IOV_BATCH], [], socket.MSG_DONTWAIT)
        except BlockingIOError:
            if poller is None:
                poller = select.poll()
                poller.register(sock, select.POLLOUT)
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(left * 1000):
                raise TimeoutError(f"client did not read for {timeout:.0f} s") from None
            continue
        while sent:
            first = views[0]
            if sent >= len(first):
                sent -= len(first)
                views.pop(0)
            else:
                views[0] = first[sent:]
                sent = 0


class RpcServer:
    """Serves one dispatcher on TCP and UDP listeners."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        name: str,
        workers: int = 8,
        max_inflight: int = 16,
        max_connections: int = 512,
        max_record: int = DEFAULT_MAX_RECORD,
        send_timeout: float = 120.0,
        stall_timeout: float = STALL_TIMEOUT,
    ) -> None:
        self.dispatcher = dispatcher
        self.name = name
        self.max_inflight = max_inflight
        self.max_connections = max_connections
        self.max_record = max_record
        self.send_timeout = send_timeout
        self.stall_timeout = stall_timeout
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._listeners: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._conns: set[_Connection] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    # -- set-up ---------------------------------------------------------
    def listen(self, host: str, port: int, *, tcp: bool = True, udp: bool = True) -> int:
        """Bind TCP and/or UDP on ``host:port`` now; returns the bound port."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        bound = port
        if tcp:
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.bind((host, bound))
            s.listen(128)
            bound = s.getsockname()[1]
            self._listeners.append(s)
        if udp:
            u = socket.socket(family, socket.SOCK_DGRAM)
            if family == socket.AF_INET6:
                u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            u.bind((host, bound))
            bound = u.getsockname()[1]
            self._listeners.append(u)
        return bound

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix=f"{self.name}-worker")
        for s in self._listeners:
            loop: Callable[[socket.socket], None] = (
                self._accept_loop if s.type == socket.SOCK_STREAM else self._udp_loop
            )
            t = threading.Thread(target=loop, args=(s,), name=f"{self.name}-listen", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        """Close listeners and connections; wait for the threads."""
        self._stopping.set()
        for s in self._listeners:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            c.close()
        for t in self._threads:
            t.join(timeout=5)
        for c in conns:
            c.reader.join(timeout=5)
            c.writer.join(timeout=5)
        if self._pool:
            self._pool.shutdown(wait=True, cancel_futures=True)

    # -- internals ------------------------------------------------------
    def submit(self, fn: Callable[..., None], *args: object) -> None:
        assert self._pool is not None
        with contextlib.suppress(RuntimeError):  # pool shut down: the server is stopping
            self._pool.submit(fn, *args)

    def forget(self, conn: _Connection) -> None:
        with self._lock:
            self._conns.discard(conn)

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                sock, addr = listener.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                continue
            peer = f"{addr[0]}:{addr[1]}"
            with self._lock:
                if len(self._conns) >= self.max_connections:
                    log.warning("refusing %s: %d connections open", peer, len(self._conns))
                    sock.close()
                    continue
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                conn = _Connection(self, sock, peer)
                self._conns.add(conn)
            log.info("%s: connection from %s", self.name, peer)
            conn.start()

    def _udp_loop(self, sock: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                data, addr = sock.recvfrom(UDP_MAX)
            except OSError:
                if self._stopping.is_set():
                    return
                continue
            self.submit(self._serve_udp, sock, data, addr)

    def _serve_udp(self, sock: socket.socket, data: bytes, addr: tuple) -> None:
        peer = f"{addr[0]}:{addr[1]}"
        reply = None
        try:
            reply = self.dispatcher.dispatch(data, peer, "udp")
            if reply is not None:
                sock.sendmsg([memoryview(p).cast("B") for p in reply.parts], [], 0, addr)
        except OSError as e:
            log.info("UDP reply to %s failed: %s", peer, e)
        except Exception:
            log.exception("dispatch failed for %s (udp)", peer)
        finally:
            if reply is not None:
                reply.free()


def cpu_count() -> int:
    """Worker threads worth starting on this machine."""
    return max(4, 4 * (os.cpu_count() or 1))
