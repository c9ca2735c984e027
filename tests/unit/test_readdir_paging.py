"""nfsd.programs.nfs3.readdir: a page cut by running sums is the page the entry loop cuts."""

from __future__ import annotations

import dataclasses
import types
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nfsd.programs.errors import NfsError
from nfsd.programs.listings import Listing, PackedEntries, SortedView
from nfsd.programs.nfs3 import readdir
from nfsd.programs.nfs3.service import post_op_attr_of
from tests.unit.test_shared_encodings import attrs, names

CTX = types.SimpleNamespace(transport="tcp")


def encode(cookie: int, row: tuple) -> bytes:
    """Entries of unequal sizes (multiples of 4, as XDR's)."""
    return b"e" * (4 * (1 + cookie % 23) + 4 * len(row[0]))


def page(listing: Listing, cookie: int, maxsize: int, dir_budget: int | None):
    try:
        return readdir._page(
            CTX, listing, cookie, "k", encode, maxsize=maxsize, dir_budget=dir_budget
        )
    except NfsError as e:
        return e.status


# A page asked of a listing: its entries, where it starts, its two budgets.
ASKED = {
    "entries": st.dictionaries(names, attrs, min_size=1, max_size=30),
    "start": st.integers(0, 40),
    "maxsize": st.integers(0, 3000),
    "dir_budget": st.none() | st.integers(0, 600),
}


@settings(max_examples=300, deadline=None)
@given(**ASKED)
def test_pages_by_sums_are_the_loops(entries, start, maxsize, dir_budget) -> None:
    items = tuple(entries.items())
    slow, fast = Listing(items), Listing(items)
    done, eof, pages = 0, False, 0
    while not eof:  # every entry encoded, as a client pages (one entry fits 600 bytes)
        out, eof = page(fast, fast.cookies[done - 1] if done else 0, 600, None)
        done, pages = done + len(out), pages + 1
    assert ("k" in fast.sizes) == (pages > 1)  # a listing in one page is not paged by sums
    if pages == 1:
        readdir._note_sizes(fast, "k")
    assert "k" in fast.sizes and "k" not in slow.sizes
    cookie = fast.cookies[start] if start < len(fast.cookies) else start * 7919
    assert page(fast, cookie, maxsize, dir_budget) == page(slow, cookie, maxsize, dir_budget)


@settings(max_examples=200, deadline=None)
@given(
    entries=st.dictionaries(
        names | st.text(st.sampled_from("aé漢"), min_size=80, max_size=130), attrs, min_size=1
    ),
    lazy=st.booleans(),
)
def test_dircount_sums_are_each_entrys_bytes(entries, lazy) -> None:
    """The running dircount sums, by the table of name lengths, are the entries' own
    (ASCII, UTF-8 and names past 255 bytes; rows of a shared listing's view too)."""
    items = tuple(entries.items())
    listing = Listing(items)
    if lazy:
        order = [items.index(r) for r in listing.rows]
        listing = Listing(items, SortedView(items, order), listing.cookies)
    listing.preload("k", [b"e" * 4] * len(items))
    _, _, info = readdir._note_sizes(listing, "k")
    want = [0]
    for name, _ in listing.rows:
        want.append(want[-1] + 20 + (len(name.encode("utf-8", "surrogateescape")) + 3) // 4 * 4)
    assert list(info) == want


@settings(max_examples=200, deadline=None)
@given(
    folder=st.lists(attrs, min_size=1, max_size=4),
    fsid=st.sampled_from([0, 1, 2**64 - 1]),
    verf=st.binary(min_size=8, max_size=8),
)
def test_a_kept_head_is_the_packed_one(folder, fsid, verf) -> None:
    """``_head`` keeps the reply's head for the folder's very ``Attrs`` object (and
    fsid, verifier); each time it equals the head ``dirlist_reply`` packs."""

    def packed(a, fsid, verf):
        return readdir.dirlist_reply(post_op_attr_of(a, fsid), verf, [], True).parts[0]

    listing = Listing(())
    asked = [(a, fsid, verf) for a in folder]
    asked += [(dataclasses.replace(folder[0]), fsid, verf)]  # equal fields, another object
    asked += [(folder[0], fsid ^ 1, verf), (folder[0], fsid, bytes(8)), (folder[0], fsid, verf)]
    for a, f, v in asked + asked:  # each twice: packed, then kept
        assert readdir._head(listing, a, f, v) == packed(a, f, v)
        assert listing.head is not None and listing.head[:3] == (a, f, v)
        assert listing.head[0] is a


@settings(max_examples=200, deadline=None)
@given(
    encoded=st.lists(st.binary(min_size=1, max_size=40), max_size=30),
    before=st.binary(max_size=10),
    data=st.data(),
)
def test_packed_entries_are_the_list(encoded, before, data) -> None:
    """``PackedEntries`` (one bytes object and its sums, at an offset in a larger
    one, as read from a shared file) is the list it packs, entry for entry."""
    packed = PackedEntries.of(encoded)
    after = PackedEntries(before + packed.data + b"tail", packed.at, len(before))
    for p in (packed, after):
        assert len(p) == len(encoded) and list(p) == encoded and p == encoded
        i = data.draw(st.integers(0, len(encoded)))
        j = data.draw(st.integers(i, len(encoded)))
        assert p.join(i, j) == b"".join(encoded[i:j])
        assert p[i:j] == encoded[i:j]
        if encoded:
            assert p[-1] == encoded[-1]
    with pytest.raises(IndexError):
        packed[len(encoded)]
    with pytest.raises(ValueError):
        PackedEntries(packed.data[:-1], packed.at) if encoded else PackedEntries(b"", array("q"))


@settings(max_examples=200, deadline=None)
@given(**ASKED)
def test_a_packed_listings_page_is_the_lists(entries, start, maxsize, dir_budget) -> None:
    """A page of a listing whose entries are packed is one part, the bytes of the
    same entries the list gives, and counts them."""
    items = tuple(entries.items())
    plain, packed = Listing(items), Listing(items)
    encoded = [encode(c, r) for c, r in zip(plain.cookies, plain.rows, strict=True)]
    plain.preload("k", encoded)
    packed.preload("k", PackedEntries.of(encoded))
    cookie = plain.cookies[start] if start < len(plain.cookies) else start * 7919
    want, got = page(plain, cookie, maxsize, dir_budget), page(packed, cookie, maxsize, dir_budget)
    if isinstance(want, int):  # NFS3ERR_TOOSMALL
        assert got == want
        return
    assert got[1] == want[1] and b"".join(got[0]) == b"".join(want[0])
    assert len(got[0]) <= 1 and readdir.entries_in(got[0]) == len(want[0])
