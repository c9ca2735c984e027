"""NFS file handles: opaque, at most 64 bytes, derived from the storage.

Design notes
------------
A handle names a presented path so that it can be resolved with nothing
but the storage and the installation secret: after a restart, or on a
second server given the same storage and state directory, a client's
handles still work.  Nothing in it comes from a boot time or a counter.

======  ======  ==========================================================
offset  size    field
======  ======  ==========================================================
0       1       version (1)
1       1       depth ``d``: number of components in the presented path
2       8       fileid of the entry (from the namespace)
10      4 × k   hash of each of the first k = min(d, 11) path components
10+4k   10      MAC: HMAC-SHA256(secret, bytes 0 .. 10+4k)[:10]
======  ======  ==========================================================

The root handle is 20 bytes, a handle at depth 11 or more 64.  A handle
whose MAC does not verify is *bad* (``NFS3ERR_BADHANDLE``); a well-formed
one whose entry cannot be found again is *stale* (``NFS3ERR_STALE``).

READDIRPLUS makes a folder's handles at once (``HandleCodec.encode_all``):
in C (``nfsd.programs.nfs3._native.handles``, HMAC-SHA256 by the libcrypto
``hashlib`` uses, the key's pads hashed once a folder; BLAKE2b by libb2),
or its twin ``_handles_py``, the same bytes.

Resolution first looks in a bounded cache of the handles issued or
verified lately (only exact, MAC-checked bytes are ever in it).  On a miss
(after a restart) it walks down from the root, at each level following the
names whose hash matches (several, if hashes collide), and accepts the path
only if the entry found there has the handle's fileid.  Below depth 11 the
walk searches the subtree, with a bounded budget of directories.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

from merge.namespace import Kind, Namespace, NamespaceError, PresentedPath
from nfsd.native import load

# a folder's handles at once in C (nfsd/programs/nfs3/_native.c); twin: _handles_py
native = load("nfsd.programs.nfs3._native")

_T = TypeVar("_T")

VERSION = 1
MAX_COMPONENTS = 11
MAC_SIZE = 10
HEAD = struct.Struct(">BBQ")
_FILEID = slice(2, 10)  # where HEAD puts the fileid
MIN_SIZE = HEAD.size + MAC_SIZE
MAX_SIZE = 64
DEEP_SEARCH_BUDGET = 10_000  # directories listed to find a handle below depth 11
ADOPTED_FOLDERS = 8  # folders whose handles another process made, kept (HandleCodec.adopt)


class BadHandle(Exception):
    """Not a handle this server issued (wrong size, version or MAC)."""


class StaleHandle(Exception):
    """A handle this server issued, whose entry no longer exists."""


def name_hash(name: str) -> bytes:
    """4-byte hash of one path component (BLAKE2b, 4-byte digest)."""
    h = _EMPTY_NAME_HASH.copy()  # cheaper than a new object with its parameters
    h.update(name.encode("utf-8", "surrogateescape"))
    return h.digest()


_EMPTY_NAME_HASH = hashlib.blake2b(digest_size=4)


def hmac_pads(key: bytes) -> tuple[hashlib._Hash, hashlib._Hash]:
    """HMAC-SHA256's inner and outer hashes with the key's pads already hashed (RFC 2104).

    A MAC is then two copies, two updates and two digests: about half the
    cost of ``hmac.new(...).copy()`` per handle, the same bytes.
    """
    if len(key) > _SHA256_BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_SHA256_BLOCK, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    return inner, outer


_SHA256_BLOCK = 64


Given = Sequence[_T] | Callable[[], Sequence[_T]]  # a sequence, or what makes it when asked


class _Adopted:
    """One folder's handles made by another process (``HandleCodec.adopt``): handle
    -> name and name -> handle, made on first use."""

    __slots__ = ("_given", "_maps")

    def __init__(self, names: Given[str], handles: Given[bytes]) -> None:
        self._given: tuple[Given[str], Given[bytes]] | None = (names, handles)
        self._maps: tuple[dict[bytes, str], dict[str, bytes]] | None = None

    def maps(self) -> tuple[dict[bytes, str], dict[str, bytes]]:
        maps = self._maps
        if maps is None:
            given = self._given
            if given is None:  # another thread made them meanwhile (maps set first)
                return self._maps  # type: ignore[return-value]
            names = given[0]() if callable(given[0]) else given[0]
            made = given[1]() if callable(given[1]) else given[1]
            maps = (dict(zip(made, names, strict=True)), dict(zip(names, made, strict=True)))
            self._maps = maps  # one tuple, set whole: two threads at once make the same
            self._given = None
        return maps


class HandleCodec:
    """Encodes presented paths as handles and resolves handles back.

    Handles issued or verified recently are remembered both ways (a bounded
    LRU), so the common case costs one dictionary lookup: READDIRPLUS
    hands out a handle per entry, and every call presents one.
    """

    def __init__(self, namespace: Namespace, secret: bytes, cache_size: int = 200_000) -> None:
        self.namespace = namespace
        self._inner, self._outer = hmac_pads(secret)
        self._secret = secret  # for the C encoder of a folder's handles (encode_all)
        # Plain dicts (an OrderedDict costs ~45 bytes more a handle): the oldest
        # issued go first, a sixteenth at a time once full (handles are issued
        # once and found again by lookup, so this is close to least recently used).
        self._by_handle: dict[bytes, PresentedPath] = {}
        self._by_path: dict[PresentedPath, bytes] = {}
        self._cache_size = cache_size
        self._lock = threading.Lock()
        # Handles of whole folders made by another process (``adopt``), per folder:
        # handle -> name and name -> handle, taken into the maps above when used.
        self._adopted: OrderedDict[PresentedPath, _Adopted] = OrderedDict()

    # -- encoding -------------------------------------------------------
    def encode(self, path: PresentedPath, fileid: int) -> bytes:
        handle = self._by_path.get(path)
        if handle is None and self._adopted and path:
            handle = self._adopted_handle(path[:-1], path[-1])
        if handle is not None and handle[_FILEID] == fileid.to_bytes(8, "big"):
            return handle
        body = HEAD.pack(VERSION, min(len(path), 255), fileid) + b"".join(
            name_hash(n) for n in path[:MAX_COMPONENTS]
        )
        handle = body + self._mac(body)
        self._remember(handle, path)
        return handle

    def encoder_in(self, directory: PresentedPath) -> Callable[[str, int], bytes]:
        """``encode((*directory, name), fileid)`` as a function of ``name`` and ``fileid``."""
        return self._encoder(directory, None)

    @contextlib.contextmanager
    def issuing(self, directory: PresentedPath) -> Iterator[Callable[[str, int], bytes]]:
        """``encoder_in(directory)``, the handles it makes remembered together on leaving.

        READDIRPLUS encodes a handle for each of a folder's entries: the
        directory's part of the body (its components' hashes) is made once,
        and the cache's lock taken once a call, not once a handle.
        """
        issued: list[tuple[bytes, PresentedPath]] = []
        try:
            yield self._encoder(directory, issued)
        finally:
            self._remember_all(issued)

    def _encoder(
        self, directory: PresentedPath, issued: list[tuple[bytes, PresentedPath]] | None
    ) -> Callable[[str, int], bytes]:
        depth = len(directory) + 1
        byte_depth = min(depth, 255)
        prefix = b"".join(name_hash(n) for n in directory[:MAX_COMPONENTS])
        hashed = depth <= MAX_COMPONENTS
        head, by_path, mac = HEAD.pack, self._by_path, self._mac
        adopted = self._adopted.get(directory)

        def encode(name: str, fileid: int) -> bytes:
            path = (*directory, name)
            handle = by_path.get(path)
            if handle is None and adopted is not None:
                handle = adopted.maps()[1].get(name)
            if handle is not None and handle[_FILEID] == fileid.to_bytes(8, "big"):
                return handle
            body = head(VERSION, byte_depth, fileid) + prefix
            if hashed:
                body += name_hash(name)
            handle = body + mac(body)
            if issued is None:
                self._remember(handle, path)
            else:
                issued.append((handle, path))
            return handle

        return encode

    def encode_all(
        self, directory: PresentedPath, names: list[str], fileids: list[int]
    ) -> list[bytes]:
        """``encoder_in(directory)(name, fileid)`` for each pair, remembered as ``issuing``
        remembers them: a folder's READDIRPLUS handles at once.

        A handle is a function of the path, the fileid and the secret, so one
        remembered or adopted already is the one made again: none is looked
        up.  In C (``_native.handles``: one call, not one a handle, ~0.2 us
        rather than ~1.3 each), or the twin ``_handles_py``; where C declines
        (a value the twin refuses), the twin, which raises as ``encode`` does.
        """
        depth = len(directory) + 1
        prefix = b"".join(name_hash(n) for n in directory[:MAX_COMPONENTS])
        hashed = depth <= MAX_COMPONENTS
        made = None
        if native is not None:
            made = native.handles(names, fileids, min(depth, 255), prefix, hashed, self._secret)
        if made is None:
            made = self._handles_py(names, fileids, min(depth, 255), prefix, hashed)
        self._remember_all(zip(made, [(*directory, n) for n in names], strict=True))
        return made

    def _handles_py(
        self, names: Sequence[str], fileids: Sequence[int], depth: int, prefix: bytes, hashed: bool
    ) -> list[bytes]:
        """``_native.handles``' twin: ``_encoder``'s bytes, for each name and fileid."""
        head, mac = HEAD.pack, self._mac
        out: list[bytes] = []
        for name, fileid in zip(names, fileids, strict=True):
            body = head(VERSION, depth, fileid) + prefix
            if hashed:
                body += name_hash(name)
            out.append(body + mac(body))
        return out

    def key_id(self) -> bytes:
        """A fingerprint of the secret (its HMAC of a constant): what handles depend on,
        for keying bytes that hold handles (it reveals nothing of the secret)."""
        return self._mac(b"recovery-fs handle key id", 16)

    @staticmethod
    def size_at(depth: int) -> int:
        """The size of every handle of a path of ``depth`` components."""
        return HEAD.size + 4 * min(depth, MAX_COMPONENTS) + MAC_SIZE

    def adopt(self, directory: PresentedPath, names: Given[str], handles: Given[bytes]) -> None:
        """Remember handles ``encoder_in(directory)`` made for these names, elsewhere.

        Only for bytes this server made with this secret (checked by their
        digest: ``nfsd.programs.shared_encodings``), as the MAC-checked cache.
        Kept per folder (the last ``ADOPTED_FOLDERS``) and taken into the cache
        when a call presents one or a reply needs one: two dicts made at once
        (~2.5 ms for 10,000) rather than a path tuple and four dict entries each,
        and only then (a listing that is only read needs neither): ``handles``
        and ``names`` may be functions that give them, one a name (the caller's
        promise).
        """
        if not callable(handles) and not callable(names) and len(names) != len(handles):
            raise ValueError("one handle a name")
        with self._lock:
            self._adopted[directory] = _Adopted(names, handles)
            self._adopted.move_to_end(directory)
            while len(self._adopted) > ADOPTED_FOLDERS:
                self._adopted.popitem(last=False)

    def _adopted_handle(self, directory: PresentedPath, name: str) -> bytes | None:
        adopted = self._adopted.get(directory)
        return None if adopted is None else adopted.maps()[1].get(name)

    def _adopted_path(self, handle: bytes) -> PresentedPath | None:
        """The path of an adopted handle (then remembered as issued), else None."""
        with self._lock:
            folders = list(self._adopted.items())
        for directory, adopted in folders:
            name = adopted.maps()[0].get(handle)
            if name is not None:
                path = (*directory, name)
                self._remember(handle, path)
                return path
        return None

    def _mac(self, body: bytes, size: int = MAC_SIZE) -> bytes:
        """HMAC-SHA256 of ``body`` under the secret, its first ``size`` bytes."""
        inner = self._inner.copy()
        inner.update(body)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:size]

    def _remember(self, handle: bytes, path: PresentedPath) -> None:
        self._remember_all(((handle, path),))

    def _remember_all(self, issued: Iterable[tuple[bytes, PresentedPath]]) -> None:
        by_handle, by_path = self._by_handle, self._by_path
        with self._lock:
            for handle, path in issued:
                old = by_path.get(path)
                if old is not None and old != handle:
                    by_handle.pop(old, None)
                by_handle[handle] = path
                by_path[path] = handle
            if len(by_handle) > self._cache_size:
                # Popping the first of a dict one at a time costs more each time (it
                # skips the slots emptied before): a batch, then the dict compacts.
                extra = len(by_handle) - self._cache_size + self._cache_size // 16
                for h in list(itertools.islice(by_handle, extra)):
                    p = by_handle.pop(h)
                    if by_path.get(p) == h:
                        del by_path[p]

    # -- decoding -------------------------------------------------------
    def cached(self, handle: bytes) -> PresentedPath | None:
        """The path of a handle issued or verified lately, else None (no MAC
        is checked, no storage read: only verified bytes are remembered)."""
        path = self._by_handle.get(handle)
        if path is None and self._adopted:
            return self._adopted_path(handle)
        return path

    def resolve(self, handle: bytes) -> PresentedPath:
        """The presented path of ``handle``; raises BadHandle or StaleHandle."""
        known = self.cached(handle)
        if known is not None:
            return known
        if not MIN_SIZE <= len(handle) <= MAX_SIZE:
            raise BadHandle(f"handle of {len(handle)} bytes")
        version, depth, fileid = HEAD.unpack_from(handle)
        k = min(depth, MAX_COMPONENTS)
        body_len = HEAD.size + 4 * k
        if version != VERSION or len(handle) != body_len + MAC_SIZE:
            raise BadHandle("unknown handle layout")
        if not hmac.compare_digest(handle[body_len:], self._mac(handle[:body_len])):
            raise BadHandle("handle MAC does not verify")
        hashes = [handle[HEAD.size + 4 * i : HEAD.size + 4 * i + 4] for i in range(k)]
        path = self._walk((), hashes, depth, fileid)
        if path is None:
            raise StaleHandle(f"no entry with fileid {fileid:#x} at depth {depth}")
        self._remember(bytes(handle), path)
        return path

    def _walk(
        self, prefix: PresentedPath, hashes: list[bytes], depth: int, fileid: int
    ) -> PresentedPath | None:
        """Follow the component hashes down; check the fileid at the end."""
        if not hashes:
            if len(prefix) == depth:
                return prefix if self._fileid(prefix) == fileid else None
            return self._search(prefix, depth, fileid)
        try:
            entries = self.namespace.readdir(prefix)
        except NamespaceError:
            return None
        for name, attrs in entries:
            if name_hash(name) != hashes[0]:
                continue
            if len(hashes) > 1 and attrs.kind != Kind.DIR:
                continue
            found = self._walk((*prefix, name), hashes[1:], depth, fileid)
            if found is not None:
                return found
        return None

    def _search(self, top: PresentedPath, depth: int, fileid: int) -> PresentedPath | None:
        """Breadth-first search below ``top`` for ``fileid`` at ``depth``."""
        level = [top]
        budget = DEEP_SEARCH_BUDGET
        while level and budget > 0:
            below: list[PresentedPath] = []
            for d in level:
                budget -= 1
                if budget < 0:
                    return None
                try:
                    entries = self.namespace.readdir(d)
                except NamespaceError:
                    continue
                for name, attrs in entries:
                    p = (*d, name)
                    if len(p) == depth and attrs.fileid == fileid:
                        return p
                    if len(p) < depth and attrs.kind == Kind.DIR:
                        below.append(p)
            level = below
        return None

    def _fileid(self, path: PresentedPath) -> int | None:
        try:
            return self.namespace.getattr(path).fileid
        except NamespaceError:
            return None
