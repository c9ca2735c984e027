"""nfsd.programs.listings: the cookie order, made the fast way, is the reference order."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from nfsd.programs.listings import Listing, cookie_of, sorted_rows
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
    assert sorted_rows(items) == want
    assert Listing(items).rows == want
    assert [cookie_of(n) for n, _ in items] == [reference_cookie(n) for n, _ in items]
    assert sorted_rows(tuple(reversed(items))) == want  # whatever order the scan gave
