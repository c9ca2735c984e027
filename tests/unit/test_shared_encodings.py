"""nfsd.programs.shared_encodings: READDIRPLUS entries one process encoded, taken by another.

Two ``SharedListings`` over one folder, and two codecs with one secret,
stand for two worker processes.  What the second takes must be byte for
byte what it would have encoded itself (rows in cookie order, entries,
handles it remembers); anything damaged, of another key or not fitting
costs only the encoding.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from merge.namespace import Attrs, Kind
from merge.shared import SharedListings
from merge.stack import Stack, build_stack
from nfsd.programs import shared_encodings
from nfsd.programs.handles import HandleCodec
from nfsd.programs.listings import Listing, raw_name
from nfsd.programs.nfs3 import readdir
from nfsd.programs.nfs3.fastattr import entryplus3_bytes
from nfsd.programs.shared_encodings import KIND, listing_for
from tests.proto.nfsclient import Caller
from tests.unit.merge_helpers import write
from tests.unit.test_shared_listings import DAMAGE
from xdr import nfs3
from xdr.nfs3 import NFS3Packer, NFS3Unpacker

STAMP = (1, 2, 3, 4)
FSID = 7
SECRET = b"s" * 32
PATH = ("a", "big")

names = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0"), min_size=1, max_size=20
)
attrs = st.builds(
    Attrs,
    kind=st.sampled_from(list(Kind)),
    size=st.integers(0, 2**62),
    used=st.integers(0, 2**62),
    mode=st.integers(0, 0o7777),
    nlink=st.integers(1, 2**31),
    uid=st.integers(0, 2**31),
    gid=st.integers(0, 2**31),
    fileid=st.integers(1, 2**63 - 1),
    atime_ns=st.integers(0, 2**62),
    mtime_ns=st.integers(0, 2**62),
    ctime_ns=st.integers(0, 2**62),
)
listings = st.dictionaries(names, attrs, min_size=1, max_size=40).map(lambda d: tuple(d.items()))


def encode_all(listing: Listing, path, codec: HandleCodec, fsid: int = FSID) -> list[bytes]:
    """Every entry encoded as readdir.py's READDIRPLUS encodes them (then shared)."""
    with codec.issuing(path) as handle_in:
        out = [
            listing.encoded(
                KIND,
                i,
                lambda c, r: entryplus3_bytes(
                    c, raw_name(r[0]), r[1], fsid, handle_in(r[0], r[1].fileid)
                ),
            )
            for i in range(len(listing.rows))
        ]
    if listing.share is not None:
        assert listing.share(listing)
    return out


class Worker:
    def __init__(self, folder: Path, secret: bytes = SECRET) -> None:
        self.shared = SharedListings(str(folder), min_entries=1, boot="boot-1")
        self.codec = HandleCodec(None, secret)  # type: ignore[arg-type]


def share(tmp_path: Path, items, path=PATH) -> tuple[Worker, Listing]:
    """A first worker lists ``items`` and encodes them all; what the second reads."""
    a, b = Worker(tmp_path), Worker(tmp_path)
    handed = a.shared.store(path, items, 10.0, STAMP)
    encode_all(listing_for(path, handed, FSID, a.codec), path, a.codec)
    got = b.shared.load(path, 1.0, STAMP)
    assert got is not None
    return b, got[0]


def fresh(items, path=PATH, secret: bytes = SECRET) -> tuple[Listing, list[bytes], HandleCodec]:
    codec = HandleCodec(None, secret)  # type: ignore[arg-type]
    listing = Listing(items)
    return listing, encode_all(listing, path, codec), codec


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(items=listings)
def test_taken_entries_are_the_bytes_a_fresh_encoding_makes(tmp_path_factory, items) -> None:
    tmp_path = tmp_path_factory.mktemp("shared")
    b, items_b = share(tmp_path, items)
    taken = listing_for(PATH, items_b, FSID, b.codec)
    assert taken.encodings(KIND) is not None  # taken, not encoded
    want, encoded, codec = fresh(items_b)
    assert taken.rows == want.rows and taken.cookies == want.cookies
    assert taken.encodings(KIND) == encoded
    # The handles remembered as if issued: found again with no walk (no namespace), and
    # handed out again with no MAC made.
    b.codec._mac = None  # type: ignore[assignment,method-assign]
    for h, p in codec._by_handle.items():
        assert b.codec.encode(p, int.from_bytes(h[2:10], "big")) == h
    for h, p in codec._by_handle.items():
        assert b.codec.cached(h) == p


def test_another_fsid_secret_or_path_is_not_taken(tmp_path: Path) -> None:
    items = (("x", Attrs(Kind.REG, 1, 1, 0o444, 1, 0, 0, 5, 1, 2, 3)),)
    b, items_b = share(tmp_path, items)
    assert listing_for(PATH, items_b, FSID + 1, b.codec).encodings(KIND) is None
    other = HandleCodec(None, b"t" * 32)  # type: ignore[arg-type]
    assert listing_for(PATH, items_b, FSID, other).encodings(KIND) is None
    assert listing_for(("a", "other"), items_b, FSID, b.codec).encodings(KIND) is None
    assert listing_for(PATH, items_b, FSID, b.codec).encodings(KIND) is not None


def test_a_listing_not_from_the_shared_folder_is_not_taken(tmp_path: Path) -> None:
    items = (("x", Attrs(Kind.REG, 1, 1, 0o444, 1, 0, 0, 5, 1, 2, 3)),)
    b, items_b = share(tmp_path, items)
    same_content = tuple(items_b)  # equal, but not the object merge.shared checked
    assert listing_for(PATH, same_content, FSID, b.codec).share is None


def big_items(n: int = 50):
    return tuple(
        (f"n{i}", Attrs(Kind.REG, i, i, 0o444, 1, 0, 0, 100 + i, i, i, i)) for i in range(n)
    )


@pytest.mark.parametrize("how", [h for h in DAMAGE if h != "gone"] + ["gone"])
def test_a_damaged_file_costs_only_the_encoding(tmp_path: Path, how: str) -> None:
    b, items_b = share(tmp_path, big_items())
    (victim,) = tmp_path.glob("*.extra")
    DAMAGE[how](victim)
    listing = listing_for(PATH, items_b, FSID, b.codec)
    assert listing.encodings(KIND) is None
    _, encoded, _ = fresh(items_b)
    assert encode_all(listing, PATH, b.codec) == encoded


def test_bytes_that_do_not_fit_the_listing_are_not_taken(tmp_path: Path) -> None:
    items = big_items()
    _, items_b = share(tmp_path, items)
    listing, encoded, _ = fresh(items_b)
    data = shared_encodings.pack(listing, encoded)
    codec = HandleCodec(None, SECRET)  # type: ignore[arg-type]
    assert shared_encodings.unpack(items_b, data, PATH, codec) is not None
    assert shared_encodings.unpack(items_b[:-1], data, PATH, codec) is None  # another count
    assert shared_encodings.unpack(items_b, data[:-1], PATH, codec) is None  # short
    assert shared_encodings.unpack(items_b, data + b"x", PATH, codec) is None  # long
    bad_order = data[:8] + (10**6).to_bytes(4, "little") + data[12:]
    assert shared_encodings.unpack(items_b, bad_order, PATH, codec) is None
    n = len(items)
    sums_at = 8 + 12 * n  # after the count, the order and the cookies
    for cut in (4, 8 + 3, sums_at + 5, sums_at + 8 * (n + 1) + 3):  # within the fixed sections
        assert shared_encodings.unpack(items_b, data[:cut], PATH, codec) is None
    first_sum = data[:sums_at] + (1).to_bytes(8, "little") + data[sums_at + 8 :]
    assert shared_encodings.unpack(items_b, first_sum, PATH, codec) is None
    last = sums_at + 8 * n
    total = int.from_bytes(data[last : last + 8], "little")
    for wrong in (total - 1, total + 1):
        last_sum = data[:last] + wrong.to_bytes(8, "little") + data[last + 8 :]
        assert shared_encodings.unpack(items_b, last_sum, PATH, codec) is None


def test_extras_are_bounded(tmp_path: Path) -> None:
    a = SharedListings(str(tmp_path), min_entries=1, boot="boot-1", files=3)
    for i in range(8):
        a.store_extra(bytes([i]) * 16, b"tag", os.urandom(100))
    assert len(list(tmp_path.glob("*.extra"))) <= 3
    assert a.load_extra(bytes([7]) * 16, b"tag") is not None
    assert a.load_extra(bytes([7]) * 16, b"other tag") is None


def list_pages(caller, fh, maxcount: int = 1200) -> list[bytes]:
    """The reply bodies of a whole READDIRPLUS listing, paged as a client pages it."""
    cookie, verf, pages = 0, b"\0" * 8, []
    while True:
        p = NFS3Packer()
        p.pack_READDIRPLUS3args(nfs3.READDIRPLUS3args(fh, cookie, verf, 600, maxcount))
        body = caller._call(nfs3.NFS_PROGRAM, 3, nfs3.NFSPROC3_READDIRPLUS, p.get_buffer())
        pages.append(body)
        res = NFS3Unpacker(body).unpack_READDIRPLUS3res()
        assert res.status == nfs3.NFS3_OK
        verf, cookie = res.resok.cookieverf, res.resok.reply.entries[-1].cookie
        if res.resok.reply.eof:
            return pages


def test_the_other_worker_replies_with_the_bytes_of_its_own_encoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the dispatcher: a second worker that takes the first one's entries
    sends the replies of a worker that shares nothing, without encoding one."""
    for i in range(60):
        write(tmp_path / "storage" / "big" / f"f{i:03d}", b"x" * i)

    def worker(shared: bool) -> tuple[Caller, Stack]:
        s = build_stack(
            str(tmp_path / "storage"),
            clock=lambda: 0.0,
            shared_listings=(
                SharedListings(str(tmp_path / "listings"), min_entries=1, boot="b")
                if shared
                else None
            ),
        )
        return Caller(s.top), s

    encoded = [0]

    def counted(*args):
        encoded[0] += 1
        return entryplus3_bytes(*args)

    monkeypatch.setattr(readdir, "entryplus3_bytes", counted)
    if readdir.native is not None:  # the entries encoded at once in C: counted as well
        real = readdir.native

        class Counting:
            @staticmethod
            def entries_plus(*args):  # type: ignore[no-untyped-def]
                found = real.entries_plus(*args)
                encoded[0] += len(found) if found is not None else 0
                return found

        monkeypatch.setattr(readdir, "native", Counting)
    pages, stacks = [], []
    for shared in (True, True, False):
        caller, stack = worker(shared)
        stacks.append(stack)
        encoded[0] = 0
        pages.append(list_pages(caller, caller.walk("big")))
        assert encoded[0] == (0 if len(pages) == 2 else 60)
        assert caller.lookup(caller.walk("big"), b"f007").status == nfs3.NFS3_OK
    # After the head (status, the folder's attributes: listing it moves its
    # atime, relatime; the verifier), every byte.
    entries = [[page[4 + 88 + 8 :] for page in listing] for listing in pages]
    assert entries[0] == entries[1] == entries[2]
    assert len(pages[0]) > 3
    for s in stacks:
        s.close()


@settings(max_examples=100, deadline=None)
@given(items=listings)
def test_the_order_kept_from_the_sort_packs_the_same_bytes(items) -> None:
    """``Listing.order`` (each row's index in the source, kept from the sort) packs what
    finding each row's name in the source packs."""
    listing = Listing(items)
    assert listing.order is not None
    assert [items[k] for k in listing.order] == list(listing.rows)
    encoded = [b"e%d" % i for i in range(len(items))]
    kept = shared_encodings.pack(listing, encoded)
    listing.order = None
    assert shared_encodings.pack(listing, encoded) == kept


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(items=listings, paged=st.booleans())
def test_the_paging_sums_taken_are_the_ones_the_reader_would_make(
    tmp_path_factory, items, paged: bool
) -> None:
    """A writer that paged by sums shares them; the reader pages by the very sums it
    would have made (and makes them itself when the writer had none)."""
    tmp_path = tmp_path_factory.mktemp("sums")
    a, b = Worker(tmp_path), Worker(tmp_path)
    handed = a.shared.store(PATH, items, 10.0, STAMP)
    first = listing_for(PATH, handed, FSID, a.codec)
    first.share, share_it = None, first.share
    encode_all(first, PATH, a.codec)
    if paged:
        readdir._note_sizes(first, KIND)
    assert share_it is not None and share_it(first)
    got = b.shared.load(PATH, 1.0, STAMP)
    assert got is not None
    taken = listing_for(PATH, got[0], FSID, b.codec)
    assert (KIND in taken.sizes) == paged  # given whole, or made on the first page
    if not paged:
        readdir._note_sizes(taken, KIND)
    encoded, at, info = taken.sizes[KIND]
    want, enc = Listing(got[0]), taken.encodings(KIND)
    assert enc is not None
    want.preload(KIND, enc)
    _, want_at, want_info = readdir._note_sizes(want, KIND)  # type: ignore[misc]
    assert encoded == enc and list(at) == list(want_at) and list(info) == list(want_info)
