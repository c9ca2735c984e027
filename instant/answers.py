"""Answers read from the session database, kept while the database has not changed.

Design notes
------------
A session's GETATTR, LOOKUP, ACCESS and READ each read a node (and a
directory's link count, or a child's name) in a read transaction of
sqlite: a ``BEGIN``, a query or two, a ``COMMIT``, some 10 to 30 µs of
Python a call.  Between two changes of the session they all answer the
same, and sqlite says when a change happened: ``PRAGMA data_version`` of
the read connection (``Store.version``) moves whenever any connection of
any process committed, this process's own writer included, at the cost of
a look at the WAL index (~1.5 µs).

So an answer is kept with the version it was read at, and given again to
callers that read the same version; the first caller that reads a newer
version drops them all.  The invariant: an answer kept under version ``v``
was read *after* ``data_version`` returned ``v`` (its snapshot includes
every commit up to ``v``), and is only given to a call that also read
``v``: that call started after those commits, and no commit has been seen
since, so the answer is one the database held during the call.  A caller
whose version is older than the kept one (it read it before another thread
saw the newer one) neither reads nor stores.  Versions of one connection
only grow, so they are compared with ``<``.

Only the session namespace's reads use it; every change goes through a
write transaction of its own and is followed by a new version.  Bounded:
past ``limit`` answers, all are dropped.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable

LIMIT = 8192


class Answers:
    """Values keyed by anything, valid for one version of the session database."""

    def __init__(self, limit: int = LIMIT) -> None:
        self._limit = limit
        self._at = -1  # the version the kept answers were read at
        self._kept: dict[Hashable, object] = {}
        self._lock = threading.Lock()

    def get(self, version: int, key: Hashable) -> object | None:
        """The answer kept for ``key`` at ``version``, or None."""
        if version != self._at:
            if version < self._at:
                return None  # a newer version was seen meanwhile: ask the database
            with self._lock:
                if version > self._at:
                    self._kept = {}
                    self._at = version
        return self._kept.get(key)

    def put(self, version: int, key: Hashable, value: object) -> None:
        """Keep ``value``, read after ``version`` was seen; dropped if that is old now."""
        with self._lock:
            if version != self._at:
                return
            if len(self._kept) >= self._limit:
                self._kept = {}
            self._kept[key] = value

    def __len__(self) -> int:
        return len(self._kept)
