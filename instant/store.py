"""The overlay store: file contents written over a read-only base, in a session directory.

Design notes
------------
Data goes to append-only *data logs*, one per ``Store`` (one per process):
a write never touches bytes already written, so an overwrite cannot tear.
What finds the data (``instant.rangemap`` maps, sizes) is in the session's
sqlite database (``instant.db``).  A WRITE is acknowledged only once its
data and what finds it are on stable storage, in this order:

====  ========================  ============================================
step  what                      if the process (or the machine) dies after it
====  ========================  ============================================
1     reserve ``[pos, pos+n)``  nothing happened
      at the end of the log
2     ``pwrite`` the record     bytes in the log, no map points at them:
      (header, then the bytes)  invisible (or replayed whole, see below)
3     ``fdatasync`` the log     the same, now durable
      (one per group)
4     map edits + COMMIT        the write is there whole; it was not
      (one per group)           acknowledged, allowed
5     acknowledge               the write is there whole: in the committed
                                map, or redone from its record at the next
                                open after a power loss
====  ========================  ============================================

Step 4 is one sqlite transaction: every piece of the write appears, or
none does, and the pieces it replaced stay until it does.  Truncates and
the namespace's changes are transactions of the same database
(:meth:`Store.transaction`), durable before they return.

The data log as the map's log
-----------------------------
Each write is a *record* in the log: a header (``HEAD`` bytes: the file,
offset, length, the base's size, the write's ``stamp``, the record's own
place, a CRC-32 of the header and, for a small write, of its data), then
the data (a large write's on the next page: zeros between, ``ALIGN``).
So the log can redo the map, and most groups' COMMITs skip the WAL's
fsync (``synchronous=NORMAL``: visible to every process at once, the
replies sent after it, durable at the next sync of the WAL); one
``fdatasync`` a group (the data's) instead of two.  What holds, at any
crash:

* The database after a power loss is a *prefix* of its commits (sqlite's
  WAL), and every commit that syncs the WAL (every transaction of
  :meth:`Store.transaction` but a group's, and the groups below) makes all
  before it durable.
* The replay turn: the ``meta`` row ``wal_log`` names the one log whose
  groups may commit lazily.  Triggers delete it at every change of a file
  (an ``objects`` row: each commit of one bumps its ``gen``) or a name (a
  ``nodes`` or ``dirents`` row), in the change's own transaction, whatever
  code commits it (``db.TURN_ENDERS``: an older version's commits too).  A group of a
  locked log names its log again after its edits (``Tx.turn``), and commits
  lazily only if the row named its log when it began (:meth:`Store._apply`):
  so the first group of a log, and its first after any other change, syncs
  the WAL.  Every other change (the namespace's transactions, a group of
  another log or of a log that could not be locked, the replay, an older
  version's commit) ends the turn and syncs the WAL.  :meth:`Store.close`
  moves its log's end to where the log ends and ends its turn, in one
  durable transaction.  So while the committed row names log ``L``, no file
  or name changed since ``L``'s last group.
* A lazy group starts in the log where the previous group of the process
  ended and has no gap (``_next``), no failed or refused write (a refusal
  is known only under the write lock: the group then syncs), no large one
  (whose record has no data checksum), and follows no failed group
  (``_resync``); else it syncs.  Its writes are mapped in the log's order.
  Every record before its end was written before its data sync (a gap is
  a write not yet there).  A durable ``end`` is always a record's start,
  and moves past refused and failed records too (they count in the quota:
  their bytes are in the log).
* :meth:`Store._replay` (when a store opens, in one durable transaction,
  under sqlite's write lock) reads the ``wal_log`` log from its ``end``,
  maps the records while their checksum, length and place hold, stops at
  the first that does not (zeros, the end, a torn record: never
  acknowledged, nor anything after it), moves the log's ``end`` past them
  and ends the turn.  It replays a log only when the log's process is
  gone: a live one holds an ``flock`` on its log (:meth:`Store._open_log`),
  and its records past ``end`` are writes not committed yet.  A crash
  during the replay leaves the database as before it; the next open redoes
  it.

What the replay redoes, then:

* After a process is killed (the machine runs on: every commit is there):
  the records past ``L``'s end are writes ``L`` logged and never committed
  (in flight, or their group failed: told an error, never acknowledged; a
  closed store leaves none).  Nothing changed since ``L``'s last group (the
  turn), so redoing them is the same as their group committing just before
  the kill, in the log's order: allowed, as for step 4.  They are never
  redone over a later truncate, remove, rename, create (node ids are reused)
  or another process's write: any of those ended the turn.
* After a power loss: the database is a prefix ending at a commit that
  synced the WAL.  Every commit lost after it is a lazy group of the log
  ``L`` the row then named (any other change syncs and ends the turn: none
  was lost, or no lazy group was lost), and ``L``'s records from its durable
  end hold those groups whole, in their commit order, then at most what a
  kill leaves (above).  So every acknowledged write is there after the
  replay, and no change acknowledged after a replayed record is undone.
* The replay does not check the quota: after a power loss its records are
  writes the exact check accepted in their lost group (a refused one's
  group synced: the end is past it), and after a kill their bytes are in the
  log and counted in ``logged`` whether mapped or not: refusing them would
  free nothing.  ``logged`` may pass the quota by such records and by the
  records the exact check refused.
* Versions: logs written before this format have no ``wal_log`` row and are
  never replayed; an older version's change ends the turn (the triggers).
  Code older than this format does not replay: run after a power loss, it
  loses the lost lazy groups' writes (acknowledged) unless a store of this
  version opened the session first (see docs/instant-design.md).  Code older
  than the cleaning (see "Cleaning") must not serve a session beside this
  version: it knows no ``log_seq`` and could give a new log a removed log's id,
  which a process of this version may still hold open under that id.

Group commit
------------
Writers append their bytes in parallel (step 2), queue, and return
(:meth:`Store.write_async`: the caller is told by ``done`` later; the
synchronous :meth:`Store.write` waits for it).  Two threads per store
(started with the first write, stopped by :meth:`Store.close`) run the
groups as a pipeline of two stages.  The *syncer* takes every queued write,
makes one ``fdatasync`` of the log for them (step 3) and hands them on, in
order, to the *committer*, which takes sqlite's write lock (``BEGIN
IMMEDIATE``, waiting for another process's commit if one runs), *then* takes
every write handed on meanwhile, and the batch the syncer is syncing if any
(``_syncing``, claimed: the syncer then hands it to no one), makes the map
edits of them all and writes their statements (``Tx._flush``), waits for
that sync to return, makes one COMMIT (step 4) and calls each ``done``.
So one group's data sync runs while the previous group's map commits, or
while its own map edits are made and written (the system calls and sqlite
release the GIL; measured: the sync's return to the first reply sent
~370-490 -> ~270 µs).  What holds:

* a map is committed only after its data's sync: the committer commits a
  write only once the syncer handed it on, or returned from the sync of the
  batch the committer claimed (:meth:`Store._await_sync`); a write of that
  batch whose sync failed after it was mapped rolls the transaction back,
  and the group is mapped again without it (``_Redo``);
* groups are committed, published (read cache, quota) and told in the order
  they were synced, as one committer takes the hand-over list whole, FIFO;
* a write whose file is gone by its group's commit (the namespace's ``live``
  says so, in the group's transaction: a REMOVE committed after the write
  was logged) is refused with ``Stale``, never mapped, as a write past the
  quota is: mapped, it would make the file's overlay again under an id no
  name holds;
* a failed sync marks each of its writes with the error; the committer maps
  none of them (:meth:`Store._apply`) and tells each the error; so are the
  writes logged before the failure that a later sync covers (the failed one
  may have lost their pages, and the later one would not say so:
  :meth:`Store._sync`);
* :meth:`Store.close` ends the syncer first (nothing queued), which ends the
  committer (nothing handed on): both stages drained.

Large writes (``SMALL_WRITE`` and up) are synced only while no group commits
(``_committing``, ``_large_queued``): their writeback held the WAL's fsync up
on the same disk, and the groups only got smaller.

Writes that arrive during a flush form the next group.  So 16 writes in
flight cost one ``fdatasync`` and one WAL fsync, not sixteen of each, and
no thread of the caller is held while a group commits: a server's worker
(a few per process) hands its WRITE on and serves the next call, so a
group holds every write in flight, not one per worker.  While one process
commits, the others' writes pile up behind sqlite's lock and go in one
group each.  A crash test that holds a stage uses its hook point:
``after-sync`` runs on the syncer, ``after-commit`` on the committer.
``done`` is called after the COMMIT (step 5), never before;
a group that fails calls every ``done`` of it with the error.  The
``done`` calls of a group are made in a row, inside the writes' ``gather``
blocks (:data:`Gather`): a server sends a group's replies when the block
ends, one ``sendmsg`` per connection, not one per reply.  A writer that
queues several writes together may wake the syncer once, after the
last (``wake_later``, :data:`WakeLater`: a server's loop, at the end of
its round), so that the group holds them all rather than the first alone.
``Store.stats`` counts writes, groups and syncs.

The group's map edits are written net (:class:`_Net`): per file one
``DELETE`` of the durable pieces it replaced, one ``INSERT`` of the pieces
left, one ``UPDATE`` of size and ``gen``; statements only the last write
decides (a file's mtime) once (:meth:`Tx.last`).

Reading
-------
Each process caches the map of each file it reads (:class:`FileState`).
The cache is checked with ``PRAGMA data_version`` of a read-only connection
(no I/O: it changes only when another connection committed); when it moved,
one indexed query of the file's ``gen`` says whether *this* file changed.
Commits of this process apply their edits to the cache directly.  A read of
a file never written costs that pragma and the base's own runs.

A file whose map another process changed is loaded again whole, unless the
map it had held ``PARTIAL_MIN`` pieces or more (a VM's random writes leave
a piece each); nor is a file of that many pieces this process never read
(after a restart).  Its entry is *partial*, as a writer's (next section):
its row, and the pieces over the bytes each read asks for, loaded then and
kept with the stretches they cover (``known``), in a read transaction that
finds the file at the entry's ``gen`` (else that read is answered from its
own window, :func:`_load_window`, and nothing is kept: the entry is behind
the database until this process's commit is published, or another
process's change replaces it at the next call).  This process's commits
apply their edits to it as to a whole map, the pieces they remove that it
never held left out, the pieces they add known from then on
(:func:`_follow`).  Loading such a map whole cost 0.6-0.8 s a READ or
GETATTR at 200,000 pieces (about 2.5 s at 890,000), with the read lock
held, so every reply of the process's commits waited too: ``instant
export`` of a running VM paid it every 8 MiB, a client served by another
worker at every call, and the first READ after a restart once; at 2,000
and 4,000 pieces a GETATTR after each of the other process's commits cost
5-13 ms, 0.1-0.3 ms partial (``bench/foreign_reads.py``).

Writing a large file
--------------------
A write's map edits are made on this process's copy of the file's map (the
writer's entry, kept across groups while the file's ``gen`` is the one this
process last committed).  When another process changed the file (two
workers serving one client's ``nconnect`` connections, or another
process's cleaning), a map of ``PARTIAL_MIN`` pieces or more is not loaded
again whole, nor is one this process never loaded (after a restart): its
entry holds the row and, loaded as each change needs them inside its own
transaction, the pieces over the bytes it changes (:func:`_fill`; for a
truncate, every piece past the new end).  Its ``known`` stretches say which
pieces it holds: a piece is loaded whole, so one of the database that meets
a known stretch is held already, or was cut or dropped by this process's
change since.  Reloading the whole map at each group after the other
process's cost 3 µs a piece: two stores writing one file of 100,000 pieces
in turns made 44 writes a second, ~5,000 now (``bench/foreign_writes.py``);
at ~2,000 pieces 2,300 against 7,100 with partial entries from 512 pieces
on (``PARTIAL_MIN``, for readers too).

A partial entry costs each write a fill (two queries and the known
stretches' edits: ~50 µs of CPU a 4 KiB write in-process, a third of the
rate), so it is made whole again once it is kept: when ``SWEEP_AFTER``
groups of this process in a row found it current (one writer again: a
client reconnected to this worker, or the process restarted), each group
also loads the next ``SWEEP_PIECES`` pieces of the database's map past
its ``swept`` mark, in the group's transaction, and knows the stretch up to
the first piece it left (:func:`_sweep`; every stretch before the mark is
known).  Past the last piece the entry is whole (``known`` None).  Two
processes writing in turns remake their entries at every group, never
kept: they never sweep.  A partial read entry is swept the same way, on the
committer, once it followed ``SWEEP_AFTER`` of this process's commits in a
row (:meth:`Store._sweep_read`): each publication of a commit otherwise
marks its pieces known one by one.

Bounded memory
--------------
A map's pieces cost ~175 bytes each in a process (``Piece`` tuples in
chunks), and a VM's scattered 4 KiB writes leave a piece each: a day of
them over a large disk would hold millions, in every process that writes
or reads the file, for as long as it runs.  So no entry is kept holding
more than ``HELD_MAX`` pieces.  A writer's entry past it is remade, at its
next transaction, as a partial entry holding none (:func:`_unfilled`: its
row only), filled again as each change needs (:func:`_fill`); a reader's,
at its next fill (inside that fill's read transaction, at the same ``gen``)
or dropped at this process's next commit of its file (the next read remakes
it partial: the map is large).  The sweeps that make a kept partial entry
whole stop short of the bound (:func:`_sweepable`), so a map larger than it
is served partially for good.  What a partial entry costs is above (a fill
a write, ~50 µs); a map under the bound is not affected.

Sending from the logs' mappings
-------------------------------
A large READ on plain TCP is sent from read-only shared mappings of the
files its runs name (``nfsd.programs.nfs3.read.by_mapping``), the data logs
too (:meth:`Store.log_maps`): one copy of the bytes (the ``sendmsg``'s)
instead of two.  What makes a view of a log safe to send later (a reply
queued behind others):

* The bytes under a committed map never change: a log is append-only, a
  write reserves its record past every committed one, and the zeros ahead
  (:meth:`Store._zero_ahead`) go past the reserved end.  So a view holds the
  bytes as of the runs it was cut for: a WRITE racing the READ gives the old
  bytes or the new ones (RFC 1813 allows either), never others.
* A mapping covers every run it is asked for (a log is mapped over its size
  when asked, and mapped again when a run lies past that: the log grew); a
  run it cannot cover is left to the copying READ.  A replaced mapping lives
  as long as a view of it does (Python's ``mmap`` is freed with its last
  view), so no address is unmapped under a queued reply.
* No log is ever cut short: nothing here truncates one (the torn tail a
  replay finds stays, past ``end``), and removing a session unlinks its
  logs, which keeps a mapped file's pages.  The cleaning keeps that: it
  copies into other logs and unlinks, never truncates or rewrites in place.
  And were a log cut short anyway, only the kernel reads a view (the
  transport never copies a read-only part; TLS and UDP never get one), where
  a lost page makes ``sendmsg`` fail with EFAULT (the connection closes),
  not the process fault (SIGBUS).
* The descriptor a run names is still the log's when mapped: a mapping is
  made under the read lock, under which :meth:`close` closes the logs'
  descriptors and forgets their mappings.  Under :meth:`nowait` (a READ
  served on the loop) a mapping that would wait for that lock is not made:
  the READ copies.
* Bounded: a log is mapped again at most once every ``REMAP_INTERVAL``
  (a READ past the mapping copies meanwhile), so the mappings alive at once
  per log, each the log's size and a descriptor, are at most one plus the
  longest time a queued reply holds a view over that interval.

Space
-----
``Usage.logged`` (the sum of the logs' committed ends) is what the session
holds on disk and what the quota limits; ``Usage.live`` is what maps point
at (the cleaning below gives back the rest).  Past the quota a write is
refused with ``NoSpace`` before any byte is written (a quick check, which
counts the bytes of this process's writes still waiting for their group:
this process's writes in flight cannot log past the quota), and again under
the write lock (the exact one, counting every process's commits).  Another
process's writes in flight were logged before that check refused them, so
the logs may hold more than the quota by at most the bytes the other
processes had in flight (measured: 113 % of an 8 MiB quota, 16 × 64 KiB
writes in flight on each of three connections), never mapped, given back by
the cleaning like any overwritten bytes.
A log file runs up to ``ZERO_AHEAD`` bytes of zeros past its committed end, so
that small writes overwrite allocated blocks (:meth:`Store._zero_ahead`).

Cleaning
--------
A log is append-only, so a disk rewritten in place (a running VM's) would grow
the logs without bound: the bytes a write replaced stay where they were.  The
cleaning gives them back while the session serves, in every process that
writes it:

* *Sealing* (:meth:`Store._rotate`): once this process's log passes
  :func:`rotate_size` (``LOG_ROTATE``, or a sixteenth of a small quota), its next
  write that may wait (never the loop's: ``WouldWait``) waits until every byte
  reserved in the log is committed or given up, then one durable transaction
  registers a new log, moves the old one's end to where it ends and ends its
  replay turn; the old log's lock is let go.  A sealed log is never written
  again and has no record past its end that could ever be redone.
* *Sealing one's own* (:meth:`Store._seal_own`, at the cleaner's pass): a
  process's live log is also sealed when a write of its was refused for the
  quota since the last pass, or when it was not written since the last pass
  and the logs hold half the quota or more.  Otherwise several processes'
  live logs, each under the sealing size, could hold the whole quota in
  overwritten or removed bytes, and every write was refused until a restart
  (four workers and an 8 MiB quota did).
* *Emptying* (:meth:`Store.clean`, on the ``store-cleaner`` thread, every
  ``CLEAN_INTERVAL`` and at each sealing, on a connection of its own): sealed
  logs with at most ``CLEAN_BELOW`` of their bytes mapped (``CLEAN_PRESSED``
  once the logs hold half the quota), the most overwritten bytes
  first, not the replay turn's.  The cleaner takes the log's ``flock`` (a live
  writer holds its own log's: never emptied under it; two cleaners never empty
  one log) and copies each mapped piece into its own log through the write
  path as a *move* (``_Pending.move``): a record that is never replayed
  (``_MOVED``), whose group always syncs the map, counts nothing against the
  quota (it is what makes room) and sets no time; in that group's transaction
  only the bytes the file still has at the old place are pointed at the copy
  (:meth:`Tx.move_piece`, ``RangeMap.relocate``): a write, a truncate or a
  remove committed since the piece was read wins, in any process.
  A log another process sealed is left to it for ``FOREIGN_WAIT`` passes
  (``foreign_wait``), counted whether or not anything was committed since, and
  not at all once the logs hold half the quota: moves committed by another
  process change the file under the writer's entry, which it then remakes
  partial and fills at every write (see "Writing a large file") for as long as
  the moves go on, while its own moves its entry follows.  A sealer that died
  or stopped leaves its logs to the others after the wait.
* *Removing* (:meth:`Store._drop_log`): once its moves are committed, the log's
  row is deleted in a durable transaction if no piece points at it and it is
  not the replay turn; then its file is unlinked.  A crash between the two
  leaves a file no row names, removed by a later pass once ``ORPHAN_AGE`` old
  and unlocked (:meth:`Store._sweep_orphans`).
* *Descriptors*: a READ that found its runs before the moves reads the old
  bytes through this process's descriptor of the log (unlinked, the file lives
  on); one whose map (read before the moves) names a log this process has no
  descriptor of and whose row or file is gone reads the map again
  (``_LogGone``, :meth:`Store.runs`).  Each process closes its descriptors of
  removed logs ``RETIRE_GRACE`` after it first sees them gone
  (:meth:`Store._retire`), and log ids are never
  given twice (``meta`` ``log_seq``), so no descriptor ever stands for another
  log.  A queued reply's view keeps its mapping (see above).
* *Crashes*: a move is a group like any other: its bytes are synced before
  its map edits commit, and the log it empties stays until no piece points at
  it, so a move killed at any step either happened or did not; the replay
  stops at a move's record, and no lazy group commits past a record not yet
  committed (the gap rule of "The data log as the map's log").

With random overwrites of a working set of ``W`` bytes the logs hold about
``2 W`` plus a sealed log or two (measured in ``tests/unit/test_instant_store_clean.py``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import mmap
import os
import sqlite3
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import NamedTuple, TypeVar

from instant import db
from instant.errors import MAX_FILE_SIZE, NoSpace, Stale, TooLarge, WouldWait
from instant.rangemap import Edits, FileState, Piece, RangeMap, unchanged_runs
from merge.namespace import NamespaceError, Run, StorageIOError

log = logging.getLogger("recovery_fs.instant")

BaseRuns = Callable[[int, int], list[Run]]
"""``base(offset, count)``: the base file's runs (``merge.namespace.Reader.runs``)."""

T = TypeVar("T")
Hook = Callable[[str], None]
"""Called at each step of a write (``HOOK_POINTS``); the crash tests kill there."""

HOOK_POINTS = ("before-data", "after-data", "after-sync", "after-commit")
"""The steps of a write; ``replay`` is also called after each record redone."""
ABSENT = -1
"""``gen`` of a file without an overlay."""
CACHE_MAX = 4096
PARTIAL_MIN = 512
"""Pieces: a map this large is not loaded whole again after another process changed
the file, nor after a restart (see the notes, "Reading", "Writing a large file")."""
HELD_MAX = 500_000
"""Pieces one cached entry may hold (~175 bytes each: ~90 MiB).  Past this a
writer's entry, at its next transaction, and a reader's, at its next fill or
this process's next commit of its file, is remade partial holding none, and no
sweep takes one past it (see the notes, "Bounded memory")."""
SWEEP_AFTER = 4
"""Groups in a row that find a partial writer's entry current before they make it
whole, :data:`SWEEP_PIECES` a group (see the notes, "Writing a large file")."""
SWEEP_PIECES = 128
"""Pieces a group loads into a kept partial writer's entry (~2-3 µs each)."""
_END = (1 << 63) - 1  # past every file's end: a truncate's window
SMALL_WRITE = 64 * 1024
"""Writes below this land in a zeroed stretch of the log (:meth:`Store._zero_ahead`)."""
ZERO_AHEAD = 4 * 1024 * 1024
_HEAD = struct.Struct(">4sIqqqqq")  # magic, length, obj, offset, base_size, stamp (-1: none), pos
_CRC = struct.Struct(">I")  # crc32 of the header before it (and of a small write's data)
HEAD = _HEAD.size + _CRC.size
"""Bytes of a record's header in the data log, before the write's data."""
ALIGN = 4096
"""A large write's data starts at a multiple of this in the log."""
READ_AHEAD = 8 * 1024 * 1024
"""Log bytes read ahead of a sequential READ stream (:meth:`Store.read_ahead`)."""
REMAP_INTERVAL = 0.5
"""Seconds between two mappings of one log (:meth:`Store.log_maps`): a READ
past the last one's end copies meanwhile.  Each mapping covers the whole log
and holds a descriptor (Python's ``mmap`` keeps a ``dup``) for as long as a
queued reply holds a view of it, so a log growing under READs of its newest
bytes would otherwise be mapped once a READ, each mapping as large as the log."""
_SMALL = b"RFw1"  # a small write's record: replayable
_LARGE = b"RFW1"  # a large write's: never replayed
_MOVED = b"RFm1"  # bytes the cleaning copied: never replayed (their group syncs the map)
LOG_ROTATE = 256 * 1024 * 1024
"""A process's data log is sealed past this many bytes and a new one begun, so
that the cleaning has logs to empty (see "Space"); smaller for a small quota."""
CLEAN_INTERVAL = 5.0
"""Seconds between two looks of the cleaner at the session's logs."""
FOREIGN_WAIT = 3
"""Passes another process's cleaner leaves a sealed log to its sealer ("Cleaning")."""
CLEAN_BELOW = 0.5
"""A sealed log is emptied once at most this share of its bytes is still mapped..."""
CLEAN_PRESSED = 0.875
"""...or this share, once the logs hold half the quota (measured: at three quarters,
4 KiB rewrites of a third of a quota at ~10 MB/s were refused NOSPC within seconds)."""
MOVE_CHUNK = 1024 * 1024
"""The most bytes of one piece copied by one move (a piece may be a whole disk)."""
MOVE_BATCH = 4 * 1024 * 1024
"""Bytes of moves in flight at once: client writes take their turns between batches."""
RETIRE_GRACE = 30.0
"""Seconds a descriptor of a log the cleaning removed stays open: a READ that
found its runs just before the move still reads the log's bytes (the file is
unlinked; the descriptor keeps it), never another file's under a reused number."""
ORPHAN_AGE = 60.0
"""A log file no row names is removed once this old (a new log is named in ms)."""


@dataclass(slots=True)
class Stats:
    """Counters of this process's store, for tests and ``instant list``."""

    writes: int = 0
    bytes_written: int = 0
    groups: int = 0
    data_syncs: int = 0
    commits: int = 0
    map_syncs: int = 0  # group commits that synced the WAL (the others are lazy)
    replayed: int = 0  # writes redone from a log when the store opened
    rotations: int = 0  # logs sealed, a new one begun
    moved: int = 0  # bytes the cleaning copied out of sealed logs
    cleaned: int = 0  # logs emptied and removed by the cleaning


class Usage(NamedTuple):
    logged: int
    live: int
    quota: int | None


class _Change(NamedTuple):
    """One committed change of one file, for the read cache: ``edits`` None drops it."""

    obj: int
    old_gen: int
    new_gen: int
    size: int
    base_limit: int
    edits: Edits | None


@dataclass(slots=True)
class _Entry:
    state: FileState | None
    gen: int
    checked: int = -1
    known: RangeMap | None = None
    """A partial entry of a large file, a reader's or a writer's (see the notes,
    "Reading", "Writing a large file"): the stretches of the file whose pieces its
    map holds, every one (None: a whole entry, all of them)."""
    kept: int = 0
    """A partial entry's: the groups in a row that found it current (a writer's), or
    this process's commits it followed in a row (a reader's; see :func:`_sweep`)."""
    swept: int = 0
    """A partial entry's: every stretch before it is known (see :func:`_sweep`)."""
    near: tuple[int, int] = (0, 0)
    """A partial entry's: the known stretch ``[start, end)`` that held the last window
    asked (:func:`_covered`); a stretch once known stays known while the entry lives."""


Done = Callable[[int | Exception], None]
"""``done(size)`` once a write is durable (the file's size just after it), or
``done(error)``; called once, on the store's committer thread (a failed sync too)."""

WakeLater = Callable[[Callable[[], None]], bool]
"""Offered the syncer's wake-up when a write is queued: True if the caller
calls it soon itself (a server's loop, once it has served the calls it read
together: a group then holds them all), False to have it at once."""

Stamp = Callable[["Tx", int, int], None]
"""``stamp(tx, obj, time)``: what a write's ``stamp`` sets in its group's
transaction (the namespace: the file's mtime); called again when a write is
replayed (see "The data log as the map's log")."""

Live = Callable[["Tx", list[int]], "set[int]"]
"""``live(tx, objs)``: which of ``objs`` are still files, in a group's transaction
(the namespace: their nodes).  A write whose file was removed after it was
logged is refused then, never mapped: see "Group commit"."""

Gather = Callable[[], AbstractContextManager[object]]
"""Entered on the committer around a group's ``done`` calls, once per distinct
``gather`` of the group's writes: a caller that batches what its ``done`` calls
start (a server: the group's replies, one send per connection) ends the
batch when the block does (see "Group commit")."""


@dataclass(slots=True, eq=False)
class _Pending:
    """A write in the log, waiting for its group's COMMIT."""

    obj: int
    offset: int
    length: int
    pos: int  # the record's place in the log: its header, then the data
    span: int  # the record's bytes in the log (header, a large write's padding, data)
    base_size: int
    stamp: int | None  # the write's time, for the store's ``stamp`` (see Store)
    done: Done
    gather: Gather | None = None
    error: Exception | None = None
    size: int = 0  # the file's size once written
    move: tuple[int, int] | None = None  # the cleaning's: (log, pos) the bytes were copied from

    @property
    def data_pos(self) -> int:
        """Where the data starts in the log (the record's end less its length)."""
        return self.pos + self.span - self.length


@dataclass(slots=True)
class _Net:
    """One file's edits in one transaction, net of each other.

    A group of 16 writes to one file becomes one ``DELETE`` of the pieces it
    replaced that were durable before it, one ``INSERT`` of the pieces still
    there after it, and one ``UPDATE`` of the file's size and ``gen``: a
    piece added and replaced within the group never reaches the database.
    """

    ent: _Entry
    old_gen: int
    removed: set[int] = field(default_factory=set)  # starts of pieces durable before
    added: dict[int, Piece] = field(default_factory=dict)  # start → piece

    def add(self, edits: Edits) -> None:
        for start in edits.removed:
            if self.added.pop(start, None) is None:
                self.removed.add(start)
        for p in edits.added:
            self.added[p.start] = p


@dataclass(slots=True)
class Tx:
    """An open write transaction: the connection, and the file changes made in it.

    Map edits are gathered per file (:class:`_Net`) and written, with the
    statements given to :meth:`last`, by :meth:`_flush` just before COMMIT.
    """

    store: Store
    conn: sqlite3.Connection
    changes: list[_Change] = field(default_factory=list)
    nets: dict[int, _Net] = field(default_factory=dict)
    lasts: dict[object, tuple[str, tuple]] = field(default_factory=dict)
    turn: int | None = None  # the log named ``wal_log`` after the edits (see _flush)

    def truncate(self, obj: int, size: int, base_size: int) -> None:
        """Set the size of ``obj``; bytes past ``size`` are gone for good."""
        net = self._net(obj, base_size)
        assert net.ent.state is not None
        _fill(self.conn, obj, net.ent, size, _END)
        net.add(net.ent.state.truncate(size))

    def write_piece(self, obj: int, piece: Piece, base_size: int) -> int:
        """Map ``piece``; the file's size after it."""
        net = self._net(obj, base_size)
        st = net.ent.state
        assert st is not None
        # From the byte before it: a piece it continues is joined to it (RangeMap.put).
        _fill(self.conn, obj, net.ent, max(piece.start - 1, 0), piece.end)
        net.add(st.write(piece))
        return st.size

    def move_piece(self, obj: int, piece: Piece, old: tuple[int, int]) -> int | None:
        """Point what of ``piece``'s bytes ``obj`` still has at ``old`` (a ``(log,
        pos)``) at ``piece``, the cleaning's copy of them; the file's size, or
        None if ``obj`` has no overlay now (removed: nothing to move, and no
        overlay made for it)."""
        net = self.nets.get(obj)
        if net is None:
            if self.conn.execute("SELECT 1 FROM objects WHERE id=?", (obj,)).fetchone() is None:
                return None
            ent = self.store._wstate(self.conn, obj, 0)
        else:
            ent = net.ent
        st = ent.state
        assert st is not None
        _fill(self.conn, obj, ent, piece.start, piece.end)
        edits = st.relocate(piece.start, piece.length, old, (piece.log, piece.pos))
        if edits.removed or edits.added:
            if net is None:
                net = self.nets[obj] = _Net(ent, ent.gen)
            net.add(edits)
        return st.size

    def last(self, key: object, sql: str, params: tuple) -> None:
        """Run ``sql`` at COMMIT; a later call with the same ``key`` replaces it.

        For what only the last of a group's writes decides (a file's mtime):
        one statement per group rather than one per write.
        """
        self.lasts[key] = (sql, params)

    def drop(self, obj: int) -> None:
        """Forget ``obj``'s overlay (its file was removed)."""
        self.conn.execute("DELETE FROM pieces WHERE obj=?", (obj,))
        self.conn.execute("DELETE FROM objects WHERE id=?", (obj,))
        self.nets.pop(obj, None)
        self.store._wstates.pop(obj, None)
        self.changes.append(_Change(obj, ABSENT, ABSENT, 0, 0, None))

    def _net(self, obj: int, base_size: int) -> _Net:
        net = self.nets.get(obj)
        if net is None:
            ent = self.store._wstate(self.conn, obj, base_size)
            net = self.nets[obj] = _Net(ent, ent.gen)
        return net

    def _flush(self) -> None:
        """Write the gathered edits: one statement of each kind for the transaction.

        Run again at the block's end (:meth:`Store.transaction`) after a group's
        commit ran it early: it then writes only what was gathered since (and the
        turn's row again, unchanged)."""
        c = self.conn
        if self.nets:
            gone = [(obj, s) for obj, net in self.nets.items() for s in net.removed]
            new = [(obj, *p) for obj, net in self.nets.items() for p in net.added.values()]
            if gone:
                c.executemany("DELETE FROM pieces WHERE obj=? AND start=?", gone)
            if new:
                c.executemany("INSERT INTO pieces VALUES (?,?,?,?,?)", new)
            for obj, net in self.nets.items():
                st = net.ent.state
                assert st is not None
                gen = net.old_gen + 1
                c.execute(
                    "UPDATE objects SET size=?, base_limit=?, gen=? WHERE id=?",
                    (st.size, st.base_limit, gen, obj),
                )
                net.ent.gen = gen
                edits = Edits(sorted(net.removed), sorted(net.added.values()))
                self.changes.append(_Change(obj, net.old_gen, gen, st.size, st.base_limit, edits))
            self.nets = {}
        for sql, params in self.lasts.values():
            c.execute(sql, params)
        self.lasts = {}
        if self.turn is not None:  # after every edit: each one deleted the row (db.TURN_ENDERS)
            c.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (db.WAL_LOG, self.turn))


class Store:
    """The overlay of every file of one session, as seen by one process."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        quota: int | None = None,
        hook: Hook | None = None,
        stamp: Stamp | None = None,
        live: Live | None = None,
        rotate: int | None = None,
        clean: bool = True,
        foreign_wait: int = FOREIGN_WAIT,
    ) -> None:
        self.dir = Path(directory)
        self.foreign_wait = foreign_wait
        self.dir.mkdir(parents=True, exist_ok=True)
        self.quota = quota
        self.hook: Hook = hook or _no_hook
        self.stamp = stamp
        self.live = live
        self.stats = Stats()
        self._w = db.connect(self.dir)
        self._r = db.connect(self.dir)
        self._v = db.connect(self.dir)  # only asked for data_version (see version())
        self._vcur = self._v.cursor()  # kept: one cursor object less a version()
        self._wlock = threading.Lock()  # the write connection, _wstates
        self._rlock = threading.RLock()  # the read connection, _rstates, _fds
        self._vlock = threading.Lock()  # the version connection; taken inside _rlock, never around
        self._nowait = threading.local()  # .on: this thread is in nowait() (see there)
        self._qlock = threading.Lock()  # _queue, _synced, the threads, _closing, _sync_over
        self._qwake = threading.Condition(self._qlock)  # the syncer waits for writes
        self._swake = threading.Condition(self._qlock)  # the committer waits for synced writes
        self._queue: list[_Pending] = []  # in the log, waiting for the syncer
        self._synced: list[_Pending] = []  # synced (or failed), waiting for the committer
        self._syncing: list[_Pending] | None = None  # the syncer's batch while it syncs
        self._claimed = False  # the committer took _syncing: its writes skip _synced
        self._syncer: threading.Thread | None = None
        self._committer: threading.Thread | None = None
        self._closing = False
        self._sync_over = False  # the syncer ended: the committer ends once _synced is empty
        self._committing = False  # the committer holds a group (taken, not all told yet)
        self._large_queued = 0  # bytes of large writes in _queue (see _sync_loop)
        self._unsynced_below = 0  # log bytes a failed sync may have lost (see _sync); the syncer's
        self._wstates: dict[int, _Entry] = {}
        self._rstates: dict[int, _Entry] = {}
        # (old gen, new gen) of this process's changes from just before their
        # COMMIT until _publish has applied them to _rstates (see _rstate).
        self._publishing: dict[int, list[tuple[int, int]]] = {}
        self._plock = threading.Lock()
        self._fds: dict[int, int] = {}
        # A read-only mapping of each log read here, by its descriptor in _fds
        # (None: none made yet); see "Sending from the logs' mappings".
        self._lmaps: dict[int, memoryview | None] = {}
        # read_ahead's: where the last READ's run of each log ended; how far
        # the kernel was asked to read ahead in it.
        self._seq: dict[int, int] = {}
        self._ahead: dict[int, int] = {}
        self._mapped_at: dict[int, float] = {}  # when each log was last mapped
        self._log_lock = threading.Lock()
        self._log_id = 0
        self._log_fd = -1
        self._log_end = 0
        self._log_zeroed = 0  # the log's bytes [_log_end, _log_zeroed) are zeros on disk
        self._own_sealed: set[int] = set()
        self._foreign: dict[int, int] = {}
        self._used_hint = 0
        # Bytes reserved in the log and not yet committed or given up: counted by
        # the quick quota check: this process's writes in flight cannot log past it.
        self._pending_bytes = 0
        self._acct = threading.Lock()  # _used_hint, _pending_bytes; a leaf: no lock taken inside
        # The committer's (see "The data log as the map's log"): where the next
        # group must start in the log to commit without a WAL sync; whether the
        # log is locked (its groups may skip the sync); whether a group failed
        # (the next one syncs, until one succeeds); the WAL file, for those syncs.
        self._next = 0
        self._locked = False
        self._resync = False
        self._wal_fd = -1
        self._w_sync = "FULL"  # the write connection's synchronous setting
        # The cleaning's (see "Space"): the log is sealed once its end passes
        # _rotate_at; the cleaner's thread and wake-up; descriptors of logs gone,
        # by log id, with the time they are closed.
        self._rotate_size = rotate or rotate_size(quota)
        self._rotate_at = self._rotate_size
        self._cwake = threading.Condition(self._qlock)
        self._cleaner: threading.Thread | None = None
        self._retiring: dict[int, float] = {}
        self._moved = 0  # log bytes the moves took, not yet set against a removed log
        # (connection, its data_version) at the cleaner's last scan of the maps
        self._scanned: tuple[sqlite3.Connection, int] | None = None
        # Whether a write was refused for the quota since the cleaner's last pass,
        # and the reservations made by then (see "Space": sealing one's own log).
        self._seal_asked = False
        self._reserves = 0
        self._reserves_seen = -1
        self._replay()
        if clean:
            try:
                self._cleaner = _started("store-cleaner", self._clean_loop)
            except StorageIOError as e:  # costs space, not data: the writes go on
                log.warning("%s: no cleaning of the data logs: %s", self.dir, e)

    # -- writing -----------------------------------------------------------------

    def write(
        self,
        obj: int,
        offset: int,
        data: bytes | memoryview,
        base_size: int,
        stamp: int | None = None,
    ) -> int:
        """Write ``data`` at ``offset`` of ``obj``; durable (FILE_SYNC) when it returns.

        Returns the file's size just after this write (later writes of its
        group may have grown it further).  :meth:`write_async`, waited for.
        """
        if not data:
            return self.size(obj, base_size)

        def start(done: Done) -> None:
            self.write_async(obj, offset, data, base_size, stamp=stamp, done=done)

        return waited(start)

    def write_async(
        self,
        obj: int,
        offset: int,
        data: bytes | memoryview,
        base_size: int,
        *,
        stamp: int | None = None,
        done: Done,
        gather: Gather | None = None,
        wake_later: WakeLater | None = None,
        move: tuple[int, int] | None = None,
    ) -> None:
        """Write ``data`` at ``offset`` of ``obj``; ``done`` is told once it is durable.

        Returns as soon as the bytes are in the log (steps 1-2) and the write
        is queued for the syncer; ``done(size)`` is called after its
        group's fdatasync and COMMIT, on the committer thread, or
        ``done(error)`` if the group failed.  ``base_size`` is the base
        file's size, used if this is ``obj``'s first change.  ``stamp``: the
        write's time, given to the store's ``stamp(tx, obj, stamp)`` in the
        group's transaction and kept in the write's record (the namespace sets
        mtime with it, so a write's metadata is as durable as its data, and
        replayed with it: see "The data log as the map's log").
        ``gather``: see :data:`Gather` (not entered for a write of no bytes,
        whose ``done`` is called here and now).

        Raises (and ``done`` is never called) what fails before the write is
        queued: ``NoSpace`` past the quota or when the cache file system is
        full, a storage error.  ``data`` is not needed once this returns.

        ``move``: the cleaning's copy of bytes at ``(log, pos)`` (see "Space"),
        mapped only where the file still has those bytes there, outside the quota.
        """
        n = len(data)
        if offset < 0 or offset + n > MAX_FILE_SIZE:
            raise TooLarge(f"a write ending at {offset + n} (at most {MAX_FILE_SIZE})")
        if self._closing:  # checked again below; here: no log reopened after close
            raise StorageIOError("the session store is closed")
        if n == 0:
            done(self.size(obj, base_size))
            return
        try:
            pos, span = self._reserve(n, housekeeping=move is not None)
        except NoSpace:
            # The quick check's count of the logs may be out of date: the cleaning
            # (this process's or another's) gives bytes back without a group here.
            if not self._recount():
                raise
            pos, span = self._reserve(n, housekeeping=move is not None)
        try:
            self.hook("before-data")
            moved = move is not None
            rec = _record(
                obj, offset, data, base_size, stamp=stamp, pos=pos, span=span, moved=moved
            )
            _pwrite_all(self._log_fd, rec, pos)
            self.hook("after-data")
            p = _Pending(obj, offset, n, pos, span, base_size, stamp, done, gather, move=move)
            with self._qlock:
                if self._closing:
                    raise StorageIOError("the session store is closed")
                if self._committer is None:  # the syncer starts first (_start_threads)
                    self._start_threads()
                self._queue.append(p)
                if n >= SMALL_WRITE:
                    self._large_queued += n
                if wake_later is None or not wake_later(self._wake):
                    self._qwake.notify()
        except BaseException:
            self._unreserve(span)  # not queued: no group will settle these bytes
            raise

    def _wake(self) -> None:
        """The syncer's wake-up a ``wake_later`` took on (:data:`WakeLater`)."""
        with self._qlock:
            self._qwake.notify()

    def _start_threads(self) -> None:
        """(``_qlock`` held) The syncer and the committer, on the first write.

        The syncer first: a committer never runs without one to end it (see
        :meth:`close`).  A thread that cannot start fails this write, before it
        is queued; the next write tries again."""
        if self._syncer is None:
            self._syncer = _started("store-syncer", self._sync_loop)
        if self._committer is None:
            self._committer = _started("store-committer", self._commit_loop)

    def _sync_loop(self) -> None:
        """The syncer: takes every queued write, one ``fdatasync`` for them, hands
        them to the committer in that order; until closed with nothing queued.

        Every write it takes reaches ``_synced``, failed or not (the ``finally``),
        unless the committer claimed the batch (``_claimed``), which then waits for
        this sync's end: a write lost between the two threads would never be
        answered."""
        while True:
            with self._qlock:
                # Large writes are synced only while no group commits: their data's
                # writeback would hold the WAL's fsync up on the same disk, and the
                # groups would only get smaller (sequential 1 MiB: -9 % MB/s).
                while (
                    not self._queue or (self._large_queued and (self._committing or self._synced))
                ) and not self._closing:
                    self._qwake.wait()
                batch, self._queue = self._queue, []
                self._large_queued = 0
                if not batch:
                    self._sync_over = True
                    self._swake.notify()
                    return
                self._syncing = batch  # the committer may map it meanwhile (_commit_group)
                self._swake.notify()
            try:
                self._sync(batch)
            except BaseException:
                log.exception("a session store's data sync failed")
            finally:
                with self._qlock:
                    if not self._claimed:
                        self._synced += batch
                    self._syncing, self._claimed = None, False
                    self._swake.notify()

    def _sync(self, batch: list[_Pending]) -> None:
        """Step 3 for ``batch`` (its bytes were written before it was queued): on
        failure, each of its writes carries the error to the committer, which maps
        none of them.

        A failed ``fdatasync`` reports the lost writeback of every dirty page of
        the log once, and the next one may succeed without those pages on disk
        (Linux marks them clean).  So a failure also condemns every byte already
        reserved in the log (``_unsynced_below``): a write pwritten before it, but
        queued after this batch was taken, fails in a later group although that
        group's sync succeeds.  Conservative: such a write whose page did reach the
        disk is refused too (an EIO the client retries), never acknowledged lost."""
        try:
            os.fdatasync(self._log_fd)
            self.stats.data_syncs += 1
            self.hook("after-sync")
            for p in batch:
                if p.pos < self._unsynced_below and p.error is None:
                    p.error = StorageIOError("an earlier sync of the session's data log failed")
        except BaseException as e:
            err = e if isinstance(e, NamespaceError) else _storage_error(e)
            # Every byte pwritten so far is under _log_end (a reservation moves it
            # before its bytes are written); read without the log's lock, which a
            # sealing holds while it waits for this very batch (_rotate).
            self._unsynced_below = max(self._unsynced_below, self._log_end)
            for p in batch:
                p.error = p.error or err
            if not isinstance(e, Exception):  # the thread goes on: later writes need it
                log.error("the session store's data sync was interrupted: %r", e)

    def _commit_loop(self) -> None:
        """The committer: a group per round, until the syncer ended and nothing waits.

        It must outlive anything a round raises: a committer gone would leave
        every later write queued and its call unanswered."""
        while True:
            with self._qlock:
                while not self._synced and not self._mappable() and not self._sync_over:
                    self._swake.wait()
                if not self._synced and self._syncing is None:
                    return
            try:
                self._commit_group()
            except BaseException:
                log.exception("a session store's group commit failed")
            finally:
                with self._qlock:
                    self._committing = False
                    if self._large_queued:  # the syncer waits for this (see _sync_loop)
                        self._qwake.notify()

    def _unreserve(self, n: int) -> None:
        """Bytes reserved that no commit will count (refused, failed, or committed)."""
        with self._acct:
            self._pending_bytes -= n

    def _reserve(self, n: int, *, housekeeping: bool = False) -> tuple[int, int]:
        """A record for ``n`` bytes of data at the log's end: its ``(pos, span)``.
        A large write's data starts on a page (``ALIGN``: its header padded), as it
        did before records had headers: unaligned, a sequential 1 MiB write cost
        ~10 % more CPU.  In :meth:`nowait`, WouldWait rather than wait for the
        log's lock, open the log, seal it (:meth:`_rotate`) or write the zeros
        ahead.  ``housekeeping``: the cleaning's copy, outside the quota (it is
        what makes room)."""
        nowait = getattr(self._nowait, "on", False)
        if not self._log_lock.acquire(blocking=not nowait):
            raise WouldWait
        try:
            if self._log_fd >= 0 and self._log_end >= self._rotate_at:
                if nowait:
                    raise WouldWait
                self._rotate()
            pos = self._log_end
            span = HEAD + n if n < SMALL_WRITE else -(-(pos + HEAD) // ALIGN) * ALIGN - pos + n
            if nowait and (self._log_fd < 0 or (n < SMALL_WRITE and pos + span > self._log_zeroed)):
                raise WouldWait
            if self._closing:
                raise StorageIOError("the session store is closed")
            if self._log_fd < 0:
                self._open_log()
            with self._acct:
                held = self._used_hint + self._pending_bytes
                full = not housekeeping and self.quota is not None and held + span > self.quota
                if not full:
                    self._pending_bytes += span
            if full:
                # Overwritten bytes may be what fills it: this log sealed and the
                # rest cleaned now, by the cleaner (never waited for here).
                self._seal_asked = True
                with self._qlock:
                    self._cwake.notify()
                raise NoSpace(f"quota of {self.quota} bytes reached")
            self._reserves += 1
            self._log_end += span
            if n < SMALL_WRITE and self._log_end > self._log_zeroed:
                self._zero_ahead()
            return pos, span
        finally:
            self._log_lock.release()

    def _zero_ahead(self) -> None:
        """Write zeros past the log's end, so small writes overwrite allocated blocks.

        An append changes the file's size and extents, so its fdatasync commits
        ext4's journal as well as the data: 480 µs against 150 µs for an
        overwrite here (4 KiB, then fdatasync).  A small write lands in this
        zeroed stretch instead, and only every ``ZERO_AHEAD`` bytes one group's
        sync carries the zeros and the journal.  Large writes skip it: their
        data costs more than the journal, and the zeros would double it.  Past
        the committed end the log's bytes are never read, so the zeros are
        invisible; failing to write them costs only speed.
        """
        start = max(self._log_zeroed, self._log_end)
        try:
            _pwrite_all(self._log_fd, [bytes(ZERO_AHEAD)], start)
        except NamespaceError:
            return
        self._log_zeroed = start + ZERO_AHEAD

    def _rotate(self) -> None:
        """(``_log_lock`` held, off the loop) Seal this log and begin a new one, once
        every byte reserved in it is committed or given up: the committer's
        groups are of one log, and a sealed log's records are all behind its end
        (none is ever redone).  The old log's end moves to where it ends and its
        replay turn ends, in the new log's registering transaction; its lock is
        let go, so the cleaning may empty it.  A wait that does not end (a
        commit stuck behind another process's lock), or a new log that cannot be
        made, leaves this one in use: tried again a quarter of a log later."""
        deadline = time.monotonic() + 30
        while True:
            # The syncer woken at each look: a wake-up put off (a loop's
            # ``wake_later``, the cleaning's moves) is not waited for, nor one
            # queued after the last look.
            with self._qlock:
                self._qwake.notify()
            with self._acct:
                if self._pending_bytes == 0:
                    break
            if self._closing or time.monotonic() > deadline:
                self._rotate_at = self._log_end + self._rotate_size // 4
                return
            time.sleep(0.0005)
        old_fd, sealing = self._log_fd, (self._log_id, self._log_end)
        self._own_sealed.add(self._log_id)
        try:
            self._open_log(sealing)
        except (NamespaceError, OSError) as e:
            log.warning("%s: the data log not sealed, a new one not made: %s", self.dir, e)
            self._rotate_at = self._log_end + self._rotate_size // 4
            return
        os.close(old_fd)
        self._log_end = self._log_zeroed = self._next = self._unsynced_below = 0
        self._rotate_at = self._rotate_size
        self.stats.rotations += 1
        with self._qlock:
            self._cwake.notify()

    def _open_log(self, sealing: tuple[int, int] | None = None) -> None:
        """This process's data log: created, its name durable, then registered;
        ``sealing``: the ``(id, end)`` of the log it follows (:meth:`_rotate`).
        Log ids are never given twice (``meta`` ``log_seq``): a process that has
        a removed log open (see "Space") never takes a new one for it."""
        name = f"log-{uuid.uuid4().hex}.dat"
        fd = os.open(self.dir / name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:  # held while this process lives: the replay leaves a live log alone
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._locked = True
        except OSError:  # no locks here: every group syncs the map (never replayed)
            self._locked = False
            log.warning("cannot lock %s: every write group syncs the session's map", name)
        _fsync_dir(self.dir)
        try:
            with self.transaction() as tx:
                c = tx.conn
                if sealing is not None:
                    log_id, end = sealing
                    c.execute("UPDATE logs SET end=MAX(end, ?) WHERE id=?", (end, log_id))
                    c.execute("DELETE FROM meta WHERE key=? AND value=?", (db.WAL_LOG, log_id))
                (new_id,) = c.execute(_NEXT_LOG).fetchone()
                c.execute("INSERT INTO logs(id, name) VALUES (?, ?)", (new_id, name))
                c.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (_LOG_SEQ, new_id))
        except BaseException:
            os.close(fd)
            raise
        self._log_id = new_id
        self._log_fd = fd

    def _mappable(self) -> bool:
        """(``_qlock`` held) Whether the syncer's batch may be taken while it syncs."""
        return self._syncing is not None and not self._claimed

    def _commit_group(self) -> None:
        """Commit every synced write as one group: one COMMIT; then tell each of
        them (an error to all if the group failed).

        The group also takes the batch the syncer is syncing, if any (``_syncing``):
        its map edits are made while its ``fdatasync`` runs, and committed only once
        that returned (:meth:`_await_sync`).  A write whose sync failed meanwhile
        was mapped already: the transaction is rolled back and the group mapped
        again without it (``_Redo``)."""
        batch: list[_Pending] = []
        settled = False  # the batch's reserved bytes taken off _pending_bytes
        pend: list[_Pending] | None = None  # the syncer's batch, claimed: still syncing
        try:
            while True:
                try:
                    with self.transaction(lazy=True) as tx:
                        if not batch:
                            with self._qlock:
                                batch, self._synced = self._synced, []
                                if self._mappable():
                                    pend, self._claimed = self._syncing, True
                                    batch += pend or []
                                self._committing = True
                        must_sync, used, at, mapped = self._apply(tx, batch)
                        # The group's statements too while its data syncs: only
                        # the COMMIT must wait for the sync (one group's cycle
                        # ~800 -> ~780 µs, docs/performance-writes.md).
                        tx._flush()
                        self._await_sync(pend)
                        pend = None
                        if any(p.error is not None for p in mapped):
                            raise _Redo
                except _Redo:
                    continue
                break
            self._next = max(self._next, at)
            with self._acct:  # this batch now counts in ``used`` (or was refused): one count
                self._used_hint = used
                self._pending_bytes -= sum(p.span for p in batch)
            settled = True
            if must_sync:
                self._sync_wal()
            self._drop_cached(batch)
            self.stats.commits += 1
            self.stats.groups += 1
            self.hook("after-commit")
        except BaseException as e:  # every write of the group gets the error
            self._resync = True  # the next group's commit covers this one's records
            err = e if isinstance(e, NamespaceError) else _storage_error(e)
            if not batch:  # failed before taking its writes: no write may go unanswered
                with self._qlock:
                    batch, self._synced = self._synced, []
                    self._committing = True
            self._await_sync(pend)  # never told before its own sync ended
            for p in batch:
                p.error = p.error or err
            if not isinstance(e, Exception):  # the thread goes on: later writes need it
                log.error("the session store's group commit was interrupted: %r", e)
        if not settled:
            self._unreserve(sum(p.span for p in batch))
        with ExitStack() as gathered:
            for g in {p.gather: None for p in batch if p.gather is not None}:
                try:
                    gathered.enter_context(g())
                except Exception:  # no batch then: each done does what it would alone
                    log.exception("a write group's gather failed")
            for p in batch:
                if p.error is None and p.move is not None:
                    self.stats.moved += p.length
                elif p.error is None:
                    self.stats.writes += 1
                    self.stats.bytes_written += p.length
                try:
                    p.done(p.size if p.error is None else p.error)
                except BaseException:  # never the committer's end: later writes need it
                    log.exception("a write's completion failed")

    def _await_sync(self, pend: list[_Pending] | None) -> None:
        """Wait until the syncer is done with the batch ``pend`` the committer took."""
        if pend is not None:
            with self._qlock:
                while self._syncing is pend:
                    self._swake.wait()

    def _drop_cached(self, batch: list[_Pending]) -> None:
        """Drop the page cache of ``batch``'s large writes, durable and clean by now.

        A long run of large writes otherwise fills the page cache with pages
        nobody reads soon, and on this kind of host (a VM) taking fresh pages
        gets ten times dearer once a few hundred MiB are cached: ``pwrite``
        of 1 MiB 0.25 -> 2.5 ms of system time after ~600 MiB, the cost per
        GiB of a long sequential run growing with its size.  Dropped pages
        are reused by the next writes at the early cost.  Small writes keep
        theirs (a random 4 KiB write is often read back, and lands in the
        zeroed stretch).  Only a hint: it changes no byte, and failing costs
        only speed.
        """
        for p in batch:
            if p.length >= SMALL_WRITE:
                try:
                    os.posix_fadvise(self._log_fd, p.pos, p.span, os.POSIX_FADV_DONTNEED)
                except OSError:
                    return

    def _apply(self, tx: Tx, batch: list[_Pending]) -> tuple[bool, int, int, list[_Pending]]:
        """Map every write of ``batch`` (quota permitting), in the log's order, and
        move the log's end past all of them.  Whether the commit must sync the WAL
        (the group is not one the log's replay would redo: see the notes), the
        bytes the logs then hold, where the group ends in the log, the writes
        mapped."""
        c = tx.conn
        used, end, wal_log = c.execute(
            "SELECT (SELECT COALESCE(SUM(end), 0) FROM logs), (SELECT end FROM logs WHERE id=?),"
            " (SELECT value FROM meta WHERE key=?)",
            (self._log_id, db.WAL_LOG),
        ).fetchone()
        batch.sort(key=_by_pos)  # the order of the replay (several threads append at once)
        must_sync = not self._locked or self._resync or wal_log != self._log_id
        at = self._next
        mapped = []
        live = None if self.live is None else self.live(tx, list({p.obj: None for p in batch}))
        for p in batch:
            # A gap (a write not in this group, or one that failed to log), a write
            # that failed, a large one: the replay would stop there, so the map syncs.
            must_sync = (
                must_sync or p.pos != at or p.error is not None or p.length >= SMALL_WRITE
                or p.move is not None  # a copy's record is never redone: the map syncs
            )  # fmt: skip
            at = p.pos + p.span
            # Past every record of the group, refused or failed ones too: the replay
            # starts at the log's end and must never redo a write that was refused.
            # Their bytes are in the log: counted in ``used`` (the SUM(end) committed).
            grow = max(0, at - end)
            end += grow
            over = self.quota is not None and used + grow > self.quota and p.move is None
            used += grow
            if p.error is not None:  # its sync failed: never mapped
                continue
            if over:
                p.error = NoSpace(f"quota of {self.quota} bytes reached")
                self._seal_asked = True  # as the quick check's refusal (_reserve)
                # Synced, so that no replay starts before this record (the end moved
                # past it durably): a write told NOSPC never appears after a power loss.
                must_sync = True
                continue
            if live is not None and p.obj not in live:
                # Its file was removed after the write was logged (a REMOVE, or a
                # RENAME over it, committed first): mapped, it would bring the file's
                # overlay back under an id no name holds.  Refused, synced as above.
                p.error = Stale("the file was removed before the write was committed")
                must_sync = True
                continue
            piece = Piece(p.offset, p.length, self._log_id, p.data_pos)
            if p.move is not None:
                p.size = tx.move_piece(p.obj, piece, p.move) or 0
            else:
                p.size = self._map_write(tx, p.obj, piece, p.base_size, p.stamp)
            mapped.append(p)
        for obj, net in tx.nets.items():
            if net.ent.known is not None and net.ent.kept >= SWEEP_AFTER and _sweepable(net.ent):
                _sweep(c, obj, net.ent)
        c.execute("UPDATE logs SET end=? WHERE id=?", (end, self._log_id))
        if self._locked:  # keeps (lazy) or takes (synced) the turn; unlocked: ends it
            tx.turn = self._log_id
        return must_sync, used, at, mapped

    def _map_write(self, tx: Tx, obj: int, piece: Piece, base_size: int, stamp: int | None) -> int:
        """One logged write put in the map, with its times: what a group's commit
        (:meth:`_apply`) and the log's replay (:meth:`_replay`) do for each record.
        The file's size after it."""
        size = tx.write_piece(obj, piece, base_size)
        if stamp is not None and self.stamp is not None:
            self.stamp(tx, obj, stamp)
        return size

    def _sync_wal(self) -> None:
        """Sync sqlite's WAL (what ``synchronous=FULL`` does at a COMMIT): the
        group's map, and every lazy commit before it, durable.  Failed, the group
        fails (its writes told the error, though visible: never acknowledged
        before durable), and every group syncs until one succeeds."""
        try:
            if self._wal_fd < 0:
                self._wal_fd = os.open(self.dir / f"{db.DB_NAME}-wal", os.O_RDONLY | os.O_CLOEXEC)
            os.fdatasync(self._wal_fd)
        except BaseException:
            self._resync = True
            raise
        self._resync = False
        self.stats.map_syncs += 1

    def _replay(self) -> None:
        """Redo the writes of the lazy log that its map does not have (see the notes).

        In one durable transaction (a crash during it redoes it all at the next
        open), under sqlite's write lock (no group commits meanwhile), and only
        once the log's process is gone (its lock on the log free): a live one's
        records past the log's end are writes it has not committed yet.  Looked
        for first on the read connection: with no log to redo (the common open),
        no write lock is taken (it would wait for another process's commit)."""
        if self.read_one("SELECT 1 FROM meta WHERE key=?", (db.WAL_LOG,)) is None:
            return  # set later, it is a live process's own log: not to redo
        with self.transaction() as tx:
            row = tx.conn.execute(
                "SELECT l.id, l.name, l.end FROM meta m JOIN logs l ON l.id = m.value"
                " WHERE m.key=?",
                (db.WAL_LOG,),
            ).fetchone()
            if row is None:
                return
            log_id, name, end = row
            try:
                fd = os.open(self.dir / name, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                tx.conn.execute("DELETE FROM meta WHERE key=?", (db.WAL_LOG,))
                return
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return  # its process is alive: nothing of it was lost
                # Redone once: the turn ends with this commit (a record left past
                # the new end is never redone, whatever changes after it).
                tx.conn.execute("DELETE FROM meta WHERE key=?", (db.WAL_LOG,))
                pos = end
                while (rec := _read_record(fd, pos)) is not None:
                    piece = Piece(rec.offset, rec.length, log_id, pos + HEAD)
                    self._map_write(tx, rec.obj, piece, rec.base_size, rec.stamp)
                    pos += HEAD + rec.length
                    self.stats.replayed += 1
                    self.hook("replay")
                if pos != end:
                    tx.conn.execute("UPDATE logs SET end=? WHERE id=?", (pos, log_id))
                    log.info("%s: %d writes redone from its log", self.dir, self.stats.replayed)
            finally:
                os.close(fd)

    @contextmanager
    def transaction(self, *, lazy: bool = False) -> Iterator[Tx]:
        """A write transaction, durable when the block ends (for truncates and names).

        ``lazy`` (a group's commit only): committed without syncing sqlite's WAL
        (``synchronous=NORMAL``): visible to every process at once, durable at
        the next sync of the WAL (any process's durable commit, or the group's
        own :meth:`_sync_wal`).  A commit that is not lazy syncs the WAL, and with
        it every lazy commit before it.  In :meth:`nowait`: :class:`WouldWait`,
        before anything is begun (it would wait for the write lock and a sync)."""
        if getattr(self._nowait, "on", False):
            raise WouldWait
        with self._wlock:
            want = "NORMAL" if lazy else "FULL"
            if self._w_sync != want:  # sqlite takes it only outside a transaction
                self._w.execute(f"PRAGMA synchronous={want}")
                self._w_sync = want
            self._w.execute("BEGIN IMMEDIATE")
            tx = Tx(self, self._w)
            marked = False
            try:
                yield tx
                tx._flush()
                self._mark(tx.changes, publishing=True)
                marked = True
                self._w.execute("COMMIT")
            except BaseException as e:
                try:
                    # A COMMIT that failed (SQLITE_FULL: the cache file system full)
                    # has rolled back already, and ROLLBACK would raise over ``e``.
                    if self._w.in_transaction:
                        self._w.execute("ROLLBACK")
                finally:
                    self._wstates.clear()
                    if marked:
                        self._mark(tx.changes, publishing=False)
                if isinstance(e, sqlite3.Error):  # a client is told NOSPC or IO, not a fault
                    raise _storage_error(e) from e
                raise
        try:
            self._publish(tx.changes)
        finally:
            self._mark(tx.changes, publishing=False)

    def _mark(self, changes: list[_Change], *, publishing: bool) -> None:
        with self._plock:
            for ch in changes:
                if ch.edits is None:
                    continue
                if publishing:
                    self._publishing.setdefault(ch.obj, []).append((ch.old_gen, ch.new_gen))
                elif (spans := self._publishing.get(ch.obj)) is not None:
                    spans.remove((ch.old_gen, ch.new_gen))
                    if not spans:
                        del self._publishing[ch.obj]

    def _being_published(self, obj: int, have: int, gen: int) -> bool:
        """Whether the committed ``gen`` is ``have`` moved on only by this process's own
        commits not yet published (so the cached entry will follow without a reload)."""
        with self._plock:
            spans = sorted(self._publishing.get(obj, ()))
        for old, new in spans:
            if old == have:
                have = new
                if have == gen:
                    return True
        return False

    def _wstate(self, conn: sqlite3.Connection, obj: int, base_size: int) -> _Entry:
        """``obj``'s entry for changing it, inside a write transaction; created if new."""
        row = conn.execute("SELECT gen FROM objects WHERE id=?", (obj,)).fetchone()
        if row is None:
            conn.execute(
                "INSERT INTO objects(id, size, base_limit, gen) VALUES (?,?,?,0)",
                (obj, base_size, base_size),
            )
            ent = _Entry(FileState(base_size, base_size), 0)
        else:
            cached = self._wstates.get(obj)
            if cached is not None and cached.gen == row[0] and not _overfull(cached):
                cached.kept += 1
                return cached
            if cached is not None and _overfull(cached):
                ent = _unfilled(conn, obj)  # current, but too large to keep: refilled as used
            else:
                ent = _unfilled(conn, obj) if _large(conn, obj, cached) else _load(conn, obj)
        _bounded_put(self._wstates, obj, ent)
        return ent

    def _publish(self, changes: list[_Change]) -> None:
        """Apply committed changes to the read cache, or drop what it cannot follow."""
        if not changes:
            return
        with self._rlock:
            for ch in changes:
                ent = self._rstates.get(ch.obj)
                if ent is None:
                    continue
                if ch.edits is not None and ent.state is not None and ent.gen >= ch.new_gen:
                    continue  # reloaded since: the entry already holds this change
                if ch.edits is None or ent.state is None or ent.gen != ch.old_gen:
                    del self._rstates[ch.obj]
                    continue
                _follow(ent, ch.edits)
                ent.state.size, ent.state.base_limit = ch.size, ch.base_limit
                ent.gen = ch.new_gen
                if _overfull(ent):  # the next read remakes it partial (its map is large)
                    del self._rstates[ch.obj]
                    continue
                if ent.known is not None:
                    ent.kept += 1
                    if ent.kept >= SWEEP_AFTER and _sweepable(ent):
                        self._sweep_read(ch.obj, ent)

    def _sweep_read(self, obj: int, ent: _Entry) -> None:
        """(Read lock held) A step of :func:`_sweep` for a partial read entry that
        followed ``SWEEP_AFTER`` of this process's commits in a row, in a read
        transaction that finds the file at the entry's ``gen`` (else nothing: the
        next call remakes it).  Its edits of a map held partially cost each
        commit's publication a known stretch a piece (:func:`_follow`).  The
        commit is done: a failure here drops the entry, never fails the group."""
        try:
            with self.read() as conn:
                row = conn.execute("SELECT gen FROM objects WHERE id=?", (obj,)).fetchone()
                if row is not None and row[0] == ent.gen:
                    _sweep(conn, obj, ent)
        except Exception:
            log.debug("%s: a read entry's sweep failed", self.dir, exc_info=True)
            if self._rstates.get(obj) is ent:
                del self._rstates[obj]

    # -- reading -----------------------------------------------------------------

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """The read connection, in one read transaction (a consistent snapshot)."""
        self._rtake()
        try:
            if self._r.in_transaction:
                yield self._r
                return
            self._r.execute("BEGIN")
            try:
                yield self._r
            except sqlite3.Error as e:  # a client is told IO, not a fault
                raise _storage_error(e) from e
            finally:
                self._r.execute("COMMIT")
        finally:
            self._rlock.release()

    def read_one(self, sql: str, params: tuple[object, ...]) -> tuple | None:
        """The first row of one query on the read connection: what :meth:`read` gives
        for a single statement, without its ``BEGIN`` and ``COMMIT`` (one statement
        is a snapshot of its own; inside a :meth:`read` block, that block's)."""
        self._rtake()
        try:
            cur = self._r.execute(sql, params)
            try:
                return cur.fetchone()
            finally:
                cur.close()  # its statement reset now: no read transaction left open
        finally:
            self._rlock.release()

    def nowait(self) -> AbstractContextManager[None]:
        """Read answers for a thread that must not wait (the server's loop): in the
        block, the read lock is taken at once or :class:`WouldWait` (:meth:`_rtake`),
        each time it is needed, not held for the whole block; a file's map that
        would have to be loaded (another thread may hold the lock for seconds
        doing that for a large one) is :class:`WouldWait` too, and so is a write
        that would wait for the log (:meth:`_reserve`), and a write transaction
        (:meth:`transaction`).  The caller hands the
        call to a thread that may wait; nothing was changed.

        Not holding the lock for the block: the loop's small WRITE held it while
        it checked, wrote its bytes and queued them, and the committer's
        ``_publish`` waited for it (a context switch) or the next inline call
        found it taken and went to a worker.  Each read is a snapshot of its own,
        as on a worker, which never held the lock across a call's reads either.
        A small class, not a generator (``contextmanager``): every inline call
        enters it, 0.3 against 0.8 µs."""
        return _NoWait(self._nowait)

    def _rtake(self) -> None:
        """Take the read lock; in :meth:`nowait`, at once or :class:`WouldWait`."""
        if not self._rlock.acquire(blocking=not getattr(self._nowait, "on", False)):
            raise WouldWait

    def version(self) -> int:
        """Moves whenever a connection (of any process, this one's writer too) committed.

        ``PRAGMA data_version`` of a connection of its own, which never writes:
        no I/O beyond a look at the WAL index, and no wait for the read
        connection, which another thread may hold for seconds while it loads
        a large map.  Callers that ask several things of one call pass it on
        (``version=``), so a call costs one such look, not one per question.
        """
        with self._vlock:
            return self._vcur.execute("PRAGMA data_version").fetchone()[0]

    def state(self, obj: int, version: int | None = None) -> FileState | None:
        """A copy-free look at ``obj``'s overlay (None: never changed); for sizes
        (of a large file's, a partial entry: the map may hold none of its pieces).

        An entry already checked at ``version`` is answered without the read
        lock (a dict read): a GETATTR never waits for another file's reload.
        """
        if version is not None:
            ent = self._rstates.get(obj)
            if ent is not None and ent.checked == version:
                return ent.state
        self._rtake()
        try:
            return self._rstate(obj, (0, 0), version).state
        finally:
            self._rlock.release()

    def data_from(self, obj: int, offset: int, base_size: int) -> int:
        """The first byte at or after ``offset`` that may hold data, or the file's
        size if none does (then at least ``offset``): ``SEEK_DATA`` for ``instant
        export``, which skips a hole of any size in one step (a client may grow a
        file to 2^63 bytes).  The base's bytes while they show count as data (its
        own holes are the base's file system's), and so does every piece; as of
        one read transaction of the database."""
        with self.read() as conn:
            row = conn.execute("SELECT size, base_limit FROM objects WHERE id=?", (obj,)).fetchone()
            if row is None:  # never changed: the base as it is
                return offset if offset < base_size else max(offset, base_size)
            size, base_limit = row
            if offset >= size:
                return offset
            if offset < base_limit:
                return offset
            before = conn.execute(
                "SELECT start + length FROM pieces WHERE obj=? AND start<=? "
                "ORDER BY start DESC LIMIT 1",
                (obj, offset),
            ).fetchone()
            if before is not None and before[0] > offset:
                return offset
            after = conn.execute(
                "SELECT start FROM pieces WHERE obj=? AND start>? ORDER BY start LIMIT 1",
                (obj, offset),
            ).fetchone()
            return size if after is None else min(after[0], size)

    def size(self, obj: int, base_size: int, version: int | None = None) -> int:
        st = self.state(obj, version)
        return base_size if st is None else st.size

    def runs(
        self,
        obj: int,
        offset: int,
        count: int,
        base: BaseRuns,
        base_size: int,
        *,
        version: int | None = None,
    ) -> list[Run]:
        """``[offset, offset+count)`` of ``obj`` as runs of the base, the logs and zeros.

        A file never changed, as already checked at ``version``, is answered
        without the read lock (as :meth:`state`): the base's runs alone."""
        if version is not None:
            ent = self._rstates.get(obj)
            if ent is not None and ent.checked == version and ent.state is None:
                return unchanged_runs(base_size, offset, count, base)
        self._rtake()
        try:
            for _ in range(8):
                try:
                    st = self._rstate(obj, (offset, offset + count), version).state
                    if st is None:  # never changed: the base's bytes as they are
                        return unchanged_runs(base_size, offset, count, base)
                    return st.runs(offset, count, base, self._fd_of)
                except _LogGone:  # a map read before a cleaning moved it: read it again
                    self._rstates.pop(obj, None)
                    version = None  # each time a newer map (another cleaner may be at work)
            raise StorageIOError("the session's logs moved under eight reads")
        finally:
            self._rlock.release()

    def _rstate(self, obj: int, window: tuple[int, int], version: int | None = None) -> _Entry:
        """``obj``'s read entry holding the pieces over ``window``, checked against
        ``version`` (``version()`` if not given).

        A large file (see the notes, "Reading"): a partial entry, filled over
        ``window``; or, when that cannot be kept, an entry of the window alone."""
        if version is None:
            version = self.version()
        ent = self._rstates.get(obj)
        if ent is not None and ent.checked == version:
            return self._filled(obj, ent, window)
        row = self._r.execute("SELECT gen FROM objects WHERE id=?", (obj,)).fetchone()
        gen = ABSENT if row is None else row[0]
        # This process's commit of obj is between COMMIT and _publish: answer from
        # the entry as it was (the write is not acknowledged yet) rather than reload
        # the whole map, which _publish would then throw away.  ``checked`` stays,
        # so the next call looks again.
        if (
            ent is not None
            and ent.state is not None
            and ent.gen != gen
            and self._being_published(obj, ent.gen, gen)
        ):
            return self._filled(obj, ent, window)  # a window of its own, if any
        if ent is None or ent.gen != gen:
            large = _large(self._r, obj, ent)
            self._rstates.pop(obj, None)
            if not large and getattr(self._nowait, "on", False):
                raise WouldWait
            with self.read() as conn:
                ent = _unfilled(conn, obj) if large else _load(conn, obj)
            _bounded_put(self._rstates, obj, ent)
        ent.checked = version
        return self._filled(obj, ent, window)

    def _filled(self, obj: int, ent: _Entry, window: tuple[int, int]) -> _Entry:
        """(Read lock held) ``ent`` holding the pieces over ``window``: a partial entry
        filled there if the database still has the file at the entry's ``gen``, else
        an entry of that window alone (not kept)."""
        if ent.known is None or ent.state is None or _covered(ent, *window):
            return ent
        try:
            with self.read() as conn:
                row = conn.execute("SELECT gen FROM objects WHERE id=?", (obj,)).fetchone()
                if row is None or row[0] != ent.gen:
                    return _load_window(conn, obj, *window)
                if _overfull(ent):  # remade holding none, at the same gen (this transaction)
                    fresh = _unfilled(conn, obj)
                    fresh.checked = ent.checked
                    if self._rstates.get(obj) is ent:
                        self._rstates[obj] = fresh
                    ent = fresh
                _fill(conn, obj, ent, *window)
        except BaseException:
            if self._rstates.get(obj) is ent:  # whatever _fill did, it is not kept
                del self._rstates[obj]
            raise
        return ent

    def _fd_of(self, log: int) -> int:
        """(Read lock held) This process's descriptor of a log; :class:`_LogGone` if
        the cleaning removed it (a map older than the moves names it)."""
        fd = self._fds.get(log)
        if fd is None:
            row = self._r.execute("SELECT name FROM logs WHERE id=?", (log,)).fetchone()
            try:
                if row is None:
                    raise FileNotFoundError(log)
                fd = self._fds[log] = os.open(self.dir / row[0], os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError as e:  # its row, or its file, gone by now
                raise _LogGone(log) from e
            self._lmaps[fd] = None
        return fd

    def log_maps(self, runs: list[Run]) -> dict[int, memoryview]:
        """Read-only mappings of the data logs that ``runs`` (of :meth:`runs`) name,
        by descriptor, each covering every run of its log: for a READ sent from
        them (``nfsd.programs.nfs3.read.by_mapping``).  A log none can cover
        (no mapping possible) is left out, and the READ copies.

        A mapping is made on first need and made again, over the log's size
        then, when a run lies past it (the log grew); the one replaced lives
        on as long as a view of it does (a queued reply).  Only the kernel may
        read the views (a ``sendmsg``): see "Sending from the logs' mappings".
        """
        out: dict[int, memoryview] = {}
        lmaps = self._lmaps
        if lmaps.keys().isdisjoint(map(_FD, runs)):  # a READ of the base alone: in C
            return out
        for fd, start, length in runs:
            if fd not in lmaps:
                continue  # the base's or zeros
            view = out.get(fd)
            if view is None:
                view = lmaps.get(fd)
            if view is None or start + length > len(view):
                view = self._map_log(fd, start + length)
                if view is None:
                    out.pop(fd, None)
                    continue
            out[fd] = view
        return out

    def read_ahead(self, runs: list[Run]) -> None:
        """Start reading the log bytes after ``runs``' log runs into the page
        cache (``POSIX_FADV_WILLNEED``: the kernel reads them without waiting),
        when they continue a sequential stream of READs in that log: a
        sequential READ of a region rewritten by large writes, whose pages
        were dropped once durable (:meth:`_drop_cached`), then finds the next
        ones cached and is sent from the mapping.  A run that starts far from
        where the last one of its log ended starts no read ahead (random READs
        read nothing more).  Only a hint: it changes no byte, failing costs
        only speed; it may wait for the disk's queue, so not on a loop."""
        for fd, start, length in runs:
            if fd not in self._lmaps:
                continue
            end = start + length
            last = self._seq.get(fd)
            self._seq[fd] = end
            if last is None or not last - length <= start <= last + length:
                continue  # not the next READ of a stream (random, strided, backwards)
            done = self._ahead.get(fd, 0)
            lo = done if end <= done <= end + READ_AHEAD else end
            if end + READ_AHEAD - lo < READ_AHEAD // 2:
                continue  # most of what follows is asked for already
            with contextlib.suppress(OSError):
                os.posix_fadvise(fd, lo, end + READ_AHEAD - lo, os.POSIX_FADV_WILLNEED)
            self._ahead[fd] = end + READ_AHEAD

    def _map_log(self, fd: int, end: int) -> memoryview | None:
        """A mapping of the log open as ``fd`` over its size now (None if that
        does not reach ``end``, or it cannot be mapped); kept for the next READs.
        Under the read lock: :meth:`close` closes the descriptor under it, so
        ``fd`` is still the log's here."""
        if not self._rlock.acquire(blocking=not getattr(self._nowait, "on", False)):
            return None  # on the loop, the lock held elsewhere: the READ copies
        try:
            if fd not in self._lmaps:
                return None  # closed meanwhile
            view = self._lmaps[fd]
            if view is not None and end <= len(view):
                return view
            now = time.monotonic()
            if view is not None and now - self._mapped_at.get(fd, 0.0) < REMAP_INTERVAL:
                return None  # mapped lately: the READ of the newest bytes copies
            try:
                size = os.fstat(fd).st_size
                if size < end:
                    return None
                view = memoryview(mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ))
            except (OSError, ValueError):
                return None
            self._lmaps[fd] = view
            self._mapped_at[fd] = now
            return view
        finally:
            self._rlock.release()

    def _recount(self) -> bool:
        """The quick quota check's count of the logs read again (on the loop only
        if the read lock is free: WouldWait); whether it went down."""
        (logged,) = self.read_one("SELECT COALESCE(SUM(end), 0) FROM logs", ()) or (0,)
        with self._acct:
            lower, self._used_hint = logged < self._used_hint, logged
        return lower

    def usage(self) -> Usage:
        with self._rlock:
            logged = self._r.execute("SELECT COALESCE(SUM(end), 0) FROM logs").fetchone()[0]
            live = self._r.execute("SELECT COALESCE(SUM(length), 0) FROM pieces").fetchone()[0]
        with self._acct:
            self._used_hint = logged
        return Usage(logged, live, self.quota)

    def close(self) -> None:
        """Commit what is queued (the syncer's and the committer's last groups), then close."""
        with self._qlock:
            self._closing = True
            self._qwake.notify()
            self._cwake.notify()
            threads = (self._syncer, self._committer, self._cleaner)
        for t in threads:  # the syncer first: its end is what ends the committer
            if t is not None and t is not threading.current_thread():
                t.join()
        if self._log_fd >= 0 and threading.current_thread() not in threads:
            self._end_turn()
        # The log's lock first, alone: a write opening or sealing a log holds it
        # while it takes _wlock (_open_log), so taking it under _wlock deadlocks.
        with self._log_lock:  # no write takes the descriptor once it is closed
            fd, self._log_fd = self._log_fd, -1
        with self._rlock, self._wlock:
            for rfd in self._fds.values():
                os.close(rfd)
            self._fds.clear()
            self._lmaps.clear()  # a view still queued keeps its mapping
            if fd >= 0:
                os.close(fd)
            if self._wal_fd >= 0:
                os.close(self._wal_fd)
                self._wal_fd = -1
            self._r.close()
            self._w.close()
            with self._vlock:
                self._v.close()

    def _end_turn(self) -> None:
        """(Closing, both stages drained) The log's end moved to where the log ends,
        and its replay turn ended, in one durable transaction: the records past
        the committed end (writes refused, failed, or given up at close) are
        never redone, and a later group of another process needs no WAL sync
        to be safe from this log's replay.  Failing costs nothing but that: the
        next open may redo those records (allowed: none was acknowledged) as long
        as no file or name changed since (``db.TURN_ENDERS``)."""
        try:
            with self.transaction() as tx:
                tx.conn.execute(
                    "UPDATE logs SET end=MAX(end, ?) WHERE id=?", (self._log_end, self._log_id)
                )
                tx.conn.execute(
                    "DELETE FROM meta WHERE key=? AND value=?", (db.WAL_LOG, self._log_id)
                )
        except (sqlite3.Error, OSError) as e:
            log.warning("%s: the data log's end not recorded at close: %s", self.dir, e)

    # -- cleaning (see "Space") -------------------------------------------------

    def _clean_loop(self) -> None:
        """The cleaner: a pass every ``CLEAN_INTERVAL`` or when a log was sealed,
        on a connection of its own (its scans of the maps hold no lock of the
        readers'); until the store closes."""
        conn: sqlite3.Connection | None = None
        try:
            while True:
                with self._qlock:
                    if not self._closing:
                        self._cwake.wait(CLEAN_INTERVAL)
                    if self._closing:
                        return
                try:
                    if conn is None:
                        conn = db.connect(self.dir)
                    self.clean(conn)
                except Exception:  # space, not data: the next pass tries again
                    if not self.dir.is_dir():
                        return  # the session was stopped: its store is closed soon
                    if not self._closing:
                        log.exception("%s: a cleaning pass failed", self.dir)
        finally:
            if conn is not None:
                conn.close()

    def clean(self, conn: sqlite3.Connection) -> int:
        """One pass: descriptors of removed logs closed once their grace is over,
        forgotten log files removed, then every sealed log mostly overwritten
        emptied into this process's log and removed.  The logs removed.

        The maps are scanned (every piece: ``_victims``) only when a commit was
        made since the last scan (``PRAGMA data_version`` of ``conn``, which
        never writes): an idle session costs a look, not a scan, a pass."""
        self._retire(conn)
        self._sweep_orphans(conn)
        self._seal_own(conn)
        seen = (conn, conn.execute("PRAGMA data_version").fetchone()[0])  # per connection
        if seen == self._scanned:
            return 0
        self._scanned = seen
        emptied: list[tuple[int, int, str]] = []  # (descriptor holding its flock, id, name)
        try:
            victims, pressed = self._victims(conn)
            listed = {log_id for log_id, _ in victims}
            self._foreign = {k: v for k, v in self._foreign.items() if k in listed}
            for log_id, name in victims:
                if self._closing:
                    break
                if log_id not in self._own_sealed and not pressed:
                    self._foreign[log_id] = self._foreign.get(log_id, 0) + 1
                    if self._foreign[log_id] <= self.foreign_wait:
                        self._scanned = None  # the next pass looks again, commits or not
                        continue
                fd = self._claim(log_id, name)
                if fd is not None:
                    emptied.append((fd, log_id, name))
                    self._moved += self._move_out(fd, log_id, conn)
            removed = 0
            for _, log_id, name in emptied:
                if not self._closing and self._drop_log(log_id, name, self._moved):
                    removed, self._moved = removed + 1, 0
            return removed
        finally:
            for fd, _, _ in emptied:
                os.close(fd)

    def _seal_own(self, conn: sqlite3.Connection) -> None:
        """This process's log sealed (:meth:`_rotate`), so that any process's
        cleaner may empty it, when it holds bytes and a write was refused for the
        quota since the last pass, or the logs hold half the quota or more and
        nothing was written into it since the last pass.

        Only a sealed log is ever emptied, and a log is sealed at a write past
        :func:`rotate_size`: each process's live log, under that size, held its
        overwritten and removed bytes for good.  With four worker processes
        and a quota of 16 MiB or less (or sixteen and any quota), their four
        live logs could hold the whole quota, dead, and every write was refused
        until the server restarted.  At most one seal a log (a new log holds
        nothing), so a full session costs a log file a process, not one a pass."""
        asked, self._seal_asked = self._seal_asked, False
        idle, self._reserves_seen = self._reserves == self._reserves_seen, self._reserves
        if self._log_fd < 0 or self._log_end == 0 or not (asked or idle) or self.quota is None:
            return
        if not asked:
            logged = conn.execute("SELECT COALESCE(SUM(end), 0) FROM logs").fetchone()[0]
            if logged * 2 < self.quota:
                return
        with self._log_lock:
            if self._log_fd >= 0 and self._log_end > 0 and not self._closing:
                self._rotate()

    def _victims(self, conn: sqlite3.Connection) -> tuple[list[tuple[int, str]], bool]:
        """Sealed logs worth emptying, the most overwritten bytes first: at most
        ``CLEAN_BELOW`` of their bytes still mapped (``CLEAN_PRESSED`` once the logs
        hold half the quota).  Never this process's log, nor the one
        whose replay turn it is (it ends at the next change of anyone's)."""
        logs = conn.execute("SELECT id, name, end FROM logs").fetchall()
        mapped = dict(conn.execute("SELECT log, SUM(length) FROM pieces GROUP BY log").fetchall())
        turn = conn.execute("SELECT value FROM meta WHERE key=?", (db.WAL_LOG,)).fetchone()
        logged = sum(end for _, _, end in logs)
        pressed = self.quota is not None and logged * 2 >= self.quota
        share = CLEAN_PRESSED if pressed else CLEAN_BELOW
        found = [
            (end - mapped.get(log_id, 0), log_id, name)
            for log_id, name, end in logs
            if log_id != self._log_id
            and (turn is None or turn[0] != log_id)
            and mapped.get(log_id, 0) <= end * share
        ]
        return [(log_id, name) for _, log_id, name in sorted(found, reverse=True)], pressed

    def _claim(self, log_id: int, name: str) -> int | None:
        """The log opened and ``flock``ed, for this cleaner alone; None if another
        process writes or empties it (its lock), or it is gone (its row then too,
        if no piece points at it)."""
        try:
            return _locked(self.dir / name)
        except FileNotFoundError:
            self._drop_log(log_id, name)
            return None

    def _move_out(self, fd: int, log_id: int, conn: sqlite3.Connection) -> int:
        """The log's mapped pieces (as the map is now, in the log's order) each
        copied through the write path as a move (``MOVE_CHUNK`` at
        most a copy), ``MOVE_BATCH`` bytes in flight at most: its group maps it
        only where the file still has those bytes in this log (a write since, a
        truncate or a remove wins), syncs the map, and never counts in the quota."""
        pieces = conn.execute(
            "SELECT obj, start, length, pos FROM pieces WHERE log=? ORDER BY pos", (log_id,)
        ).fetchall()
        gate = threading.Condition()
        flight = [0]

        def done(n: int) -> Done:
            def settled(outcome: int | Exception) -> None:
                with gate:
                    flight[0] -= n
                    gate.notify()

            return settled

        for obj, start, length, pos in pieces:
            for k in range(0, length, MOVE_CHUNK):
                n = min(MOVE_CHUNK, length - k)
                data = os.pread(fd, n, pos + k)
                if len(data) < n:
                    raise StorageIOError(f"log {log_id} is shorter than its map")
                with gate:
                    flight[0] += n
                try:
                    self.write_async(
                        obj, start + k, data, 0, done=done(n), move=(log_id, pos + k),
                        wake_later=_later,
                    )  # fmt: skip
                except BaseException:
                    with gate:
                        flight[0] -= n
                    raise
                if flight[0] >= MOVE_BATCH:
                    self._wake()
                    with gate:
                        gate.wait_for(lambda: flight[0] < MOVE_BATCH // 2)
        self._wake()
        with gate:
            gate.wait_for(lambda: flight[0] == 0)
        return sum(length + HEAD for _, _, length, _ in pieces)  # about: headers, no padding

    def _drop_log(self, log_id: int, name: str, moved: int = 0) -> bool:
        """Remove a log no map points at: its row, then its file.  The quota counts
        it no more; a crash between the two leaves a file no row names, which
        :meth:`_sweep_orphans` removes.  ``moved``: log bytes the pass's moves took
        in this process's log, not given back (``meta`` ``given_back``: what
        ``instant list`` adds to the logs' bytes for the bytes ever written)."""
        with self.transaction() as tx:
            row = tx.conn.execute(
                "SELECT end FROM logs WHERE id=? AND NOT EXISTS (SELECT 1 FROM pieces WHERE log=?)"
                " AND NOT EXISTS (SELECT 1 FROM meta WHERE key=? AND value=?)",
                (log_id, log_id, db.WAL_LOG, log_id),
            ).fetchone()
            if row is not None:
                tx.conn.execute("DELETE FROM logs WHERE id=?", (log_id,))
                tx.conn.execute(
                    "INSERT INTO meta VALUES (?, ?)"
                    " ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
                    (db.GIVEN_BACK, row[0] - moved),
                )
        if row is None:
            return False
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.dir / name)
        _fsync_dir(self.dir)
        self.stats.cleaned += 1
        log.info("%s: data log %s emptied and removed", self.dir, name)
        return True

    def _retire(self, conn: sqlite3.Connection) -> None:
        """Close this process's descriptors of logs removed ``RETIRE_GRACE`` ago
        (the grace: see there; ids are never reused, so a descriptor open for a
        removed log's id is never asked for a new log's bytes)."""
        now = time.monotonic()
        with self._rlock:  # no log opened by a READ between the look and the sweep
            ids = {row[0] for row in conn.execute("SELECT id FROM logs")}
            for log_id in [i for i in self._retiring if i in ids]:
                del self._retiring[log_id]  # seen gone by a stale look: not gone
            for log_id in [i for i in self._fds if i not in ids]:
                at = self._retiring.setdefault(log_id, now + RETIRE_GRACE)
                if at <= now:
                    fd = self._fds.pop(log_id)
                    del self._retiring[log_id]
                    for d in (self._lmaps, self._seq, self._ahead, self._mapped_at):
                        d.pop(fd, None)
                    os.close(fd)

    def _sweep_orphans(self, conn: sqlite3.Connection) -> None:
        """Remove log files no row names, ``ORPHAN_AGE`` old and locked by no one:
        a log removed by a cleaner that died before its ``unlink``, or one made by
        a process that died before naming it.  A live process's new log is locked
        from the moment it is made, and named within milliseconds."""
        names = {row[0] for row in conn.execute("SELECT name FROM logs")}
        now = time.time()
        for entry in os.scandir(self.dir):
            if not entry.name.startswith("log-") or not entry.name.endswith(".dat"):
                continue
            if entry.name in names:
                continue
            try:
                if now - entry.stat().st_mtime < ORPHAN_AGE:
                    continue
                fd = _locked(Path(entry.path))
            except FileNotFoundError:
                continue
            if fd is None:
                continue  # a live process's
            try:
                named = conn.execute("SELECT 1 FROM logs WHERE name=?", (entry.name,)).fetchone()
                if named is None:
                    os.unlink(entry.path)
                    log.info("%s: data log %s no longer named: removed", self.dir, entry.name)
            except OSError:
                continue
            finally:
                os.close(fd)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def waited(start: Callable[[Callable[[T | Exception], None]], None]) -> T:
    """``start(done)``, then wait for its ``done(value | error)``: the value, or raise.

    Interrupted (a signal's handler raised), the waiting stops and what was
    started goes on (a write stays queued and is committed anyway).
    """
    box: list[T | Exception] = []
    ready = threading.Lock()
    ready.acquire()

    def done(outcome: T | Exception) -> None:
        box.append(outcome)
        ready.release()

    start(done)
    ready.acquire()
    if isinstance(box[0], Exception):
        raise box[0]
    return box[0]


def _started(name: str, loop: Callable[[], None]) -> threading.Thread:
    """A store's thread, started; StorageIOError if none is to be had."""
    t = threading.Thread(target=loop, name=name, daemon=True)
    try:
        t.start()
    except RuntimeError as e:
        raise StorageIOError(f"cannot start the store's {name}: {e}") from e
    return t


_FD = itemgetter(0)  # a Run's descriptor


def _load(conn: sqlite3.Connection, obj: int) -> _Entry:
    """``obj``'s size, base limit, gen and whole map."""
    return _loaded(conn, obj, "", ())


def _load_window(conn: sqlite3.Connection, obj: int, lo: int, hi: int) -> _Entry:
    """``obj``'s size, base limit and gen with the pieces over ``[lo, hi)`` alone:
    all a read of those bytes needs (in one read transaction: ``conn``'s)."""
    return _loaded(conn, obj, _OVER, _over(obj, lo, hi))


_OVER = (
    " AND start >= COALESCE((SELECT MAX(start) FROM pieces WHERE obj=? AND start <= ?), ?)"
    " AND start < ?"
)
"""The pieces over a window, with :func:`_over`'s parameters: from the last piece
that starts at or before its start (it may cover it; a piece before that one ends
before it, the pieces never overlapping), to its end.  One statement: the
subquery is run once, and both steps walk the primary key's index."""


def _over(obj: int, lo: int, hi: int) -> tuple[int, int, int, int]:
    """:data:`_OVER`'s parameters for ``[lo, hi)``."""
    return (obj, lo, lo, hi)


def _large(conn: sqlite3.Connection, obj: int, cached: _Entry | None) -> bool:
    """Whether ``obj``'s entry, to be made again (another process changed the file,
    or this one never loaded it), is to be partial: the one ``cached`` was (partial,
    or whole with ``PARTIAL_MIN`` pieces or more), or the database's map has that
    many pieces now (the primary key's index stepped that far, not the map loaded)."""
    if (
        cached is not None
        and cached.state is not None
        and (cached.known is not None or len(cached.state.map) >= PARTIAL_MIN)
    ):
        return True
    sql = "SELECT 1 FROM pieces WHERE obj=? LIMIT 1 OFFSET ?"
    return conn.execute(sql, (obj, PARTIAL_MIN - 1)).fetchone() is not None


def _unfilled(conn: sqlite3.Connection, obj: int) -> _Entry:
    """A partial entry of a large file: its row, no piece, nothing known yet
    (:func:`_fill` loads what each change or read needs)."""
    ent = _loaded(conn, obj, " AND 0", ())
    if ent.state is not None:
        ent.known = RangeMap()
    return ent


def _gaps(known: RangeMap, lo: int, hi: int) -> list[tuple[int, int]]:
    """The stretches of ``[lo, hi)`` outside the ``known`` ones."""
    gaps: list[tuple[int, int]] = []
    pos = lo
    for k in known.overlapping(lo, hi):
        if pos < k.start:
            gaps.append((pos, k.start))
        pos = max(pos, k.end)
    if pos < hi:
        gaps.append((pos, hi))
    return gaps


def _covered(ent: _Entry, lo: int, hi: int) -> bool:
    """Whether a partial entry knows every stretch of ``[lo, hi)``.

    A READ stream asks one window after another inside one known stretch (the
    never-written part of a disk, read once already): the stretch that held the
    last window is kept (``near``) and asked first, no bisect of ``known``."""
    near = ent.near
    if near[0] <= lo and hi <= near[1]:
        return True
    assert ent.known is not None
    around = ent.known.overlapping(lo, hi)
    if len(around) == 1 and around[0].start <= lo and hi <= around[0].end:
        ent.near = (around[0].start, around[0].end)
        return True
    return not _gaps(ent.known, lo, hi)


def _know(known: RangeMap, start: int, length: int) -> None:
    """``[start, start+length)`` known from now on (joined to a known stretch it
    continues: ``pos`` is the start, as ``RangeMap.put`` joins)."""
    known.put(Piece(start, length, 0, start))


def _follow(ent: _Entry, edits: Edits) -> None:
    """This process's committed ``edits`` applied to a read entry at their old gen.

    A partial entry (see the notes, "Reading") drops the removed pieces it holds
    (one it does not hold lies outside its known stretches: it holds every piece
    that meets them) and knows the added ones' stretches from then on: the change
    replaced every piece over them, so the entry holds all that is there."""
    assert ent.state is not None
    known = ent.known
    if known is None:
        ent.state.map.apply(edits)
        return
    m = ent.state.map
    held = [s for s in edits.removed if any(p.start == s for p in m.overlapping(s, s + 1))]
    m.apply(Edits(held, edits.added))
    for p in edits.added:
        _know(known, p.start, p.length)


def _fill(conn: sqlite3.Connection, obj: int, ent: _Entry, lo: int, hi: int) -> None:
    """Load into a partial entry the pieces over ``[lo, hi)`` it does not hold yet
    (a writer's inside the write transaction of the change that needs them, a
    reader's in a read transaction that finds the file at the entry's ``gen``).

    A piece is loaded whole and its stretch known from then on, so a piece of the
    database that meets a known stretch is one the entry holds already (or held:
    this process's change since cut it or dropped it); it is never loaded again.
    """
    known = ent.known
    if known is None or lo >= hi:
        return
    gaps = _gaps(known, lo, hi)
    # Every query first, the entry changed after: a query that fails leaves it as it
    # was (a read entry is kept; a stretch known without its pieces would read as base).
    fetched: dict[int, Piece] = {}  # a piece over two gaps comes twice
    out: set[int] = set()  # pieces not inside a gap: one may meet a known stretch
    sql = f"SELECT start, length, log, pos FROM pieces WHERE obj=?{_OVER} ORDER BY start"
    for a, b in gaps:
        for p in map(Piece._make, conn.execute(sql, (obj, *_over(obj, a, b)))):
            fetched[p.start] = p
            if p.start < a or p.start + p.length > b:
                out.add(p.start)
    # A piece inside a gap meets no known stretch, and is known with its gap.
    new = [
        p for p in fetched.values() if p.start not in out or not known.overlapping(p.start, p.end)
    ]
    if new:
        assert ent.state is not None
        ent.state.map.apply(Edits([], new))
    for p in new:
        if p.start in out:
            _know(known, p.start, p.length)
    for a, b in gaps:
        _know(known, a, b - a)


def _sweep(conn: sqlite3.Connection, obj: int, ent: _Entry) -> None:
    """Load into a kept partial entry the next :data:`SWEEP_PIECES` pieces past its
    ``swept`` mark that it does not hold; whole once past the last.

    A writer's in its group's transaction, which found the entry at the database's
    ``gen``; a reader's in a read transaction that finds it there
    (:meth:`Store._sweep_read`).
    Every stretch before ``swept`` is known, so a piece that starts before it is
    held (it meets one); of those that start from it, one that meets a known
    stretch is held, and any other lies inside a gap.  The stretch from the mark
    to the first piece not loaded (past every piece: the end) is known after."""
    known = ent.known
    assert known is not None and ent.state is not None
    lo = ent.swept
    sql = "SELECT start, length, log, pos FROM pieces WHERE obj=? AND start >= ? ORDER BY start"
    rows = list(map(Piece._make, conn.execute(f"{sql} LIMIT ?", (obj, lo, SWEEP_PIECES + 1))))
    hi = rows.pop().start if len(rows) > SWEEP_PIECES else _END
    new: list[Piece] = []
    gaps = iter(_gaps(known, lo, hi))
    gap = next(gaps, None)
    for p in rows:  # both in order: each piece against the gap it may lie in
        while gap is not None and gap[1] <= p.start:
            gap = next(gaps, None)
        if gap is None:
            break
        if gap[0] <= p.start and p.start + p.length <= gap[1]:
            new.append(p)
    if new:
        ent.state.map.apply(Edits([], new))
    _know(known, lo, hi - lo)
    ent.swept = hi
    if hi == _END:
        ent.known = None


def _overfull(ent: _Entry) -> bool:
    """Whether ``ent`` holds more pieces than a kept entry may (:data:`HELD_MAX`)."""
    return ent.state is not None and len(ent.state.map) > HELD_MAX


def _sweepable(ent: _Entry) -> bool:
    """Whether a sweep's step keeps a partial entry within :data:`HELD_MAX`: a map
    larger than that is never made whole, its entry stays partial."""
    return ent.state is not None and len(ent.state.map) + SWEEP_PIECES <= HELD_MAX


def _loaded(conn: sqlite3.Connection, obj: int, where: str, params: tuple[int, ...]) -> _Entry:
    """``obj``'s row with its pieces that also meet ``where`` (ANDed, ``params``)."""
    row = conn.execute("SELECT size, base_limit, gen FROM objects WHERE id=?", (obj,)).fetchone()
    if row is None:
        return _Entry(None, ABSENT)
    sql = f"SELECT start, length, log, pos FROM pieces WHERE obj=?{where} ORDER BY start"
    pieces = list(map(Piece._make, conn.execute(sql, (obj, *params))))
    return _Entry(FileState(row[0], row[1], RangeMap(pieces)), row[2])


class _NoWait:
    """:meth:`Store.nowait`'s block: the thread's flag set, and put back after."""

    __slots__ = ("_before", "_local")

    def __init__(self, local: threading.local) -> None:
        self._local = local
        self._before = False

    def __enter__(self) -> None:
        self._before = getattr(self._local, "on", False)
        self._local.on = True

    def __exit__(self, *exc: object) -> None:
        self._local.on = self._before


class _LogGone(Exception):
    """A map named a log the cleaning has removed since (see ``Store._fd_of``)."""


class _Redo(Exception):
    """A write mapped in a group's transaction failed its sync meanwhile."""


_LOG_SEQ = "log_seq"  # meta: the last log id given (see Store._open_log)
_NEXT_LOG = (
    f"SELECT MAX(COALESCE((SELECT value FROM meta WHERE key='{_LOG_SEQ}'), 0),"
    " COALESCE((SELECT MAX(id) FROM logs), 0)) + 1"
)


def rotate_size(quota: int | None) -> int:
    """Where a log is sealed: ``LOG_ROTATE``, or a sixteenth of a small quota (at
    least 4 MiB), so that a session's logs can be emptied well before it is full."""
    if quota is None:
        return LOG_ROTATE
    return min(LOG_ROTATE, max(4 * 1024 * 1024, quota // 16))


def _locked(path: Path) -> int | None:
    """``path`` opened and ``flock``ed at once, or None if another holds its lock (a
    live writer's log, another cleaner's); FileNotFoundError if it is gone."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _later(wake: Callable[[], None]) -> bool:
    """The cleaning's ``wake_later``: its copies wake the syncer once a batch."""
    return True


def _by_pos(p: _Pending) -> int:
    return p.pos


def _bounded_put(cache: dict[int, _Entry], obj: int, ent: _Entry) -> None:
    if len(cache) >= CACHE_MAX and obj not in cache:
        cache.clear()
    cache[obj] = ent


def _pwrite_all(fd: int, bufs: list[bytes | memoryview], pos: int) -> None:
    """``bufs`` one after the other at ``pos`` (one ``pwritev``, more if it wrote less)."""
    try:
        n = os.pwritev(fd, bufs, pos)
        rest = -n
        for b in bufs:  # not sum() over a generator: ~1 µs less on the loop's WRITE
            rest += len(b)
        if rest:
            view = memoryview(b"".join(bufs))[n:]
            pos += n
            while view:
                n = os.pwrite(fd, view, pos)
                view, pos = view[n:], pos + n
    except OSError as e:
        raise _storage_error(e) from e


def _record(
    obj: int,
    offset: int,
    data: bytes | memoryview,
    base_size: int,
    *,
    stamp: int | None,
    pos: int,
    span: int,
    moved: bool = False,
) -> list[bytes | memoryview]:
    """A write's record at ``pos`` of the log, ``span`` bytes: its header, zeros to
    a large write's data's page, its data (see "The data log as the map's log").
    A small write's checksum covers the data too; a large one's only its header
    (its group always syncs the map, and the replay stops at it)."""
    n = len(data)
    small = n < SMALL_WRITE
    head = _HEAD.pack(
        _MOVED if moved else _SMALL if small else _LARGE, n, obj, offset, base_size,
        -1 if stamp is None else stamp, pos,
    )  # fmt: skip
    crc = zlib.crc32(data, zlib.crc32(head)) if small else zlib.crc32(head)
    pad = span - n - HEAD
    return [head + _CRC.pack(crc) + bytes(pad), data]


class _Replayed(NamedTuple):
    obj: int
    offset: int
    length: int
    base_size: int
    stamp: int | None


def _read_record(fd: int, pos: int) -> _Replayed | None:
    """The small write's record at ``pos`` if it is whole (its checksum holds);
    None for anything else: the log's zeros or end, a torn or foreign record, a
    large write's (never needed: see "The data log as the map's log")."""
    raw = os.pread(fd, HEAD, pos)
    if len(raw) < HEAD:
        return None
    magic, n, obj, offset, base_size, stamp, at = _HEAD.unpack_from(raw)
    (crc,) = _CRC.unpack_from(raw, _HEAD.size)
    if magic != _SMALL or at != pos or not 0 < n < SMALL_WRITE or min(obj, offset, base_size) < 0:
        return None
    if offset + n > MAX_FILE_SIZE:  # never acknowledged (write_async refuses it): not redone
        return None
    data = os.pread(fd, n, pos + HEAD)
    if len(data) < n or zlib.crc32(data, zlib.crc32(raw[: _HEAD.size])) != crc:
        return None
    return _Replayed(obj, offset, n, base_size, None if stamp < 0 else stamp)


def _storage_error(e: BaseException) -> NamespaceError:
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return NoSpace(str(e))
    if isinstance(e, sqlite3.OperationalError) and "full" in str(e):
        return NoSpace(str(e))
    return StorageIOError(str(e))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _no_hook(point: str) -> None:
    pass
