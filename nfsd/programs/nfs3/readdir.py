"""READDIR (RFC 1813 §3.3.16) and READDIRPLUS (§3.3.17).

Design notes: the cookie scheme
-------------------------------
An entry's cookie is a 63-bit hash of its name (never 0, which means "from
the start"), and a directory is listed in cookie order.  A client that
resumes at cookie ``c`` gets the entries whose cookie is greater than
``c``: entries that came or went meanwhile shift nothing, no name is
listed twice, and a cookie stays meaningful across restarts.  The cookie
verifier is one constant of the installation; no verifier is refused, so a
client never sees ``NFS3ERR_BAD_COOKIE``.

The sorted listing of a directory, with each entry's encoding, is cached
while the namespace returns the same listing object (``nfsd.programs.listings``);
a large one's READDIRPLUS entries are shared with the server's other
processes (``nfsd.programs.shared_encodings``).  A folder's first
READDIRPLUS encodes all its entries at once (up to ``AT_ONCE_MAX``; in C,
``_native.c``, its twin ``_entries_plus_py``; their handles at once too,
``HandleCodec.encode_all``; page by page where one
cannot be encoded, so an error comes where it always did).  Once every
entry is encoded, a page is cut by running sums of the sizes
(``_note_sizes``), with no handle encoder set up; entries encoded at once
(or taken from another process) are kept packed in one bytes object
(``nfsd.programs.listings.PackedEntries``), so a page is one slice of it,
one buffer for the transport's ``sendmsg`` rather than ~50, and the reply's head
(status, the folder's attributes, the verifier) is kept on the listing for
the folder's ``Attrs`` object (``_head``): ``nfs-ls`` pages a 10,000-entry
folder in ~205 calls of 8 KiB, so what a page costs besides its entries
counts ~200 times a listing.  Those pages, once every entry is encoded, are
the fast path's (``nfs3.fastpath``, :func:`readdirplus_encoded`: the call
read from the record's bytes, no general dispatch; the same page and body
code as :func:`readdirplus3`, after the same checks in the same order).

Sizes: ``count`` (READDIR) and ``maxcount`` (READDIRPLUS) bound the whole
reply body; ``dircount`` bounds the fileid, name and cookie bytes of the
entries.  A reply never exceeds them, nor 1 MiB (32 KiB over UDP); if not
even one entry fits, the answer is ``NFS3ERR_TOOSMALL``.
"""

from __future__ import annotations

import bisect
import itertools
from array import array
from collections.abc import Callable, Sequence

from merge.namespace import Attrs, Kind, NamespaceError, PresentedPath
from nfsd.native import load
from nfsd.programs.errors import NfsError, nfs_error
from nfsd.programs.handles import HandleCodec
from nfsd.programs.listings import Listing, PackedEntries, Row, raw_len, raw_name, running_sums
from nfsd.programs.nfs3.fastattr import entryplus3_bytes, padded, post_op_attr_bytes
from nfsd.programs.nfs3.service import (
    _FTYPE,
    MAY_EXEC,
    MAY_READ,
    RTMAX,
    UDP_RTMAX,
    Nfs3Service,
    may,
)
from nfsd.programs.shared_encodings import KIND as PLUS
from nfsd.programs.shared_encodings import listing_for
from nfsd.rpc import CallContext, Part, Reply, WouldBlock
from xdr import nfs3
from xdr.base import XdrError
from xdr.nfs3 import NFS3Packer

# the entries encoded in C (_native.c); None: the twin, _entries_plus_py
native = load("nfsd.programs.nfs3._native")

# Fixed XDR sizes (bytes) of the parts of a reply.
STATUS = 4
POST_OP_ATTR = 4 + 84
VERF = 8
LIST_END = 8  # the "no more entries" word and the eof bool
ENTRY_FIXED = 8 + 4 + 8  # fileid, name length, cookie: what dircount counts
_DIR_INFO = [ENTRY_FIXED + padded(k) for k in range(256)]  # an entry's, by name length


def _listing(
    svc: Nfs3Service, ctx: CallContext, fh: nfs3.nfs_fh3
) -> tuple[PresentedPath, Attrs, Listing]:
    path = svc.path_of(fh)
    dattrs = svc.attrs(path)
    _readable_folder(ctx, dattrs)
    if ctx.inline and not svc.listings.known(path):
        # A first listing may scan a large folder: not on the reader.  The
        # pages after it (a client pages through in many calls) come inline.
        raise WouldBlock
    return path, dattrs, _listed(svc, path)


def _readable_folder(ctx: CallContext, dattrs: Attrs) -> None:
    """A listing's checks of its folder (the general path's and the fast path's)."""
    if dattrs.kind != Kind.DIR:
        raise NfsError(nfs3.NFS3ERR_NOTDIR)
    if not may(dattrs, ctx, MAY_READ):
        raise NfsError(nfs3.NFS3ERR_ACCES)


def _listed(svc: Nfs3Service, path: PresentedPath) -> Listing:
    """The folder's listing: the one held while the namespace hands out the same
    entries, else made (and taken from another process if it shared it)."""
    try:
        entries = svc.namespace.readdir(path)
    except NamespaceError as e:
        raise nfs_error(e) from e
    fsid, handles = svc.fsid, svc.handles
    return svc.listings.get(path, entries, lambda e: listing_for(path, e, fsid, handles))


def _cap(ctx: CallContext, count: int) -> int:
    """The reply size allowed: the client's, and no more than a READ's (1 MiB,
    FSINFO's rtmax; knfsd clamps to its largest payload too) or than fits a
    UDP datagram: a count of 2^32-1 over a large folder must not build one
    reply of every entry."""
    return min(count, RTMAX if ctx.transport == "tcp" else UDP_RTMAX)


def _page(
    ctx: CallContext,
    listing: Listing,
    cookie: int,
    kind: str,
    encode: Callable[[int, Row], bytes],
    *,
    maxsize: int,
    dir_budget: int | None,
) -> tuple[list[bytes], bool]:
    """The encoded entries after ``cookie`` that fit the budgets, and eof.

    ``maxsize`` is the client's bound on the whole reply (count, maxcount);
    when not even one entry fits, the answer is NFS3ERR_TOOSMALL.
    """
    budget = _cap(ctx, maxsize) - (STATUS + POST_OP_ATTR + VERF + LIST_END)
    if budget < 0:
        raise NfsError(nfs3.NFS3ERR_TOOSMALL)
    rows = listing.rows
    i = bisect.bisect_right(listing.cookies, cookie) if cookie else 0
    sizes = listing.sizes.get(kind)
    if sizes is None and kind in listing.preloaded:
        sizes = _note_sizes(listing, kind)
    if sizes is not None:
        return _page_by_sizes(sizes, i, budget=budget, dir_budget=dir_budget)
    first = i
    out: list[bytes] = []
    while i < len(rows):
        b = listing.encoded(kind, i, encode)
        if len(b) > budget:
            break
        if dir_budget is not None:
            info = ENTRY_FIXED + padded(raw_len(rows[i][0]))
            if out and info > dir_budget:
                break
            dir_budget -= info
        budget -= len(b)
        out.append(b)
        i += 1
    eof = i == len(rows)
    if not out and not eof:
        raise NfsError(nfs3.NFS3ERR_TOOSMALL)
    if eof and first > 0 and kind not in listing.sizes:
        _note_sizes(listing, kind)  # paged: the next listing is paged by sums
    return out, eof


class Page(list[bytes]):
    """A page's parts (a packed listing's page is one part) and how many entries."""

    __slots__ = ("entries",)

    def __init__(self, parts: list[bytes], entries: int) -> None:
        super().__init__(parts)
        self.entries = entries


def entries_in(out: list[bytes]) -> int:
    """The entries of a page ``_page`` gave."""
    return out.entries if isinstance(out, Page) else len(out)


def _note_sizes(
    listing: Listing, kind: str
) -> tuple[Sequence[bytes], Sequence[int], Sequence[int]] | None:
    """Once every entry of ``kind`` is encoded: the running sums a page is cut by.

    ``at[k]``: the bytes of entries ``0 .. k-1``; ``info[k]``: their dircount
    bytes.  A page is then two bisections and a slice, not a loop over its
    entries: the same entries as the loop (each entry's size is positive).
    The sums are 64-bit arrays, 8 bytes an entry, not lists of int objects
    (36: most sums are past the small ints CPython shares).
    """
    encoded = listing.encodings(kind)
    if encoded is None:
        return None
    at = running_sums(encoded)  # a packed listing's own
    names = listing.names()
    lengths = map(len, names) if all(map(str.isascii, names)) else map(raw_len, names)
    try:  # by a table of name lengths (a storage name is at most 255 bytes)
        info = array("q", itertools.accumulate(map(_DIR_INFO.__getitem__, lengths), initial=0))
    except IndexError:  # longer: each the long way
        each = (ENTRY_FIXED + padded(raw_len(name)) for name in names)
        info = array("q", itertools.accumulate(each, initial=0))
    listing.sizes[kind] = sizes = (encoded, at, info)
    return sizes


def _page_by_sizes(
    sizes: tuple[Sequence[bytes], Sequence[int], Sequence[int]],
    i: int,
    *,
    budget: int,
    dir_budget: int | None,
) -> tuple[list[bytes], bool]:
    """``_page``'s answer from the running sums (``_note_sizes``)."""
    encoded, at, info = sizes
    n = len(encoded)
    j = bisect.bisect_right(at, at[i] + budget, i) - 1  # the bytes' budget: entries i .. j-1
    if dir_budget is not None:
        # The first entry is counted even past dircount; the others must fit.
        j = min(j, max(bisect.bisect_right(info, info[i] + dir_budget, i) - 1, i + 1))
    eof = j == n
    if j <= i and not eof:
        raise NfsError(nfs3.NFS3ERR_TOOSMALL)
    if isinstance(encoded, PackedEntries):  # one part: the entries' bytes are contiguous
        return Page([encoded.join(i, j)] if j > i else [], max(j - i, 0)), eof
    return list(encoded[i:j]), eof


def dirlist_reply(
    dir_attributes: nfs3.post_op_attr, verf: bytes, entries: list[bytes], eof: bool
) -> Reply:
    """A READDIR or READDIRPLUS success: head, the entries' cached bytes, the end."""
    p = NFS3Packer()
    p.pack_uint(nfs3.NFS3_OK)
    p.pack_post_op_attr(dir_attributes)
    p.pack_fopaque(nfs3.NFS3_COOKIEVERFSIZE, verf)
    return Reply([p.get_buffer(), *entries, nfs3.dirlist_end_bytes(eof)])


_OK = NFS3Packer()
_OK.pack_uint(nfs3.NFS3_OK)
_OK_BYTES = _OK.get_buffer()


def _head(listing: Listing, dattrs: Attrs, fsid: int, verf: bytes) -> bytes:
    """``dirlist_reply``'s head (status, the folder's attributes, the verifier) as bytes,
    kept on the listing for the very ``dattrs`` object: a client pages through a
    folder in ~200 calls within the second the namespace hands out the same
    ``Attrs`` (frozen), so the head is one identity test rather than a packing.
    ``post_op_attr_bytes`` is byte for byte ``post_op_attr_of``'s packing
    (``tests/unit/test_fastattr.py``)."""
    last = listing.head  # one tuple, read and replaced whole: safe across threads
    if last is not None and last[0] is dattrs and last[1] == fsid and last[2] == verf:
        return last[3]
    head = _OK_BYTES + post_op_attr_bytes(dattrs, fsid) + verf
    listing.head = (dattrs, fsid, verf, head)
    return head


# RFC 1813 §3.3.16
def readdir3(svc: Nfs3Service, ctx: CallContext, args: nfs3.READDIR3args) -> Reply:
    path, dattrs, listing = _listing(svc, ctx, args.dir)

    def encode(cookie: int, row: Row) -> bytes:
        name, a = row
        return nfs3.entry3_bytes(nfs3.entry3(a.fileid, raw_name(name), cookie))

    out, eof = _page(
        ctx, listing, args.cookie, "readdir", encode, maxsize=args.count, dir_budget=None
    )
    ctx.note = (
        f"/{'/'.join(path)} cookie={args.cookie} count={args.count} entries={entries_in(out)}"
    )
    return _names_reply(svc, listing, dattrs, out, eof)


def _names_reply(
    svc: Nfs3Service, listing: Listing, dattrs: Attrs, out: list[bytes], eof: bool
) -> Reply:
    """A page of entries as READDIR (and a READDIRPLUS of names only) answers it."""
    head = _head(listing, dattrs, svc.fsid, svc.cookieverf)
    return Reply([head, *out, nfs3.dirlist_end_bytes(eof)])


# RFC 1813 §3.3.17
AT_ONCE_MAX = 65536  # a listing of more entries is encoded page by page, as it is asked


def _entries_plus(
    listing: Listing, fsid: int, codec: HandleCodec, path: PresentedPath
) -> list[bytes] | None:
    """Every entry of ``listing`` as READDIRPLUS encodes it, at once (the first
    READDIRPLUS of a folder: no paging loop over its entries), or None where one
    cannot be encoded (then each page encodes its own, and fails where it did).

    ``nfsd.programs.nfs3._native.entries_plus`` or its twin ``_entries_plus_py``.
    """
    rows = listing.rows
    if not isinstance(rows, list):
        return None  # a view of a shared listing: those come encoded
    handles = codec.encode_all(path, listing.names(), [a.fileid for _, a in rows])
    if native is not None:
        found = native.entries_plus(listing.cookies, rows, fsid, handles, _FTYPE)
        if found is not None:
            return found
    return _entries_plus_py(listing.cookies, rows, fsid, handles)


def _entries_plus_py(
    cookies: Sequence[int], rows: Sequence[Row], fsid: int, handles: Sequence[bytes]
) -> list[bytes] | None:
    try:
        return [
            entryplus3_bytes(cookie, raw_name(name), a, fsid, fh)
            for cookie, (name, a), fh in zip(cookies, rows, handles, strict=True)
        ]
    except (XdrError, KeyError, ValueError):
        return None  # encoded page by page: the error where it always was


BARE = "plus-bare"
"""The kind of a listing's READDIRPLUS entries with no attributes and no handle."""
_NEITHER = bytes(8)  # post_op_attr and post_op_fh3, neither following


def entryplus3_bare(cookie: int, row: Row) -> bytes:
    """An entryplus3 with neither the attributes nor the handle (RFC 1813 §3.3.17:
    both optional): what a caller who may list a folder (r) but not look its names
    up (x) is told, as knfsd answers (its entries' lookup fails the search check):
    the handles of a folder one may not search would open its files."""
    name, a = row
    return nfs3.entry3_bytes(nfs3.entry3(a.fileid, raw_name(name), cookie)) + _NEITHER


def searchable(ctx: CallContext, dattrs: Attrs) -> bool:
    """Whether the caller may look names up in the folder: else ``entryplus3_bare``."""
    return may(dattrs, ctx, MAY_EXEC)


def readdirplus3(svc: Nfs3Service, ctx: CallContext, args: nfs3.READDIRPLUS3args) -> Reply:
    path, dattrs, listing = _listing(svc, ctx, args.dir)
    if not searchable(ctx, dattrs):
        out, eof = _page(
            ctx, listing, args.cookie, BARE, entryplus3_bare,
            maxsize=args.maxcount, dir_budget=args.dircount,
        )  # fmt: skip
        return _names_reply(svc, listing, dattrs, out, eof)
    if PLUS in listing.sizes:  # every entry encoded: cut by the sums, no handle to make
        out, eof = _plus_encoded(ctx, listing, args.cookie, args.dircount, args.maxcount)
    else:
        out, eof = _plus_page(svc, ctx, args, path, listing)
    ctx.note = (
        f"/{'/'.join(path)} cookie={args.cookie} dircount={args.dircount} "
        f"maxcount={args.maxcount} entries={entries_in(out)}"
    )
    return Reply(_plus_parts(svc, dattrs, listing, out, eof))


def readdirplus_encoded(  # noqa: PLR0917 (READDIRPLUS3args, read by the fast path)
    svc: Nfs3Service,
    ctx: CallContext,
    path: PresentedPath,
    dattrs: Attrs,
    cookie: int,
    dircount: int,
    maxcount: int,
) -> list[Part] | None:
    """READDIRPLUS's reply body for the fast path (``nfs3.fastpath``): a page of
    a listing every entry of which is encoded already, as :func:`readdirplus3`
    answers it; None for anything else (then the general path answers, the same
    code after the same checks: a refusal, an error, a folder to list first).

    A client pages through a large folder in ~200 calls; all but the first
    are this (``nfs-ls``: 8 KiB pages of a 10,000-entry folder)."""
    try:
        _readable_folder(ctx, dattrs)
        if not searchable(ctx, dattrs) or not svc.listings.known(path):
            return None
        listing = _listed(svc, path)
        if PLUS not in listing.sizes:
            return None
        out, eof = _plus_encoded(ctx, listing, cookie, dircount, maxcount)
    except NfsError:
        return None
    return _plus_parts(svc, dattrs, listing, out, eof)


def _plus_encoded(
    ctx: CallContext, listing: Listing, cookie: int, dircount: int, maxcount: int
) -> tuple[list[bytes], bool]:
    """A READDIRPLUS page of a listing whose every entry is encoded (``_page``)."""
    return _page(
        ctx, listing, cookie, PLUS, _encoded_already, maxsize=maxcount, dir_budget=dircount
    )


def _plus_parts(
    svc: Nfs3Service, dattrs: Attrs, listing: Listing, out: list[bytes], eof: bool
) -> list[Part]:
    """A READDIRPLUS page's reply body; the listing shared at its end (``share``)."""
    if eof and listing.share is not None and listing.share(listing):
        listing.share = None
    head = _head(listing, dattrs, svc.fsid, svc.cookieverf)
    return [head, *out, nfs3.dirlist_end_bytes(eof)]


def _encoded_already(cookie: int, row: Row) -> bytes:
    """The encoder of a listing whose entries are all encoded: ``_page`` never calls it."""
    raise AssertionError("every entry is encoded")


def _plus_page(
    svc: Nfs3Service,
    ctx: CallContext,
    args: nfs3.READDIRPLUS3args,
    path: PresentedPath,
    listing: Listing,
) -> tuple[list[bytes], bool]:
    """A READDIRPLUS page of a listing not yet wholly encoded (``_page``)."""
    fsid = svc.fsid
    with svc.handles.issuing(path) as handle_in:
        if not listing.started(PLUS) and len(listing.rows) <= AT_ONCE_MAX:
            encoded = _entries_plus(listing, fsid, svc.handles, path)
            if encoded is not None:  # then paged by running sums, a page one part
                listing.preload(PLUS, PackedEntries.of(encoded))

        def encode(cookie: int, row: Row) -> bytes:
            name, a = row
            raw = name.encode("utf-8", "surrogateescape")
            return entryplus3_bytes(cookie, raw, a, fsid, handle_in(name, a.fileid))

        out, eof = _page(
            ctx,
            listing,
            args.cookie,
            PLUS,
            encode,
            maxsize=args.maxcount,
            dir_budget=args.dircount,
        )
    return out, eof
