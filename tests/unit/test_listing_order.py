"""nfsd.programs.listings: the cookie order, made the fast way, is the reference order."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from nfsd.programs.listings import Listing, cookie_of, raw_len, raw_name, sorted_rows
from tests.unit.test_shared_encodings import attrs, names


def reference_cookie(name: str) -> int:
    """The cookie as first defined: a new BLAKE2b-64 of the name, shifted, never 0."""
    raw = name.encode("utf-8", "surrogateescape")
    c = int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big")
    return (c >> 1) or 1


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(names, attrs, max_size=60))
def test_rows_are_sorted_by_cookie_then_name_as_the_reference(entries) -> None:
    items = tuple(entries.items())
    want = sorted(
        (reference_cookie(n), n.encode("utf-8", "surrogateescape"), n, a) for n, a in items
    )
    want_rows, want_cookies = [(n, a) for _, _, n, a in want], [c for c, _, _, _ in want]
    rows, cookies = sorted_rows(items)
    assert rows == want_rows and list(cookies) == want_cookies
    assert all(any(r is pair for pair in items) for r in rows)  # the source's own pairs
    listing = Listing(items)
    assert listing.rows == want_rows and list(listing.cookies) == want_cookies
    assert [cookie_of(n) for n, _ in items] == [reference_cookie(n) for n, _ in items]
    rows, cookies = sorted_rows(tuple(reversed(items)))  # whatever order the scan gave
    assert rows == want_rows and list(cookies) == want_cookies
    assert [raw_len(n) for n, _ in items] == [len(raw_name(n)) for n, _ in items]
