"""The writable namespace of an instant-recovery session, stacked on the read-only one.

Design notes
------------
A session presents some folders of the read-only namespace (``roots``:
name → presented path of ``/recover/images``), each under its own name at
the session's root.  Every entry is a *node* of the session database
(``instant.db``); nodes are keyed for the server by their ``fileid``:

================  ===========================================================
entry             node
================  ===========================================================
root              fileid 1 (``merge.attrs.ROOT_FILEID``), a directory
backup folder     copied at session start (the whole subtree: VM folders are
or file           small), keeping the base's fileid; a file also keeps its
                  base path and size, and reads its bytes from there through
                  the overlay store (``instant.store``, object = node id)
new entry         a fresh fileid: 63 bits of BLAKE2b(session id, node id)
================  ===========================================================

Consequences, the invariants the server relies on:

* *Stable identity.*  A fileid is fixed when its node is made and never
  changes: not on the first write (there is no copy-up of a file, only
  pieces in the overlay), not on RENAME (a dirent moves, the node stays),
  not on a restart (it is in the database).
* *Deletions are durable without whiteouts.*  Directories are copied at
  session start, so a directory's entries are exactly its dirents: REMOVE
  of a base file deletes a dirent, and nothing can show the base entry
  again.  A removed node's overlay is dropped in the same transaction.
* *Durable before the reply* (RFC 1813 §4.7).  Every change is one sqlite
  transaction (WAL, ``synchronous=FULL``) that commits before the method
  returns.  A WRITE's mtime goes into its group's commit (no extra flush).
* *Multi-process.*  All state is in the database and the logs: two
  processes on the same session directory see each other's changes at
  their next call.
* *A recorded call changes once.*  A change made under a call's key
  (``recording``) commits the key with it, and looks it up first in its own
  write transaction (``BEGIN IMMEDIATE``: one process at a time): the same
  call served meanwhile by another process (a retransmission after a
  reconnect) finds it and makes nothing (``MadeAlready``).
* *Hard links are refused* (``NotSupported``): one name per node keeps
  REMOVE, RENAME and the fileid→path map simple, and no hypervisor needs
  them.  MKNOD likewise (the server answers it without calling here).
* *The sticky bit* is the namespace's to check, where the entry's owner is
  known: REMOVE, RMDIR and RENAME take the caller's uid, and refuse
  (``NotPermitted``) an entry of a sticky directory that neither root, the
  directory's owner nor the entry's owner asks for (Linux's
  ``check_sticky``).  The other permission checks are the server's.
* A base file whose size is no longer the one recorded (the storage was
  changed under a running session) is not read: ``InputChanged``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from hashlib import blake2b
from pathlib import Path
from sqlite3 import Connection, IntegrityError
from typing import Any

from instant.answers import Answers
from instant.callvalues import NOW, CreateHow, without_setid
from instant.db import DB_NAME
from instant.errors import (
    MAX_FILE_SIZE,
    Exists,
    InvalidArgument,
    MadeAlready,
    NameTooLong,
    NoSpace,
    NotEmpty,
    NotPermitted,
    NotSupported,
    NotSync,
    Stale,
    TooLarge,
)
from instant.store import ALIGN, HEAD, Gather, Hook, Store, Tx, WakeLater, waited
from merge.attrs import ROOT_FILEID, attrs_from_fields
from merge.namespace import (
    Attrs,
    FsStats,
    InputChanged,
    IsADirectory,
    Kind,
    Namespace,
    NotADirectory,
    NotFound,
    PresentedPath,
    Reader,
    Run,
    reader_maps,
)

NAME_MAX = 255
LINK_MAX = 4095
"""Bytes of a symbolic link's target: Linux's ``PATH_MAX`` less its NUL, the
longest ``symlink(2)`` takes (knfsd answers longer ``NFS3ERR_NAMETOOLONG``)."""
MAX_COPIED_ENTRIES = 100_000
CALLS_KEPT_NS = 3600 * 10**9  # recorded call keys older than this are pruned
CALLS_PRUNE_EVERY = 256
_MASK63 = (1 << 63) - 1
_U64 = (1 << 64) - 1  # FSSTAT's fields
_RECORD_MOST = HEAD + ALIGN - 1  # the most a write's record adds to its bytes in the log
BASE_KEPT_FOR = 1.0
"""Seconds a base file's reader is shared by READs before it is opened again.

Opening it through the read-only namespace costs as much as the base's
runs; so it is kept, at most this long: a storage file replaced under a
session shows this much later than it would on the read-only export (whose
own caches hold it ``ttl``, 1 s), within rule 8's few seconds."""
BASES_KEPT = 64
_DIR_SIZE = 4096
_FILES = 1 << 32

_NODE_COLS = "id, fileid, kind, base, mode, uid, gid, atime, mtime, ctime, target, verifier"
_N_NODE_COLS = ", ".join("n." + c.strip() for c in _NODE_COLS.split(","))  # joined with dirents
_NODE_BY_FILEID = f"SELECT {_NODE_COLS} FROM nodes WHERE fileid=?"
_RECORDED = "SELECT 1 FROM calls WHERE key=?"
_NODE_SEQ = "node_seq"  # meta: the last node id given (see _insert)
_DB_PAGES = "db_pages"  # meta: the database's pages once the session was made (_check_room)
_ROOM = (
    "SELECT (SELECT COALESCE(SUM(end), 0) FROM logs), (SELECT page_count FROM pragma_page_count()),"
    " (SELECT page_size FROM pragma_page_size()), (SELECT value FROM meta WHERE key=?)"
)
_NEXT_NODE = (
    f"SELECT MAX(COALESCE((SELECT value FROM meta WHERE key='{_NODE_SEQ}'), 0),"
    " COALESCE((SELECT MAX(id) FROM nodes), 0)) + 1"
)


@dataclass(slots=True)
class Node:
    id: int
    fileid: int
    kind: Kind
    base: PresentedPath | None
    mode: int
    uid: int
    gid: int
    atime: int
    mtime: int
    ctime: int
    target: bytes | None
    verifier: bytes | None
    base_size: int = 0


def _db_text(text: str) -> str | bytes:
    """A name (or a base path) as the database keeps it: TEXT when it is UTF-8
    (every name a client spells in UTF-8, and every name of a session made
    before names that are not), else a BLOB of its bytes.  A name that is not
    UTF-8 arrives with surrogate escapes (``decode_name``: NFS names are bytes,
    and Linux clients send Latin-1 ones), which sqlite3 cannot bind as text.
    One name has one form, so look-ups and the dirents' key hold; a BLOB sorts
    after every TEXT."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape")
    return text


def _from_db(value: str | bytes) -> str:
    """What :func:`_db_text` kept, as the namespace spells it."""
    return value if isinstance(value, str) else value.decode("utf-8", "surrogateescape")


def _encode_path(path: PresentedPath, size: int) -> str | bytes:
    return _db_text("\0".join((str(size), *path)))


def _decode_path(text: str | bytes | None) -> tuple[PresentedPath | None, int]:
    if text is None:
        return None, 0
    size, *names = _from_db(text).split("\0")
    return tuple(names), int(size)


def _node(row: Sequence[Any]) -> Node:
    base, base_size = _decode_path(row[3])
    mode, uid, gid, atime, mtime, ctime, target, verifier = row[4:12]
    return Node(
        row[0], row[1], Kind(row[2]), base, mode, uid, gid, atime, mtime, ctime,
        target, verifier, base_size,
    )  # fmt: skip


def check_name(name: str) -> None:
    """A name NFS may create: not empty, ``.``, ``..``, and no ``/`` or NUL."""
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise InvalidArgument(f"invalid name {name!r}")
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that escapes no byte: no bytes name it
        raise InvalidArgument(f"invalid name {name!r}") from None
    if len(raw) > NAME_MAX:
        raise NameTooLong(name)


def check_target(target: bytes) -> None:
    """A target a symbolic link may hold: a path ``symlink(2)`` takes (not empty,
    no NUL, at most :data:`LINK_MAX` bytes), so that ``instant export`` can write
    every link a session holds.  knfsd refuses the same (``NFS3ERR_INVAL``,
    ``NFS3ERR_NAMETOOLONG``)."""
    if not target or b"\0" in target:
        raise InvalidArgument("a link's target is a path: not empty, no NUL byte")
    if len(target) > LINK_MAX:
        raise NameTooLong(f"a link's target of {len(target)} bytes (at most {LINK_MAX})")


class SessionNamespace:
    """The writable tree of one session directory; every method is durable on return."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        base: Namespace,
        roots: Mapping[str, PresentedPath] | None = None,
        *,
        quota: int | None = None,
        clock: Callable[[], int] = time.time_ns,
        hook: Hook | None = None,
        clean: bool = True,
    ) -> None:
        """Open the session in ``directory``, made from ``roots`` if it is new.
        ``clean``: this process empties the session's overwritten logs (see
        ``instant.store``, "Space"); a short-lived reader (a CLI command) does not."""
        self.dir = Path(directory)
        if roots is None and not (self.dir / DB_NAME).is_file():
            # Opening a session, not making one: a missing overlay (its disk not
            # mounted, a relative path from another folder) is made by nobody here
            # (an empty one would export, or serve, the backup as if unchanged).
            raise NotFound(f"the session's overlay {self.dir} is missing")
        self.base = base
        self.clock = clock
        self.store = Store(
            self.dir, quota=quota, hook=hook, stamp=_stamp_times, live=_live_files, clean=clean
        )
        self._calls = threading.local()
        self._recorded = 0
        self._answers = Answers()  # nodes, directories' attributes, names: per db version
        self._bases: dict[PresentedPath, _KeptBase] = {}  # base path → its shared reader
        self._bases_lock = threading.Lock()
        with self.store.transaction() as tx:
            row = tx.conn.execute("SELECT value FROM meta WHERE key='id'").fetchone()
            if row is None:
                self._make(tx, roots or {})
                row = tx.conn.execute("SELECT value FROM meta WHERE key='id'").fetchone()
        self.session_id: bytes = row[0]

    # -- making a session ----------------------------------------------------------

    def _make(self, tx: Tx, roots: Mapping[str, PresentedPath]) -> None:
        tx.conn.execute("INSERT INTO meta VALUES ('id', ?)", (os.urandom(16),))
        now = self.clock()
        tx.conn.execute(
            f"INSERT INTO nodes({_NODE_COLS}) VALUES (1,?,?,NULL,493,0,0,?,?,?,NULL,NULL)",
            (ROOT_FILEID, int(Kind.DIR), now, now, now),
        )
        budget = [MAX_COPIED_ENTRIES]
        for name, path in roots.items():
            check_name(name)
            try:
                self._copy(tx, 1, name, path, a=self.base.getattr(path), budget=budget)
            except RecursionError:
                raise InvalidArgument(f"{'/'.join(path)}: folders nested too deep") from None
        tx.conn.execute(
            "INSERT INTO meta SELECT ?, page_count FROM pragma_page_count()", (_DB_PAGES,)
        )

    def _copy(
        self, tx: Tx, parent: int, name: str, path: PresentedPath, *, a: Attrs, budget: list[int]
    ) -> None:
        """Copy the base entry ``path`` (and below) as a node named ``name`` in ``parent``."""
        budget[0] -= 1
        if budget[0] < 0:
            raise InvalidArgument(f"more than {MAX_COPIED_ENTRIES} entries in the session")
        base = _encode_path(path, a.size) if a.kind == Kind.REG else None
        try:
            node = tx.conn.execute(
                f"INSERT INTO nodes({_NODE_COLS}) VALUES (NULL,?,?,?,?,?,?,?,?,?,NULL,NULL)",
                (a.fileid, int(a.kind), base, a.mode | 0o200, a.uid, a.gid,
                 a.atime_ns, a.mtime_ns, a.ctime_ns),
            ).lastrowid  # fmt: skip
        except IntegrityError:  # the fileid is kept: one entry cannot be two nodes
            raise InvalidArgument(
                f"{'/'.join(path)} is in the session twice: its folders overlap"
            ) from None
        tx.conn.execute("INSERT INTO dirents VALUES (?,?,?)", (parent, _db_text(name), node))
        if a.kind == Kind.DIR:
            for child, ca in self.base.readdir(path):
                self._copy(tx, node or 0, child, (*path, child), a=ca, budget=budget)

    # -- nodes -------------------------------------------------------------------------

    def _by_fileid(self, conn: Connection, fileid: int) -> Node:
        row = conn.execute(_NODE_BY_FILEID, (fileid,)).fetchone()
        if row is None:
            raise Stale(f"no entry with fileid {fileid}")
        return _node(row)

    def _child(self, conn: Connection, parent: Node, name: str) -> Node | None:
        if parent.kind != Kind.DIR:
            raise NotADirectory(str(parent.fileid))
        row = conn.execute(
            f"SELECT {_N_NODE_COLS} "
            "FROM dirents d JOIN nodes n ON n.id = d.node WHERE d.parent=? AND d.name=?",
            (parent.id, _db_text(name)),
        ).fetchone()
        return None if row is None else _node(row)

    def _attrs(self, conn: Connection | None, n: Node, version: int | None = None) -> Attrs:
        """``n``'s attributes; ``conn`` (a read) is needed for a directory's link count only."""
        if n.kind == Kind.REG:
            size = self.store.size(n.id, n.base_size, version)
            used = size
            nlink = 1
        elif n.kind == Kind.DIR:
            assert conn is not None
            size = used = _DIR_SIZE
            (subdirs,) = conn.execute(
                "SELECT COUNT(*) FROM dirents d JOIN nodes n ON n.id = d.node "
                "WHERE d.parent=? AND n.kind=?",
                (n.id, int(Kind.DIR)),
            ).fetchone()
            nlink = 2 + subdirs
        else:
            size = used = len(n.target or b"")
            nlink = 1
        return Attrs(
            kind=n.kind, size=size, used=used, mode=n.mode, nlink=nlink, uid=n.uid, gid=n.gid,
            fileid=n.fileid, atime_ns=n.atime, mtime_ns=n.mtime, ctime_ns=n.ctime,
        )  # fmt: skip

    @contextmanager
    def _changing(self) -> Iterator[Tx]:
        """A change's write transaction; under :meth:`recording`, it records the key.

        The key is looked up first, under the write lock (``BEGIN IMMEDIATE``
        takes it in turn across processes): found, the same call served by
        another process made the change while this one waited for the lock,
        and ``MadeAlready`` is raised, nothing changed.  The look before the
        call (``recorded``) cannot know of a call still running elsewhere.
        The check is one lookup of the ``calls`` primary key, in the
        transaction the change takes anyway, and only under a recorded key."""
        with self.store.transaction() as tx:
            key = getattr(self._calls, "key", None)
            if key is not None and tx.conn.execute(_RECORDED, (key,)).fetchone() is not None:
                raise MadeAlready("the call's change was made by another process")
            yield tx
            if key is not None:
                self._calls.key = None
                self._record_call(tx, key)

    def _record_call(self, tx: Tx, key: bytes) -> None:
        now = self.clock()
        tx.conn.execute("INSERT OR REPLACE INTO calls VALUES (?, ?)", (key, now))
        self._recorded += 1
        if self._recorded % CALLS_PRUNE_EVERY == 0:
            tx.conn.execute("DELETE FROM calls WHERE at < ?", (now - CALLS_KEPT_NS,))

    @contextmanager
    def recording(self, key: bytes) -> Iterator[None]:
        """The first change made by this thread in the block records ``key`` with it.

        The server's duplicate request cache (``nfsd.programs.drc``) uses it
        so that a retransmission after a restart, or served by another
        process, learns the change was made: the key commits in the change's
        own transaction, or not at all; a change whose key is recorded already
        is not made again (``MadeAlready``, see :meth:`_changing`).
        """
        self._calls.key = key
        try:
            yield
        finally:
            self._calls.key = None

    def recorded(self, key: bytes) -> bool:
        """Whether a change recorded under ``key`` committed."""
        with self.store.read() as conn:
            return conn.execute(_RECORDED, (key,)).fetchone() is not None

    def _new_fileid(self, conn: Connection, node: int) -> int:
        salt = 0
        while True:
            digest = blake2b(
                self.session_id + node.to_bytes(8, "big") + salt.to_bytes(4, "big"),
                digest_size=8,
                person=b"rfs-instant",
            )
            fid = int.from_bytes(digest.digest(), "big") & _MASK63
            taken = conn.execute("SELECT 1 FROM nodes WHERE fileid=?", (fid,)).fetchone()
            if fid > ROOT_FILEID and taken is None:
                return fid
            salt += 1

    def _insert(
        self, tx: Tx, parent: Node, name: str, *, kind: Kind, mode: int, uid: int, gid: int,
        target: bytes | None = None, verifier: bytes | None = None,
    ) -> Node:  # fmt: skip
        self._check_room(tx)
        now = self.clock()
        c = tx.conn
        # A node id is never given twice (sqlite's own would reuse the largest after
        # it is removed): the fileid, and so the handle, are made from it, and a
        # handle of a removed file must never name a new one.
        node = c.execute(_NEXT_NODE).fetchone()[0]
        c.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (_NODE_SEQ, node))
        c.execute(
            f"INSERT INTO nodes({_NODE_COLS}) VALUES (?,0,?,NULL,?,?,?,?,?,?,?,?)",
            (node, int(kind), mode & 0o7777, uid, gid, now, now, now, target, verifier),
        )
        fid = self._new_fileid(c, node)
        c.execute("UPDATE nodes SET fileid=? WHERE id=?", (fid, node))
        c.execute("INSERT INTO dirents VALUES (?,?,?)", (parent.id, _db_text(name), node))
        self._touch_dir(tx, parent, now)
        return self._by_fileid(c, fid)

    def _check_room(self, tx: Tx) -> None:
        """A new name, in a session with a quota: refused (``NoSpace``) once the
        session holds its quota, counting its data logs and what its database
        grew since the session was made (names, links' targets, maps): without
        it a client past the quota could still fill the cache file system with
        names.  Data writes count their logs only (the store's check), so a
        session holds at most about twice its quota."""
        quota = self.store.quota
        if quota is None:
            return
        c = tx.conn
        logged, pages, page, base = c.execute(_ROOM, (_DB_PAGES,)).fetchone()
        if base is None:  # a session made before this was counted: from now on
            c.execute("INSERT INTO meta VALUES (?, ?)", (_DB_PAGES, pages))
            base = pages
        if logged + max(0, pages - base) * page >= quota:
            raise NoSpace(f"quota of {quota} bytes reached (data and names)")

    def _touch_dir(self, tx: Tx, d: Node, now: int) -> None:
        tx.conn.execute("UPDATE nodes SET mtime=?, ctime=? WHERE id=?", (now, now, d.id))

    def _unlink(self, tx: Tx, parent: Node, name: str, n: Node) -> None:
        """Delete the dirent and its node (one name per node) with its overlay."""
        tx.conn.execute(
            "DELETE FROM dirents WHERE parent=? AND name=?", (parent.id, _db_text(name))
        )
        tx.conn.execute("DELETE FROM nodes WHERE id=?", (n.id,))
        if n.kind == Kind.REG:
            tx.drop(n.id)

    # -- reading -----------------------------------------------------------------------

    def root(self) -> int:
        return ROOT_FILEID

    # What the database answered is kept while its version holds (instant.answers):
    # a call that finds it costs one look at the version, no read transaction.
    # A regular file's size is not kept here: it is the store's, asked at the
    # same version (the store knows when its own commits are not yet readable).

    def _node_at(self, version: int, fileid: int) -> Node:
        """``fileid``'s node as of ``version``; ``Stale`` if there is none.

        The node is shared by the calls of this version: never change it.
        """
        n = self._answers.get(version, fileid)
        if n is None:
            # One statement, no BEGIN/COMMIT around it (Store.read_one): after each
            # group this process commits, the loop's next WRITE reads its node again.
            row = self.store.read_one(_NODE_BY_FILEID, (fileid,))
            n = _GONE if row is None else _node(row)
            self._answers.put(version, fileid, n)
        if n is _GONE:
            raise Stale(f"no entry with fileid {fileid}")
        assert isinstance(n, Node)
        return n

    def _attrs_at(self, version: int, n: Node) -> Attrs:
        """``n``'s attributes as of ``version``.

        A file's are kept with the size they were made with and given again
        while the store's size (asked each time, at ``version``) is the same:
        an ``Attrs`` costs 1.5 µs to build, a READ or GETATTR of a file ~12.
        """
        if n.kind == Kind.REG:
            size = self.store.size(n.id, n.base_size, version)
            key = ("file", n.fileid)
            a = self._answers.get(version, key)
            if not isinstance(a, Attrs) or a.size != size:
                a = self._attrs(None, n, version)
                self._answers.put(version, key, a)
            return a
        key = ("attrs", n.fileid)
        a = self._answers.get(version, key)
        if a is None:
            with self.store.read() as conn:
                a = self._attrs(conn, n)
            self._answers.put(version, key, a)
        assert isinstance(a, Attrs)
        return a

    def getattr(self, fileid: int, version: int | None = None) -> Attrs:
        """``version``: the store's ``version()`` the caller just read (a WRITE asks it
        once for its wcc read and its write), else asked here."""
        v = self.store.version() if version is None else version
        return self._attrs_at(v, self._node_at(v, fileid))

    def lookup(self, dir_fileid: int, name: str) -> Attrs:
        """The attributes (and so the fileid) of ``name`` in a directory."""
        v = self.store.version()
        key = ("child", dir_fileid, name)
        fid = self._answers.get(v, key)
        if fid is None:
            d = self._node_at(v, dir_fileid)
            with self.store.read() as conn:
                n = self._child(conn, d, name)
            fid = _NO_CHILD if n is None else n.fileid
            self._answers.put(v, key, fid)
            if n is not None:
                self._answers.put(v, n.fileid, n)
        if fid == _NO_CHILD:
            raise NotFound(name)
        assert isinstance(fid, int)
        return self._attrs_at(v, self._node_at(v, fid))

    def parent(self, fileid: int) -> int:
        """The fileid of the directory holding ``fileid`` (the root's is the root)."""
        with self.store.read() as conn:
            n = self._by_fileid(conn, fileid)
            row = conn.execute(
                "SELECT p.fileid FROM dirents d JOIN nodes p ON p.id = d.parent WHERE d.node=?",
                (n.id,),
            ).fetchone()
        return ROOT_FILEID if row is None else row[0]

    def resolve(self, path: PresentedPath) -> int:
        """The fileid of a path below the session root (for tools and tests)."""
        fid = ROOT_FILEID
        for name in path:
            fid = self.lookup(fid, name).fileid
        return fid

    def readdir(self, dir_fileid: int) -> Sequence[tuple[str, Attrs]]:
        v = self.store.version()
        d = self._node_at(v, dir_fileid)
        if d.kind != Kind.DIR:
            raise NotADirectory(str(dir_fileid))
        key = ("entries", dir_fileid)
        entries = self._answers.get(v, key)
        if entries is None:
            with self.store.read() as conn:
                rows = conn.execute(
                    f"SELECT d.name, {_N_NODE_COLS} "
                    "FROM dirents d JOIN nodes n ON n.id = d.node WHERE d.parent=?",
                    (d.id,),
                ).fetchall()
            entries = [(_from_db(r[0]), _node(r[1:])) for r in rows]
            self._answers.put(v, key, entries)
        assert isinstance(entries, list)
        return [(name, self._attrs_at(v, n)) for name, n in entries]

    def readlink(self, fileid: int) -> bytes:
        n = self._node_at(self.store.version(), fileid)
        if n.kind != Kind.LNK or n.target is None:
            raise InvalidArgument("not a symbolic link")
        return n.target

    def nowait(self) -> AbstractContextManager[None]:
        """Reads that must not wait on the database (``Store.nowait``): inside,
        what would wait raises ``instant.errors.WouldWait`` instead."""
        return self.store.nowait()

    def open(self, fileid: int) -> SessionReader:
        """A regular file's reader, as of one look at the database's version."""
        v = self.store.version()
        return SessionReader(self, _check_regular(self._node_at(v, fileid)), v)

    def _base_reader(self, path: PresentedPath, size: int) -> _KeptBase:
        """The shared reader of base file ``path``, a reference taken for the caller.

        Opened again when older than :data:`BASE_KEPT_FOR`, or when the one kept
        was closed meanwhile; ``InputChanged`` if its size is no longer ``size``.
        """
        now = time.monotonic()
        kept = self._bases.get(path)
        if kept is not None and now < kept.until and kept.take():
            return kept
        reader = self.base.open(path)
        if reader.size != size:
            reader.__exit__(None, None, None)
            raise InputChanged(f"{'/'.join(path)} changed size under the session")
        fresh = _KeptBase(reader, now + BASE_KEPT_FOR)
        fresh.take()
        with self._bases_lock:
            gone = [self._bases.pop(path)] if path in self._bases else []
            if len(self._bases) >= BASES_KEPT:
                gone.extend(self._bases.values())
                self._bases = {}
            self._bases[path] = fresh
        for old in gone:
            old.drop()  # the cache's reference: closed once no READ holds it
        return fresh

    def fsstat(self) -> FsStats:
        """The quota's room, or the cache file system's when that is smaller.

        The room is what one more WRITE may carry: a write takes its bytes
        and its record's header (a large one's padded to a page) in the
        quota, so a client told N bytes are free can write N bytes."""
        st = os.statvfs(self.dir)
        fs_free = st.f_bavail * st.f_frsize
        fs_total = st.f_blocks * st.f_frsize
        use = self.store.usage()
        if use.quota is None:
            total, free = fs_total, fs_free
        else:
            total = min(use.quota, _U64)
            free = min(fs_free, max(0, use.quota - use.logged - _RECORD_MOST))
        return FsStats(total, free, free, _FILES, _FILES, _FILES)

    # -- writing -----------------------------------------------------------------------

    def create(
        self, dir_fileid: int, name: str, *, mode: int = 0o644,
        how: CreateHow = CreateHow.UNCHECKED, verifier: bytes = b"", uid: int = 0, gid: int = 0,
        size: int | None = None, atime_ns: int | None = None, mtime_ns: int | None = None,
        drop_setid: bool = False,
    ) -> Attrs:  # fmt: skip
        """CREATE (RFC 1813 §3.3.8): a retried EXCLUSIVE with the same verifier succeeds.

        ``size`` and the times (``NOW`` allowed): obj_attributes' initial ones, for
        the new file or the one UNCHECKED finds (a re-create truncates), set in the
        create's own transaction: the call's key (:meth:`recording`) commits with
        the whole change, so a crash leaves all of it or none, never a recorded
        create whose truncate is lost.  ``drop_setid``: a size change drops the
        file's set-ID bits, as :meth:`setattr`'s."""
        check_name(name)
        with self._changing() as tx:
            d = self._by_fileid(tx.conn, dir_fileid)
            old = self._child(tx.conn, d, name)
            if old is not None:
                same_exclusive = how == CreateHow.EXCLUSIVE and old.verifier == verifier
                if old.kind != Kind.REG or how == CreateHow.GUARDED:
                    raise Exists(name)
                if how == CreateHow.EXCLUSIVE and not same_exclusive:
                    raise Exists(name)
                n = old
            else:
                keep = verifier if how == CreateHow.EXCLUSIVE else None
                n = self._insert(
                    tx, d, name, kind=Kind.REG, mode=mode, uid=uid, gid=gid, verifier=keep
                )
            a = self._attrs(tx.conn, n)
            if size == a.size:
                size = None
            if size is None and atime_ns is None and mtime_ns is None:
                return a
            if size is not None and drop_setid:
                n.mode = without_setid(n.mode)
            self._change_file(tx, n, size=size, atime_ns=atime_ns, mtime_ns=mtime_ns)
        # After the commit: a truncate reaches this process's size cache only then.
        return self.getattr(n.fileid)

    def mkdir(
        self, dir_fileid: int, name: str, *, mode: int = 0o755, uid: int = 0, gid: int = 0
    ) -> Attrs:
        check_name(name)
        with self._changing() as tx:
            d = self._by_fileid(tx.conn, dir_fileid)
            if self._child(tx.conn, d, name) is not None:
                raise Exists(name)
            return self._attrs(
                tx.conn, self._insert(tx, d, name, kind=Kind.DIR, mode=mode, uid=uid, gid=gid)
            )

    def symlink(
        self,
        dir_fileid: int,
        name: str,
        target: bytes,
        *,
        mode: int = 0o777,
        uid: int = 0,
        gid: int = 0,
    ) -> Attrs:
        check_name(name)
        check_target(target)
        with self._changing() as tx:
            d = self._by_fileid(tx.conn, dir_fileid)
            if self._child(tx.conn, d, name) is not None:
                raise Exists(name)
            n = self._insert(
                tx, d, name, kind=Kind.LNK, mode=mode, uid=uid, gid=gid, target=bytes(target)
            )
            return self._attrs(tx.conn, n)

    def link(self, fileid: int, dir_fileid: int, name: str) -> Attrs:
        """Hard links are refused by design (see the design notes)."""
        raise NotSupported("hard links are not supported in a session")

    def write(self, fileid: int, offset: int, data: bytes | memoryview) -> Attrs:
        """WRITE, FILE_SYNC: the data and the new mtime are durable when this returns."""

        def start(done: Callable[[Attrs | Exception], None]) -> None:
            self.write_async(fileid, offset, data, done)

        return waited(start)

    def write_async(
        self,
        fileid: int,
        offset: int,
        data: bytes | memoryview,
        done: Callable[[Attrs | Exception], None],
        *,
        version: int | None = None,
        gather: Gather | None = None,
        wake_later: WakeLater | None = None,
    ) -> None:
        """WRITE, FILE_SYNC, answered later: ``done(attrs after)`` once the data and
        the new mtime are durable, or ``done(error)``; on the store's committer thread
        (:meth:`instant.store.Store.write_async`).  What is refused before any byte
        is written (not a file, out of range, over the quota) is raised here, and
        ``done`` is never called.  ``version``: the store's ``version()`` the caller
        just read the node at (its wcc read), not asked again.  ``gather``,
        ``wake_later``: the store's (:data:`instant.store.Gather`,
        :data:`instant.store.WakeLater`)."""
        # The node as kept for this version (the server's wcc read just asked for
        # it): the kept node is shared, so the new times go into the answer only.
        if version is None:
            version = self.store.version()
        n = _check_regular(self._node_at(version, fileid))
        now = self.clock()

        def written(outcome: int | Exception) -> None:
            if isinstance(outcome, Exception):
                done(outcome)
                return
            # The node as read above, with the times just committed and the size the
            # write made: no second read per WRITE (a SETATTR racing this WRITE shows
            # at the next GETATTR, as with any attribute cache).  Built by its slots'
            # setters (merge.attrs): a frozen dataclass's __init__ costs twice that.
            fields = (outcome, outcome, n.mode, 1, n.uid, n.gid, n.fileid, n.atime, now, now)
            done(attrs_from_fields(fields, n.kind))

        self.store.write_async(
            n.id,
            offset,
            data,
            n.base_size,
            stamp=now,
            done=written,
            gather=gather,
            wake_later=wake_later,
        )

    def commit(self, fileid: int) -> None:
        """COMMIT: nothing to do, every write was FILE_SYNC; checks the file exists."""
        self.getattr(fileid)

    def setattr(
        self, fileid: int, *, size: int | None = None, mode: int | None = None,
        uid: int | None = None, gid: int | None = None, atime_ns: int | None = None,
        mtime_ns: int | None = None, guard_ctime_ns: int | None = None,
        drop_setid: bool = False,
    ) -> Attrs:  # fmt: skip
        """SETATTR (RFC 1813 §3.3.2); times may be ``NOW``; guarded by ctime when asked.

        ``drop_setid`` (no ``mode`` given): a regular file's mode loses its set-ID
        bits as :func:`instant.callvalues.without_setid` says, from the mode read in
        this transaction (a chmod just before is not undone); the server asks it
        for a write or a truncate by a caller who is not root."""
        with self._changing() as tx:
            n = self._by_fileid(tx.conn, fileid)
            if guard_ctime_ns is not None and guard_ctime_ns != n.ctime:
                raise NotSync(str(fileid))
            if mode is not None:
                n.mode = mode & 0o7777
            elif drop_setid and n.kind == Kind.REG:
                n.mode = without_setid(n.mode)
            n.uid = n.uid if uid is None else uid
            n.gid = n.gid if gid is None else gid
            self._change_file(tx, n, size=size, atime_ns=atime_ns, mtime_ns=mtime_ns)
        # After the commit: a truncate reaches this process's size cache only then.
        return self.getattr(fileid)

    def _change_file(
        self, tx: Tx, n: Node, *, size: int | None, atime_ns: int | None, mtime_ns: int | None
    ) -> None:
        """Write ``n``'s mode, owner and the given size and times (``NOW`` allowed) in
        ``tx``; a size change through the store (``Tx.truncate``) sets mtime too."""
        now = self.clock()
        if size is not None:
            if n.kind == Kind.DIR:
                raise IsADirectory(str(n.fileid))
            if n.kind != Kind.REG or size < 0:
                raise InvalidArgument("size of a non-file")
            if size > MAX_FILE_SIZE:
                raise TooLarge(f"a size of {size} (at most {MAX_FILE_SIZE})")
            tx.truncate(n.id, size, n.base_size)
            n.mtime = now
        n.atime = n.atime if atime_ns is None else (now if atime_ns == NOW else atime_ns)
        n.mtime = n.mtime if mtime_ns is None else (now if mtime_ns == NOW else mtime_ns)
        tx.conn.execute(
            "UPDATE nodes SET mode=?, uid=?, gid=?, atime=?, mtime=?, ctime=? WHERE id=?",
            (n.mode, n.uid, n.gid, n.atime, n.mtime, now, n.id),
        )

    def remove(self, dir_fileid: int, name: str, *, caller: int = 0) -> None:
        """REMOVE a file or symbolic link (a base file too: the session forgets it).

        ``caller``: the uid asking, for a sticky directory (``_check_sticky``)."""
        self._delete(dir_fileid, name, want_dir=False, caller=caller)

    def rmdir(self, dir_fileid: int, name: str, *, caller: int = 0) -> None:
        """RMDIR of an empty directory; ``caller`` as :meth:`remove`'s."""
        self._delete(dir_fileid, name, want_dir=True, caller=caller)

    def _delete(self, dir_fileid: int, name: str, *, want_dir: bool, caller: int) -> None:
        with self._changing() as tx:
            d = self._by_fileid(tx.conn, dir_fileid)
            n = self._child(tx.conn, d, name)
            if n is None:
                raise NotFound(name)
            _check_sticky(d, n, caller)
            if want_dir and n.kind != Kind.DIR:
                raise NotADirectory(name)
            if not want_dir and n.kind == Kind.DIR:
                raise IsADirectory(name)
            if want_dir and _has_entries(tx.conn, n):
                raise NotEmpty(name)
            self._unlink(tx, d, name, n)
            self._touch_dir(tx, d, self.clock())

    def rename(
        self, from_dir: int, from_name: str, to_dir: int, to_name: str, *, caller: int = 0
    ) -> None:
        """RENAME (RFC 1813 §3.3.14): over an existing name, across directories; atomic.

        ``caller``: the uid asking; a sticky directory's entry, the one renamed or
        the one it replaces, as for :meth:`remove` (Linux's ``vfs_rename`` calls
        ``may_delete`` on both)."""
        check_name(to_name)
        with self._changing() as tx:
            c = tx.conn
            fd = self._by_fileid(c, from_dir)
            td = self._by_fileid(c, to_dir)
            src = self._child(c, fd, from_name)
            if src is None:
                raise NotFound(from_name)
            dst = self._child(c, td, to_name)
            if dst is not None and dst.id == src.id:
                return
            _check_sticky(fd, src, caller)
            if dst is not None:
                _check_sticky(td, dst, caller)
            if src.kind == Kind.DIR and self._is_below(c, td.id, src.id):
                raise InvalidArgument("a directory cannot move below itself")
            if dst is not None:
                if src.kind == Kind.DIR and dst.kind != Kind.DIR:
                    raise NotADirectory(to_name)
                if src.kind != Kind.DIR and dst.kind == Kind.DIR:
                    raise IsADirectory(to_name)
                if dst.kind == Kind.DIR and _has_entries(c, dst):
                    raise NotEmpty(to_name)
                self._unlink(tx, td, to_name, dst)
            c.execute(
                "UPDATE dirents SET parent=?, name=? WHERE parent=? AND name=?",
                (td.id, _db_text(to_name), fd.id, _db_text(from_name)),
            )
            now = self.clock()
            c.execute("UPDATE nodes SET ctime=? WHERE id=?", (now, src.id))
            self._touch_dir(tx, fd, now)
            self._touch_dir(tx, td, now)

    def _is_below(self, conn: Connection, node: int, ancestor: int) -> bool:
        """Whether ``node`` is ``ancestor`` or lies below it."""
        while node != ancestor:
            row = conn.execute("SELECT parent FROM dirents WHERE node=?", (node,)).fetchone()
            if row is None:
                return False
            node = row[0]
        return True

    def close(self) -> None:
        with self._bases_lock:
            gone, self._bases = list(self._bases.values()), {}
        for kept in gone:
            kept.drop()
        self.store.close()

    def __enter__(self) -> SessionNamespace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _KeptBase:
    """A base file's reader shared by READs: one reference for the cache, one per READ.

    The last reference dropped closes it, so eviction never closes a reader
    a READ is still copying from.
    """

    __slots__ = ("_lock", "_refs", "reader", "until")

    def __init__(self, reader: Reader, until: float) -> None:
        self.reader = reader
        self.until = until
        self._refs = 1
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Take a reference, unless it is closed already."""
        with self._lock:
            if self._refs <= 0:
                return False
            self._refs += 1
            return True

    def drop(self) -> None:
        with self._lock:
            self._refs -= 1
            last = self._refs == 0
        if last:
            self.reader.__exit__(None, None, None)


_GONE = object()  # kept for a fileid without a node
_NO_CHILD = -1  # kept for a name without an entry (fileids are never negative)


def _check_regular(n: Node) -> Node:
    """``n`` if it is a regular file (READ and WRITE refuse anything else)."""
    if n.kind == Kind.DIR:
        raise IsADirectory(str(n.fileid))
    if n.kind != Kind.REG:
        raise InvalidArgument("not a regular file")
    return n


def _check_sticky(d: Node, n: Node, caller: int) -> None:
    """``NotPermitted`` when ``caller`` may not unlink ``n`` from ``d``: in a sticky
    directory (``S_ISVTX``) only root (``CAP_FOWNER``), the directory's owner and
    the entry's may (Linux's ``check_sticky`` in ``may_delete``, which answers
    ``EPERM``; the server has checked write permission on ``d`` already)."""
    if d.mode & 0o1000 and caller not in (0, d.uid, n.uid):
        raise NotPermitted(f"sticky directory: uid {caller} owns neither it nor the entry")


def _has_entries(conn: Connection, d: Node) -> bool:
    return (
        conn.execute("SELECT 1 FROM dirents WHERE parent=? LIMIT 1", (d.id,)).fetchone() is not None
    )


class SessionReader:
    """An opened session file: runs of its base, the overlay's logs and zeros.

    The base's reader is taken (shared, ``SessionNamespace._base_reader``) on
    the first read that needs it and held until the reader is closed.
    ``attrs``, ``size`` and the first ``runs`` answer as of the database
    version seen by ``open`` (one look per READ);
    later ``runs`` look again (``instant export`` reads a whole file through
    one reader).
    """

    def __init__(self, ns: SessionNamespace, node: Node, version: int | None = None) -> None:
        self._ns = ns
        self._node = node
        self._version = version
        self._base: _KeptBase | None = None
        self._runs: list[Run] = []  # the last runs(): what maps() must cover

    @property
    def attrs(self) -> Attrs:
        if self._version is None:
            return self._ns._attrs(None, self._node)
        return self._ns._attrs_at(self._version, self._node)

    @property
    def size(self) -> int:
        return self._ns.store.size(self._node.id, self._node.base_size, self._version)

    def _base_runs(self, offset: int, count: int) -> list[Run]:
        n = self._node
        if n.base is None:
            return []
        if self._base is None:
            self._base = self._ns._base_reader(n.base, n.base_size)
        return self._base.reader.runs(offset, count)

    def maps(self) -> dict[int, memoryview]:
        """Read-only mappings by descriptor covering the runs of the last
        ``runs``: the base's (``merge.sources``, once a ``runs`` has opened
        it) and the overlay's data logs' (``Store.log_maps``), so that a READ
        of rewritten regions is sent from the page cache as one of the base's
        (``nfsd.programs.nfs3.read.by_mapping``).  A run left uncovered
        makes that READ copy instead."""
        maps = reader_maps(self._base.reader) if self._base is not None else {}
        logs = self._ns.store.log_maps(self._runs)
        if logs:
            maps = {**maps, **logs} if maps else logs
        return maps

    def data_from(self, offset: int) -> int:
        """The first byte at or after ``offset`` that may hold data, else the
        file's size: the end of a hole (``Store.data_from``)."""
        return self._ns.store.data_from(self._node.id, offset, self._node.base_size)

    def read_ahead(self) -> None:
        """The logs' bytes after the last ``runs`` read ahead when they continue
        a sequential stream (``Store.read_ahead``): for a READ on a worker that
        found them out of the page cache."""
        self._ns.store.read_ahead(self._runs)

    def runs(self, offset: int, count: int) -> list[Run]:
        version, self._version = self._version, None
        self._runs = self._ns.store.runs(
            self._node.id, offset, count, self._base_runs, self._node.base_size, version=version
        )
        return self._runs

    def __enter__(self) -> SessionReader:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._base is not None:
            self._base.drop()
            self._base = None


def _live_files(tx: Tx, nodes: list[int]) -> set[int]:
    """Which of ``nodes`` are still regular files: the store's ``live``."""
    marks = ",".join("?" * len(nodes))
    rows = tx.conn.execute(
        f"SELECT id FROM nodes WHERE kind=? AND id IN ({marks})", (int(Kind.REG), *nodes)
    )
    return {r[0] for r in rows}


def _stamp_times(tx: Tx, node: int, now: int) -> None:
    """A WRITE's times, set in its group's commit (and again if the write is
    replayed from the data log): the store's ``stamp``."""
    tx.last(("times", node), "UPDATE nodes SET mtime=?, ctime=? WHERE id=?", (now, now, node))
