"""The instant-recovery sessions a server process serves, and their handles.

Design notes
------------
Sessions are published by the CLI in the state directory
(``instant.sessions``); every server process (one, or the workers of a
supervisor) discovers them on its own: :meth:`SessionManager.refresh`
re-reads the registry when its folder's listing moved, at most every
:data:`REFRESH_EVERY` seconds, on the calls that need it (MNT, EXPORT, a
session handle it does not know).  Each process opens the session's
overlay (``instant.namespace.SessionNamespace``), which is multi-process
safe: two processes on one session see each other's writes.

A session handle is 27 bytes, told from a read-only handle by its first
byte (``nfsd.programs.handles`` is version 1)::

    version 2 (1) | session key (8) | fileid (8) | HMAC-SHA256(secret)[:10]

It names a node by fileid, which ``instant.namespace`` keeps across the
first write, RENAME and restarts, so a handle stays valid across all of
them; the key is random per session, so a handle of a stopped session (or
of an older session of the same name) reaches nothing: ``NFS3ERR_STALE``.
Every call of a session checks that its registry file is still the one
that was opened (one ``stat``): after ``instant stop`` no process answers
a single byte of the discarded overlay, even before its next refresh.

A stopped session's namespace is closed a while after it disappears
(:data:`CLOSE_AFTER`): calls still running on it finish first.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from exports import Export, ExportsError, ExportTable
from instant.sessions import SessionInfo, SessionRegistry, file_ident
from merge.namespace import Namespace
from nfsd.programs.access import split_peer
from nfsd.programs.handles import BadHandle, StaleHandle

if TYPE_CHECKING:  # imported by _open: sqlite3 and the store only once a session exists
    from instant.namespace import SessionNamespace

log = logging.getLogger("recovery_fs.instant")

VERSION = 2
_BODY = struct.Struct(">B8sQ")
MAC_SIZE = 10
HANDLE_SIZE = _BODY.size + MAC_SIZE
MAX_CLIENTS_SEEN = 256
CLIENT_TOUCH_EVERY = 60.0  # seconds between two notes of the same client
REFRESH_EVERY = 0.2  # seconds between looks at the registry folder
CLOSE_AFTER = 30.0  # seconds a stopped session's namespace stays open for calls in flight
OPEN_RETRY = 1.0  # seconds before a session that failed to open is tried again (doubling)
OPEN_RETRY_MAX = 30.0
VERIFIED_MAX = 16384  # handles whose MAC verified, kept (~200 bytes each)


def is_session_handle(data: bytes) -> bool:
    """Whether a handle is a session's (by its layout; not yet verified)."""
    return len(data) == HANDLE_SIZE and data[0] == VERSION


@dataclass(eq=False)
class Session:
    """One session as this process serves it."""

    info: SessionInfo
    ns: SessionNamespace
    ident: tuple[int, int]  # the registry file's (inode, ctime) when opened: see file_ident
    key: bytes = b""  # the handles' session key (from ``info``; asked on every call)
    fsid: int = 0  # one file system per session: fileids are unique only within it

    def __post_init__(self) -> None:
        self.key = self.info.key_bytes
        self.fsid = int.from_bytes(self.key, "big")


class SessionManager:
    """The sessions published in ``registry``, opened over the read-only ``base``."""

    def __init__(self, registry: SessionRegistry, base: Namespace, secret: bytes) -> None:
        self.registry = registry
        self.base = base
        self._key = hashlib.sha256(b"instant-handles" + secret).digest()
        # handle bytes → (key, fileid), for handles whose MAC verified: the MAC is
        # a function of the bytes alone, so each distinct handle is checked once.
        self._verified: dict[bytes, tuple[bytes, int]] = {}
        self._issued: dict[tuple[bytes, int], bytes] = {}  # and the other way, for replies
        self._by_key: dict[bytes, Session] = {}
        self._by_export: dict[str, Session] = {}
        self._paths: dict[str, str] = {}  # session name -> its registry file
        self._stamp: tuple[tuple[str, tuple[int, int]], ...] | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self._retired: list[tuple[float, Session]] = []
        # Sessions listed that could not be opened (their overlay's file system not
        # mounted yet, no descriptor left): key -> (when to try again, the delay).
        # Without it a worker that failed once answered STALE for the session for
        # as long as the registry did not move (its stamp was taken already).
        self._failed: dict[bytes, tuple[float, float]] = {}
        self.table = ExportTable(())
        self.on_change: list[Callable[[ExportTable], None]] = []  # run when sessions change
        self._clients: dict[bytes, dict[str, float]] = {}  # key → client address → last call
        # (key, peer, until): the last call's client, noted; its next calls until then
        # have nothing to note (one tuple, replaced whole: safe across threads).
        self._noted: tuple[bytes, str, float] = (b"", "", 0.0)

    # -- handles ----------------------------------------------------------------
    def encode(self, s: Session, fileid: int) -> bytes:
        issued = self._issued.get((s.key, fileid))
        if issued is not None:
            return issued
        body = _BODY.pack(VERSION, s.key, fileid)
        data = body + self._mac(body)
        if len(self._issued) >= VERIFIED_MAX:
            self._issued = {}
        self._issued[s.key, fileid] = data
        return data

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:MAC_SIZE]

    def decode(self, data: bytes) -> tuple[bytes, int]:
        """(session key, fileid) of a MAC-checked session handle, else BadHandle."""
        known = self._verified.get(data)
        if known is not None:
            return known
        if not is_session_handle(data):
            raise BadHandle("not a session handle")
        body = data[: _BODY.size]
        if not hmac.compare_digest(data[_BODY.size :], self._mac(body)):
            raise BadHandle("handle MAC does not verify")
        _, key, fileid = _BODY.unpack(body)
        if len(self._verified) >= VERIFIED_MAX:
            self._verified = {}
        self._verified[bytes(data)] = (key, fileid)
        return key, fileid

    def session_key(self, data: bytes) -> bytes:
        """The key a session handle claims (not verified: for the access check only)."""
        return bytes(data[1:9])

    # -- clients ----------------------------------------------------------------
    def note_client(self, s: Session | bytes, peer: str) -> None:
        """A client called (or mounted) a session: for ``instant list``."""
        key = s.key if isinstance(s, Session) else s
        now = time.time()
        noted = self._noted
        if noted[1] is peer and noted[0] == key and now < noted[2]:
            return  # a connection's calls: its peer is one string
        seen = self._clients.setdefault(key, {})
        addr = split_peer(peer)[0]
        last = seen.get(addr)
        if last is not None and now - last < CLIENT_TOUCH_EVERY:
            self._noted = (key, peer, last + CLIENT_TOUCH_EVERY)
            return
        if last is None and len(seen) >= MAX_CLIENTS_SEEN:
            return
        seen[addr] = now
        self._noted = (key, peer, now + CLIENT_TOUCH_EVERY)
        session = self._by_key.get(key)
        if session is not None:
            try:  # shared with the other processes and the CLI
                self.registry.touch_client(session.info.name, addr)
            except OSError as e:
                log.debug("cannot record client %s of %s: %s", addr, session.info.name, e)

    # -- sessions ----------------------------------------------------------------
    def by_key(self, key: bytes) -> Session:
        """The live session of ``key``; StaleHandle if it was stopped or never was."""
        s = self._by_key.get(key)
        if s is None:
            self.refresh(force=True)
            s = self._by_key.get(key)
        if s is None or not self._alive(s):
            raise StaleHandle("no such instant-recovery session")
        return s

    def by_export(self, path: str) -> Session | None:
        path = path.rstrip("/") or "/"
        self.refresh()
        s = self._by_export.get(path)
        if s is None:
            self.refresh(force=True)
            s = self._by_export.get(path)
        return s if s is not None and self._alive(s) else None

    def export_of(self, key: bytes) -> str | None:
        """The export path of a session key, for the per-call access check."""
        s = self.known(key)
        return s.info.export_path if s is not None else None

    def known(self, key: bytes) -> Session | None:
        """The session of ``key`` as this process knows it, not looked at for liveness
        (:meth:`by_key` does that).

        A key this process does not know makes it look at the registry's
        listing at once, not after :data:`REFRESH_EVERY`: a session just
        started may have been mounted through another worker, whose client
        calls this one milliseconds later (one ``scandir`` of the small
        registry folder; the sessions are read again only if it moved)."""
        s = self._by_key.get(key)
        if s is None:
            self.refresh(throttled=False)
            s = self._by_key.get(key)
        return s

    def sessions(self) -> list[Session]:
        """Every live session, the registry read again (EXPORT: rare, and must be current)."""
        self.refresh(force=True)
        return list(self._by_export.values())

    def _alive(self, s: Session) -> bool:
        path = self._paths.get(s.info.name)
        if path is None:  # a str, not a Path built and formatted on every call
            path = self._paths[s.info.name] = os.fspath(self.registry.path_of(s.info.name))
        try:
            ident = file_ident(os.stat(path))
        except OSError:
            ident = (-1, -1)
        if ident == s.ident:
            return True
        self.refresh(force=True)
        return False

    def refresh(self, *, force: bool = False, throttled: bool = True) -> None:
        """Open the sessions published since the last look, retire the stopped ones.

        At most every :data:`REFRESH_EVERY` seconds unless ``throttled`` is
        False; the sessions are read again when the registry's listing moved,
        or always with ``force``."""
        now = time.monotonic()
        if throttled and not force and now - self._checked < REFRESH_EVERY:
            return
        with self._lock:
            self._checked = now
            stamp = self.registry.stamp()
            due = any(when <= now for when, _ in self._failed.values())
            if stamp == self._stamp and not force and not due:
                self._close_retired(now)
                return
            self._stamp = stamp
            wanted = {i.key_bytes: i for i in self.registry.list()}
            changed = False
            for key, s in list(self._by_key.items()):
                if key not in wanted or not self._same_file(s):
                    self._retire(s, now)
                    changed = True
            for key, info in wanted.items():
                if key not in self._by_key:
                    failed = self._failed.get(key)
                    if failed is not None and now < failed[0] and not force:
                        continue
                    s2 = self._open(info)
                    if s2 is None:  # tried again later, not only when the registry moves
                        delay = min(OPEN_RETRY_MAX, failed[1] * 2) if failed else OPEN_RETRY
                        self._failed[key] = (now + delay, delay)
                        continue
                    self._failed.pop(key, None)
                    self._by_key[key] = s2
                    changed = True
            self._failed = {k: v for k, v in self._failed.items() if k in wanted}
            self._by_export = {s.info.export_path: s for s in self._by_key.values()}
            self._close_retired(now)
            if changed or force:
                self._publish_table()

    def _same_file(self, s: Session) -> bool:
        try:
            return file_ident(os.stat(self.registry.path_of(s.info.name))) == s.ident
        except OSError:
            return False

    def _open(self, info: SessionInfo) -> Session | None:
        try:
            ident = file_ident(os.stat(self.registry.path_of(info.name)))
            if not os.path.isdir(info.overlay):
                raise FileNotFoundError(f"overlay {info.overlay} is missing")
            from instant.namespace import SessionNamespace  # noqa: PLC0415  (TYPE_CHECKING)

            ns = SessionNamespace(info.overlay, self.base, None, quota=info.quota)
        except Exception as e:
            log.error("cannot open instant-recovery session %s: %s", info.name, e)
            return None
        log.info("instant-recovery session %s served at %s", info.name, info.export_path)
        return Session(info, ns, ident)

    def _retire(self, s: Session, now: float) -> None:
        del self._by_key[s.key]
        self._retired.append((now + CLOSE_AFTER, s))
        log.info("instant-recovery session %s stopped", s.info.name)

    def _close_retired(self, now: float) -> None:
        keep = []
        for when, s in self._retired:
            if when <= now:
                s.ns.close()
            else:
                keep.append((when, s))
        self._retired = keep

    def _publish_table(self) -> None:
        exports: list[Export] = []
        for s in self._by_key.values():
            try:
                t = s.info.exports_table()
            except ExportsError as e:
                log.error("session %s: bad client list, nobody may mount it: %s", s.info.name, e)
                continue
            exports.extend(t.exports)
        table = ExportTable(tuple(exports))
        if table.show() == self.table.show():
            return
        self.table = table
        for callback in self.on_change:
            callback(self.table)

    def close(self) -> None:
        with self._lock:
            for s in self._by_key.values():
                s.ns.close()
            for _, s in self._retired:
                s.ns.close()
            self._by_key.clear()
            self._by_export.clear()
            self._retired.clear()
