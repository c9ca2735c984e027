"""Large listings shared by the server's processes, through files: a folder listed once.

Design notes
------------
Each server process has its own namespace caches, and a client's new
connection may land on a process that never listed a folder another one
listed a moment ago.  Scanning a folder of 10,000 entries again costs ~50 ms
of CPU; reading what the other process found costs a few.  So the memo at the
top of the stack (``merge.memo``) writes each large listing it computes here,
and reads one here before scanning.

What a listing holds, and until when.  A listing is written with the
deadline the writer's own memo keeps it until (its ``Context.validity``:
never later than its scan plus rule 8's ``ttl``), and a reader uses it no
later than that deadline: no process serves a listing longer than the one
that scanned it would have.  The deadline is a reading of the stack's clock,
``time.monotonic`` (Linux's ``CLOCK_MONOTONIC``: one clock for every process
of the host, reset at boot), so a listing names the boot it was made in and
is ignored in any other.  The storage folder's own ``stat`` (device, inode,
modification and change times), taken before the listing was computed, must
also match a fresh one: an entry added, removed or renamed there since shows
at once, as it would after a scan.

Three kinds of files, in the folder the caller gives (the server's state
directory; it must be the server's own: nothing is unpacked before its
digest is checked, but a process that can write there can still present
what it likes):

=====================  ====================================================
``<digest>.entries``   the entries, ``marshal``-ed names and integers; named
                       by the digest of their bytes (``_digest``), which the
                       file repeats with their length and checksum
                       (``_check``); written once per content, never changed
``<path hash>.head``   one folder's latest: boot, path, deadline, the
                       folder's stamp, the digest of its entries; rewritten
                       (small) each time the writer's memo renews the listing
``<hash>.extra``       bytes the caller derived from one entries' digest
                       and a tag of its own (see Extras below)
=====================  ====================================================

Each is written to a temporary name and renamed into place, so a reader
sees a whole file or the one before.  A file that is truncated, corrupt (its
checksum does not match), of another boot, format or content (the digest it
names is not the one asked for), or gone meanwhile is ignored: the reader
scans, as without this cache.  Nothing of the storage is ever written.

Digest and checksum.  The writer names a content by its SHA-1 (``_digest``:
a reader that holds the entries of that digest takes them for the same
content); a reader checks the bytes it reads with a CRC-32 the file carries
(``_check``), not by hashing them again: both find a damaged or torn file
(neither is a defence against a process that can write the folder, see
above), and the CRC costs the reader of a 10,000-entry folder ~0.4 ms of
its two files, SHA-1 ~1.3 ms.  The length, also carried, finds a truncated
file whatever the checksum.

A reader that already holds the entries of the digest a head names (it read
or wrote them before) hands out the very same object again, so the server's
encoded copy of it stays valid (``nfsd.programs.listings``); so does a
process whose own scan, once a listing it read here expired, finds the same
entries (a new object from the layers below, the same content).

A reader gets the entries as :class:`PackedItems`: the names, and each
``(name, Attrs)`` pair made when first asked (the server, taking the
encoded entries too, seldom asks: 10,000 ``Attrs`` made at once cost
~11 ms of a ~26 ms listing on the other process).

Extras.  The server keeps things derived from a listing (its encoded
READDIRPLUS entries) next to it, opaque to this module: ``sharing(items)``
names the digest of entries this process read or wrote here, and
``store_extra``/``load_extra`` keep bytes under that digest and a tag that
names everything else they depend on.  An extra is a function of the
entries and the tag, so it never outlives them in use: a reader asks for
one only with entries it got here within their deadline.  It is checked by
its own digest, the entries' digest and the tag's before it is returned.

Bounds: at most ``files`` of each kind (the oldest go first), none kept
longer than ``max_age`` seconds unrenewed; temporary files of a process
that died are removed after the same age.  Only listings of ``min_entries``
or more are shared: a small folder is scanned faster than a file is read.
"""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import operator
import os
import struct
import threading
import time
import weakref
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import BinaryIO, NamedTuple, overload

from merge.attrs import attrs_from_fields
from merge.namespace import Attrs, Kind, PresentedPath

_MAGIC = b"rfs-lst2"  # 2: SHA-1 digests (1: BLAKE2b), see _digest
_ENTRIES_MAGIC = b"rfs-ent3"  # 3: the digest, length and CRC in the file (2: bare)
_EXTRA_MAGIC = b"rfs-ext3"  # 3: checked by their CRC (2: by their SHA-1)
_DIGEST = 16
# After a magic: the CRC-32 and length of what follows the header, then
# (entries) the content's digest, (extras) the entries' digest and the tag's.
_CHECK = struct.Struct("=IQ")
_ENTRIES_HEAD = len(_ENTRIES_MAGIC) + _CHECK.size + _DIGEST
_EXTRA_HEAD = len(_EXTRA_MAGIC) + _CHECK.size + 2 * _DIGEST
_MAX_ENTRIES_BYTES = 256 << 20

Items = Sequence[tuple[str, Attrs]]
Stamp = tuple[int, int, int, int]


def boot_id() -> str | None:
    """This boot's id (Linux), or ``None``: then nothing is shared."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip() or None
    except OSError:
        return None


def folder_stamp(spath: str) -> Stamp | None:
    """What changes when an entry of the storage folder ``spath`` comes, goes or is renamed."""
    try:
        st = os.stat(spath)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)


_KINDS = {int(k): k for k in Kind}
# An entry's fields after its kind, in the dataclass's order (attrs_from_fields).
_FIELDS = operator.attrgetter(
    "size", "used", "mode", "nlink", "uid", "gid", "fileid", "atime_ns", "mtime_ns", "ctime_ns"
)
_KIND = operator.attrgetter("kind")
_ROW = struct.Struct("10q")  # what _FIELDS gets


class PackedItems(Sequence[tuple[str, Attrs]]):
    """A shared listing's entries as read: each ``(name, Attrs)`` pair made when first asked.

    A reader hands the listing to the server, which takes its encoded
    READDIRPLUS entries from the same folder (``nfsd.programs.shared_encodings``)
    and so needs the names (``names``) but seldom the attributes: making
    10,000 ``Attrs`` at once cost ~11 ms.  The bytes were checked (digest,
    sizes, kinds, names) before this is made; a pair, once made, is the same
    object each time.  Equal to any sequence of the same pairs.
    """

    __slots__ = ("_kinds", "_packed", "_pairs", "names")

    def __init__(self, names: list[str], kinds: bytes, packed: bytes) -> None:
        self.names = names  # in the source's order
        self._kinds = kinds
        self._packed = packed
        self._pairs: list[tuple[str, Attrs] | None] = [None] * len(names)

    def __len__(self) -> int:
        return len(self.names)

    @overload
    def __getitem__(self, i: int) -> tuple[str, Attrs]: ...

    @overload
    def __getitem__(self, i: slice) -> list[tuple[str, Attrs]]: ...

    def __getitem__(self, i: int | slice) -> tuple[str, Attrs] | list[tuple[str, Attrs]]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self.names)))]
        pair = self._pairs[i]  # IndexError past the end, as a tuple's
        if pair is None:
            if i < 0:
                i += len(self.names)
            fields = _ROW.unpack_from(self._packed, i * _ROW.size)
            pair = (self.names[i], attrs_from_fields(fields, _KINDS[self._kinds[i]]))
            self._pairs[i] = pair  # two threads may both make it: equal pairs
        return pair

    def __iter__(self) -> Iterator[tuple[str, Attrs]]:
        for i in range(len(self.names)):
            yield self[i]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]


class _Known(NamedTuple):
    """A folder's entries this process handed out, their digest, and the lower
    listing last found to hold the same entries (see ``store``)."""

    digest: bytes
    items: Items
    source: Items | None


class SharedListings:
    """Large listings written and read by every process serving one storage."""

    def __init__(
        self,
        folder: str,
        *,
        min_entries: int = 1000,
        files: int = 32,
        max_age: float = 600.0,
        boot: str | None = None,
    ) -> None:
        self.folder = folder
        self.min_entries = min_entries
        self._files = files
        self._max_age = max_age
        self._boot = boot if boot is not None else boot_id()
        try:
            os.makedirs(folder, mode=0o700, exist_ok=True)
        except OSError:
            self._boot = None  # nowhere to share: each process scans
        # Per folder: the digest of the entries last read or written, and them.
        self._known: OrderedDict[PresentedPath, _Known] = OrderedDict()
        self._lock = threading.Lock()
        _INSTANCES.add(self)

    @property
    def enabled(self) -> bool:
        return self._boot is not None

    # -- reading --------------------------------------------------------------------

    def load(self, path: PresentedPath, now: float, stamp: Stamp) -> tuple[Items, float] | None:
        """The entries another process listed for ``path`` and until when, if they hold."""
        if self._boot is None:
            return None
        try:
            head = self._read_head(path)
            if head is None:
                return None
            boot, hpath, until, hstamp, digest = head
            if boot != self._boot or hpath != path or not now < until or tuple(hstamp) != stamp:
                return None
            known = self._known.get(path)
            if known is not None and known.digest == digest:
                return known.items, until
            items = self._read_entries(path, digest)
        except (OSError, ValueError, TypeError, EOFError, KeyError, IndexError, struct.error):
            return None  # gone, truncated or not ours: scan
        if items is None:
            return None
        self._remember(path, digest, items)
        return items, until

    def _read_head(self, path: PresentedPath) -> tuple | None:
        with open(self._head_path(path), "rb") as f:
            data = f.read(1 << 16)
        if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + _DIGEST:
            return None
        body = data[len(_MAGIC) + _DIGEST :]
        if _digest(body) != data[len(_MAGIC) : len(_MAGIC) + _DIGEST]:
            return None
        head = marshal.loads(body)
        if not isinstance(head, tuple) or len(head) != 5:
            return None
        return head

    def _read_entries(self, path: PresentedPath, digest: bytes) -> Items | None:
        with open(self._entries_path(digest), "rb") as f:
            data = _checked(f, _ENTRIES_MAGIC, _ENTRIES_HEAD, digest)
        if data is None:
            return None
        names, kinds, packed = marshal.loads(data)
        n = len(names)
        if (
            not isinstance(names, list)
            or not isinstance(kinds, bytes)
            or not isinstance(packed, bytes)
            or len(kinds) != n
            or len(packed) != n * _ROW.size
            or (n and set(map(type, names)) != {str})
            or not set(kinds) <= _KINDS.keys()
        ):
            return None
        return PackedItems(names, kinds, packed)

    # -- writing --------------------------------------------------------------------

    def store(self, path: PresentedPath, items: Items, until: float, stamp: Stamp | None) -> Items:
        """Share ``items``, listed after the folder's ``stamp`` was taken, until ``until``.

        Returns what to hand out: ``items``, or the object this process
        already handed out for the same entries (read here earlier, while
        its own scan is new): the server's encoded copy stays valid.
        """
        if self._boot is None or stamp is None or len(items) < self.min_entries:
            return items
        known = self._known.get(path)
        try:
            if known is not None and (known.items is items or known.source is items):
                digest = known.digest  # renewed: the entries were written already
                try:
                    os.utime(self._entries_path(digest))  # in use: not the oldest
                except FileNotFoundError:
                    data = marshal.dumps(_rows(items))
                    self._write(self._entries_path(digest), *_frame(_ENTRIES_MAGIC, digest, data))
            else:
                data = marshal.dumps(_rows(items))
                digest = _digest(data)
                target = self._entries_path(digest)
                if not os.path.exists(target):
                    self._write(target, *_frame(_ENTRIES_MAGIC, digest, data))
                    self._prune()
                if known is not None and known.digest == digest:
                    self._remember(path, digest, known.items, source=items)
                else:
                    self._remember(path, digest, items)
            head = marshal.dumps((self._boot, path, until, stamp, digest))
            self._write(self._head_path(path), _MAGIC + _digest(head) + head)
        except (OSError, ValueError, struct.error):
            return items  # not shared: each process scans, as without this cache
        known = self._known.get(path)
        return known.items if known is not None and known.digest == digest else items

    def _write(self, target: str, *parts: bytes) -> None:
        tmp = os.path.join(self.folder, f".{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            with open(tmp, "wb") as f:
                for data in parts:
                    f.write(data)
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _prune(self) -> None:
        """At most ``files`` of each kind, none older than ``max_age``."""
        cutoff = time.time() - self._max_age
        kinds: dict[str, list[tuple[float, str]]] = {
            ".head": [],
            ".entries": [],
            ".extra": [],
            ".tmp": [],
        }
        with os.scandir(self.folder) as it:
            for de in it:
                kind = os.path.splitext(de.name)[1]
                if kind in kinds:
                    with contextlib.suppress(OSError):
                        kinds[kind].append((de.stat(follow_symlinks=False).st_mtime, de.path))
        for kind, found in kinds.items():
            found.sort()
            keep = len(found) if kind == ".tmp" else self._files  # one being written: by age
            for i, (mtime, p) in enumerate(found):
                if mtime < cutoff or i < len(found) - keep:
                    with contextlib.suppress(OSError):
                        os.unlink(p)

    # -- extras --------------------------------------------------------------------

    def digest_of(self, items: Items) -> bytes | None:
        """The digest of ``items`` if this process read or wrote them here (the same object)."""
        with self._lock:
            for known in self._known.values():
                if known.items is items:
                    return known.digest
        return None

    def load_extra(self, digest: bytes, tag: bytes) -> bytes | None:
        """The bytes kept for the entries ``digest`` and ``tag``, if whole and theirs."""
        if self._boot is None:
            return None
        try:
            with open(self._extra_path(digest, tag), "rb") as f:
                return _checked(f, _EXTRA_MAGIC, _EXTRA_HEAD, digest + _digest(tag))
        except OSError:
            return None

    def store_extra(self, digest: bytes, tag: bytes, data: bytes) -> None:
        """Keep ``data`` for the entries ``digest`` and ``tag`` (best effort)."""
        if self._boot is None:
            return
        try:
            self._write(
                self._extra_path(digest, tag), *_frame(_EXTRA_MAGIC, digest + _digest(tag), data)
            )
            self._prune()
        except OSError:
            pass  # not shared: the other processes encode their own

    # -- names --------------------------------------------------------------------------

    def _remember(
        self, path: PresentedPath, digest: bytes, items: Items, source: Items | None = None
    ) -> None:
        with self._lock:
            self._known[path] = _Known(digest, items, source)
            self._known.move_to_end(path)
            while len(self._known) > self._files:
                self._known.popitem(last=False)

    def _head_path(self, path: PresentedPath) -> str:
        key = "".join(n + "\0" for n in path).encode("utf-8", "surrogateescape")
        return os.path.join(self.folder, hashlib.blake2b(key, digest_size=16).hexdigest() + ".head")

    def _entries_path(self, digest: bytes) -> str:
        return os.path.join(self.folder, digest.hex() + ".entries")

    def _extra_path(self, digest: bytes, tag: bytes) -> str:
        return os.path.join(self.folder, _digest(digest + tag).hex() + ".extra")


_INSTANCES: weakref.WeakSet[SharedListings] = weakref.WeakSet()


def sharing(items: Items) -> tuple[SharedListings, bytes] | None:
    """Where ``items`` were shared and their digest, if this process read or wrote them there.

    How the server finds, from a listing the namespace handed out, where
    to keep what it derives from it (``load_extra``, ``store_extra``).
    """
    for shared in list(_INSTANCES):
        digest = shared.digest_of(items)
        if digest is not None:
            return shared, digest
    return None


def _digest(data: bytes | memoryview) -> bytes:
    """16 bytes of SHA-1: what names a content (entries, a tag; a head's check),
    not a defence against an attacker (the folder must be the server's own, see
    the notes).  SHA-1, not BLAKE2b, for its speed where the CPU has SHA
    instructions (OpenSSL's): 0.4 against 0.9 ms for the ~1 MB of a 10,000-entry
    folder's entries, about as fast as BLAKE2b where it has not.  The large files
    are checked by their CRC-32 when read (``_checked``), 2.5 times faster still."""
    return hashlib.sha1(data, usedforsecurity=False).digest()[:_DIGEST]


def _frame(magic: bytes, names: bytes, data: bytes) -> tuple[bytes, bytes]:
    """A file's header and body: ``magic``, the CRC-32 and length of ``data``,
    ``names`` (the digests the file is of; in the CRC too), then ``data``."""
    return magic + _CHECK.pack(zlib.crc32(data, zlib.crc32(names)), len(data)) + names, data


def _checked(f: BinaryIO, magic: bytes, size: int, names: bytes) -> bytes | None:
    """What follows the header of ``size`` bytes in ``f``, if the header is
    ``magic``'s, names ``names``, and the rest has its length and CRC-32.

    The rest is read into its own bytes object: no copy of a few MB to cut
    the header off.
    """
    head = f.read(size)
    if len(head) != size or not head.startswith(magic) or head[len(magic) + _CHECK.size :] != names:
        return None
    crc, length = _CHECK.unpack_from(head, len(magic))
    if length > _MAX_ENTRIES_BYTES:
        return None
    data = f.read(length + 1)  # one more: a longer file is not this one
    if len(data) != length or zlib.crc32(data, zlib.crc32(names)) != crc:
        return None
    return data


def _rows(items: Items) -> tuple[list[str], bytes, bytes]:
    """Names, kinds (a byte each) and the other fields (machine integers): for marshal.

    Every field fits a signed 64-bit integer (``struct.error`` otherwise: the
    listing is not shared); the integers are in the host's byte order, read
    only by processes of the same boot.
    """
    attrs = [a for _, a in items]
    pack = _ROW.pack
    rows = b"".join([pack(*fields) for fields in map(_FIELDS, attrs)])
    return [name for name, _ in items], bytes(map(_KIND, attrs)), rows
