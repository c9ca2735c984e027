"""The session database: one sqlite3 file holding every map and every name.

Design notes
------------
Why sqlite3 and not a journal of our own: it gives atomic, durable,
multi-process transactions (WAL, ``synchronous=FULL``: a COMMIT returns
after the WAL is fsynced; a write group's COMMIT mostly ``NORMAL``, its
writes redone from the data log after a power loss: ``instant.store``,
"The data log as the map's log") and readers that never wait for a writer,
in the standard library.  Data never goes through it (only maps and names), so
its write cost per commit is a few small pages: the page size is 1 KiB.

==========  ==================================================================
table       rows
==========  ==================================================================
``logs``    a data log (``log-<uuid>.dat``, one per writing process): its id,
            file name and committed end (bytes counted against the quota)
``objects`` a file's overlay: ``size``, ``base_limit``, ``gen`` (bumped by
            every commit that changes it: the cache key of other processes)
``pieces``  ``(obj, start) → length, log, pos``: ``instant.rangemap.Piece``
``nodes``   an entry of the writable namespace (``instant.namespace``)
``dirents`` ``(parent, name) → node``; node 0 is a whiteout
``meta``    key/value: the session's fixed facts (id, quota); ``wal_log``: the
            data log whose groups may commit without a WAL fsync, deleted
            by triggers (``TURN_ENDERS``) at every other change of a file or
            a name
``calls``   the server's duplicate request cache keys of changes that
            succeeded, committed with the change (``SessionNamespace.recording``)
==========  ==================================================================
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

DB_NAME = "session.sqlite"
BUSY_TIMEOUT_MS = 120_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS logs(
    id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, end INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS objects(
    id INTEGER PRIMARY KEY, size INTEGER NOT NULL, base_limit INTEGER NOT NULL,
    gen INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS pieces(
    obj INTEGER NOT NULL, start INTEGER NOT NULL, length INTEGER NOT NULL,
    log INTEGER NOT NULL, pos INTEGER NOT NULL, PRIMARY KEY(obj, start)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS nodes(
    id INTEGER PRIMARY KEY, fileid INTEGER UNIQUE NOT NULL, kind INTEGER NOT NULL,
    base TEXT, materialized INTEGER NOT NULL DEFAULT 1, mode INTEGER NOT NULL,
    uid INTEGER NOT NULL, gid INTEGER NOT NULL, atime INTEGER NOT NULL,
    mtime INTEGER NOT NULL, ctime INTEGER NOT NULL, target BLOB, verifier BLOB);
CREATE TABLE IF NOT EXISTS dirents(
    parent INTEGER NOT NULL, name TEXT NOT NULL, node INTEGER NOT NULL,
    PRIMARY KEY(parent, name)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dirents_node ON dirents(node);
CREATE TABLE IF NOT EXISTS calls(key BLOB PRIMARY KEY, at INTEGER NOT NULL) WITHOUT ROWID;
"""

WAL_LOG = "wal_log"
"""``meta`` key: the data log whose groups may commit without a WAL fsync."""
GIVEN_BACK = "given_back"
"""``meta`` key: log bytes the cleaning removed, less what its copies took
(``instant.store``, "Cleaning"): the logs' bytes plus this are the bytes ever written."""

TURN_ENDERS = [
    f"CREATE TRIGGER IF NOT EXISTS {table}_{op.lower()}_ends_wal_log AFTER {op} ON {table}"
    f" BEGIN DELETE FROM meta WHERE key='{WAL_LOG}'; END"
    for table in ("objects", "nodes", "dirents")
    for op in ("INSERT", "UPDATE", "DELETE")
]
"""Every change of a file's size or map (``objects``: each commit of one bumps
its ``gen``) or of a name (``nodes``, ``dirents``) deletes the ``wal_log`` row in
its own transaction, whatever the code that commits it (an older version's too:
the triggers are in the database).  A group that may keep the log's replay turn names
its log again after its edits (``instant.store``, "The data log as the map's
log"); every other change ends the turn, so a replay never redoes a record
over a change made after it."""


def connect(directory: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), schema ready."""
    conn = sqlite3.connect(
        directory / DB_NAME, isolation_level=None, check_same_thread=False, timeout=120
    )
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA page_size=1024")  # only takes effect on a new file
    _wal(conn)
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("BEGIN IMMEDIATE")
    for stmt in SCHEMA.split(";"):
        if stmt.strip():
            conn.execute(stmt)
    for stmt in TURN_ENDERS:
        conn.execute(stmt)
    conn.execute("COMMIT")
    return conn


def _wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL; sqlite answers BUSY without waiting when another process opens too."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal":
                return
        except sqlite3.OperationalError as e:
            # Only BUSY is worth waiting for: a file that cannot be opened (no
            # descriptor left, no such directory) fails now, not after 120 s.
            if not _busy(e) or time.monotonic() > deadline:
                raise
        time.sleep(0.005)


def _busy(e: sqlite3.Error) -> bool:
    """Whether ``e`` is sqlite's SQLITE_BUSY or SQLITE_LOCKED (another connection's lock)."""
    code = getattr(e, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF in (5, 6)
    return "locked" in str(e) or "busy" in str(e)
