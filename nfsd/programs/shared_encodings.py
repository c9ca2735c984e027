"""A large folder's READDIRPLUS entries, encoded once for all the server's processes.

Design notes
------------
``merge.shared`` lets a process read a large listing another process made
a moment ago instead of scanning; the reader would still encode each of
its 10,000 entries (handle, attributes, cookie order) before answering.
So the process that encodes a shared listing's READDIRPLUS entries first
keeps them, as an extra of that listing (``SharedListings.store_extra``),
and a process that reads the same listing takes them.

What the bytes depend on, and so what keys them: the entries (names and
every attribute: the shared listing's digest), the order of the cookies
(a function of the names), the fattr3 ``fsid`` of the export, and the
handles: the secret (its fingerprint, ``HandleCodec.key_id``), the
folder's path and the handle layout (this format's tag).  The cookie
verifier is not in an entry.  The digest is asked of ``merge.shared`` for
the very object the namespace handed out, so the entries are the ones it
checked, within their deadline.

A file that is damaged or of another key is ignored by ``merge.shared``
(its CRC-32 and length, the digests it names); one that does not fit
the listing (another count, offsets past its end) is ignored here: the
reader encodes, as without this cache.
The handles taken are remembered by the codec as if it had issued them
(``HandleCodec.adopt``: per folder, taken into its cache when a call
presents one).  The sorted rows are a view of the shared entries
(``SortedView``): their attributes are made only if something asks; the
encoded entries stay in the bytes read (``PackedEntries``: no 10,000
slices), a page one slice of them.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Sequence

from merge.namespace import Attrs, PresentedPath
from merge.shared import sharing
from nfsd.programs.handles import HandleCodec
from nfsd.programs.listings import Listing, PackedEntries, SortedView, running_sums

KIND = "readdirplus"  # the Listing kind readdir.py encodes READDIRPLUS entries under
_FORMAT = b"rdp3"  # 3: the encodings' running sums (2: their lengths); 2: the dircount sums
_COUNT = struct.Struct("=Q")

Entries = Sequence[tuple[str, Attrs]]


def tag(path: PresentedPath, fsid: int, key_id: bytes) -> bytes:
    """What the encoded entries depend on besides the entries themselves."""
    names = b"".join(n.encode("utf-8", "surrogateescape") + b"\0" for n in path)
    return _FORMAT + struct.pack(">Q", fsid) + key_id + names


def listing_for(path: PresentedPath, entries: Entries, fsid: int, handles: HandleCodec) -> Listing:
    """The listing of ``entries``: with its READDIRPLUS entries when another process
    shared them, else one that shares them once all are encoded."""
    found = sharing(entries)
    if found is None:
        return Listing(entries)
    shared, digest = found
    key = tag(path, fsid, handles.key_id())
    data = shared.load_extra(digest, key)
    if data is not None:
        listing = unpack(entries, data, path, handles)
        if listing is not None:
            return listing

    def share(listing: Listing) -> bool:
        encoded = listing.encodings(KIND)
        if encoded is None:
            return False  # a client started midway: not yet
        shared.store_extra(digest, key, pack(listing, encoded))
        listing.order = None  # its only use
        return True

    listing = Listing(entries)
    listing.share = share
    return listing


def pack(listing: Listing, encoded: Sequence[bytes]) -> bytes:
    """The count; each row's index in the source and cookie; the running sums of
    the encodings' lengths (``PackedEntries.at``: the reader need not add 10,000
    lengths, ~0.4 ms); those of the entries' dircount bytes (``readdir``'s paging
    sums, so the reader need not make them) if the listing has them, else none
    (a count of 0); the encodings."""
    n = len(encoded)
    order = listing.order  # kept from the sort
    if order is None or len(order) != n:
        pos = {name: i for i, (name, _) in enumerate(listing.source)}
        order = array("I", [pos[r[0]] for r in listing.rows])
    cookies = array("q", listing.cookies)
    sums = running_sums(encoded)
    sizes = listing.sizes.get(KIND)
    info = sizes[2] if sizes is not None and len(sizes[2]) == n + 1 else array("q")
    return b"".join(
        [
            _COUNT.pack(n),
            order.tobytes(),
            cookies.tobytes(),
            sums.tobytes(),  # 64-bit already (running_sums)
            _COUNT.pack(len(info)),
            array("q", info).tobytes(),
            *([encoded.join(0, n)] if isinstance(encoded, PackedEntries) else encoded),
        ]
    )


def unpack(
    entries: Entries, data: bytes, path: PresentedPath, handles: HandleCodec
) -> Listing | None:
    """The listing ``pack`` described, its handles adopted; None if it does not fit."""
    n = len(entries)
    if len(data) < _COUNT.size or _COUNT.unpack_from(data)[0] != n:
        return None
    if len(data) < _COUNT.size * 2 + n * 20 + 8:  # the sections of fixed size: whole
        return None
    at = _COUNT.size
    order, cookies, sums = array("I"), array("q"), array("q")
    for arr, count in ((order, n), (cookies, n), (sums, n + 1)):
        size = count * arr.itemsize
        arr.frombytes(data[at : at + size])
        at += size
    (k,) = _COUNT.unpack_from(data, at)
    at += _COUNT.size
    if k not in {0, n + 1} or len(data) < at + 8 * k:
        return None
    info = array("q")
    info.frombytes(data[at : at + 8 * k])
    at += 8 * k
    # The bytes are as ``pack`` wrote them (merge.shared checked their CRC);
    # what is checked here is that they are of this listing and hold
    # together: the count, the sections' sizes, the sums' ends, the order's
    # range, and room for a handle an entry (each entry ends with its
    # handle).  Not each sum against the next: a pass over 10,000 of them
    # (~0.5 ms) for what only a wrong ``pack`` could write.
    if sums[0] != 0 or at + sums[-1] != len(data) or (n and max(order) >= n):
        return None
    if k and info[0] != 0:
        return None
    encoded = PackedEntries(data, sums, at)  # not cut into 10,000 objects
    hsize = handles.size_at(len(path) + 1)
    if sums[-1] < n * hsize:
        return None
    listing = Listing(entries, SortedView(entries, order), cookies)
    listing.preload(KIND, encoded)
    if k:  # the writer's paging sums: readdir pages by them at once
        listing.sizes[KIND] = (encoded, sums, info)
    handles.adopt(path, listing.names, lambda: [e[-hsize:] for e in encoded])
    return listing
