"""nfsd.programs.nfs3._native (READDIRPLUS entries in C) against its pure-Python twin.

``entries_plus`` must give, for every row, the bytes of
``fastattr.entryplus3_bytes`` (itself checked against the XDR packer), and
None exactly where that twin raises or a value does not fit 64 bits: names
of every length and alphabet (non-UTF-8 bytes surrogate-escaped), any kind,
values at and past every field's XDR range, negative times, handles of
every size.  And a listing encoded at once pages exactly as one encoded page
by page (``readdir._entries_plus``).
"""

from __future__ import annotations

import os
from array import array
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from merge.namespace import Attrs, Kind
from nfsd.programs.handles import HandleCodec
from nfsd.programs.listings import Listing
from nfsd.programs.nfs3 import readdir
from nfsd.programs.nfs3.service import _FTYPE

native = pytest.importorskip("nfsd.programs.nfs3._native")

FIELD = st.one_of(
    st.integers(0, 2**32 + 1),
    st.integers(-(2**64), 2**64 + 1),
    st.sampled_from([0, 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -1]),
)
TIME = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-(2**70), 2**70))
OK = st.integers(0, 2**31)

names = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=100),
    st.text(st.sampled_from("aé漢"), min_size=80, max_size=130),  # around 255 bytes
    st.binary(min_size=1, max_size=300).map(os.fsdecode),
)


@st.composite
def attrs(draw: Any, wild: bool) -> Attrs:
    f = FIELD if wild else OK
    return Attrs(
        kind=draw(st.sampled_from([*Kind, 7]) if wild else st.sampled_from(list(Kind))),
        size=draw(f),
        used=draw(f),
        mode=draw(f),
        nlink=draw(f),
        uid=draw(f),
        gid=draw(f),
        fileid=draw(f),
        atime_ns=draw(TIME),
        mtime_ns=draw(TIME),
        ctime_ns=draw(TIME),
    )


INTS = ("size", "used", "mode", "nlink", "uid", "gid", "fileid", "atime_ns", "mtime_ns", "ctime_ns")


def twin(cookies: Any, rows: list, fsid: int, handles: list) -> list[bytes] | None:
    return readdir._entries_plus_py(cookies, rows, fsid, handles)


@settings(max_examples=400, deadline=None)
@given(
    data=st.data(),
    n=st.integers(0, 6),
    wild=st.booleans(),
    fsid=st.one_of(OK, FIELD),
)
def test_entries_plus_equals_its_twin(data: Any, n: int, wild: bool, fsid: int) -> None:
    rows = [(data.draw(names), data.draw(attrs(wild))) for _ in range(n)]
    cookies = array(
        "q", [data.draw(st.integers(-(2**63), 2**63 - 1) if wild else OK) for _ in rows]
    )
    handles = [data.draw(st.binary(max_size=70 if wild else 64)) for _ in rows]
    want = twin(cookies, rows, fsid, handles)
    got = native.entries_plus(cookies, rows, fsid, handles, _FTYPE)
    if got is None:  # declined: the twin refuses, or a value past a C long long
        big = any(not -(2**63) <= getattr(a, f) < 2**63 for _, a in rows for f in INTS)
        assert want is None or big or not 0 <= fsid < 2**64
    else:
        assert got == want


def test_entries_plus_checks_its_arguments() -> None:
    a = Attrs(Kind.REG, 1, 512, 0o444, 1, 0, 0, 5, 0, 0, 0)
    rows = [("n", a)]
    fh = [b"h" * 20]
    assert native.entries_plus(array("q", [3]), rows, 1, fh, _FTYPE) == twin([3], rows, 1, fh)
    assert native.entries_plus(array("q", [3, 4]), rows, 1, fh, _FTYPE) is None  # counts
    assert native.entries_plus(array("i", [3]), rows, 1, fh, _FTYPE) is None  # 4-byte items
    assert native.entries_plus(array("q", [3]), rows, 1, [b"h" * 65], _FTYPE) is None
    assert native.entries_plus(array("q", [3]), [("n" * 256, a)], 1, fh, _FTYPE) is None
    assert native.entries_plus(array("q", [3]), [["n", a]], 1, fh, _FTYPE) is None
    with pytest.raises(TypeError):
        native.entries_plus(b"", tuple(rows), 1, fh, _FTYPE)
    with pytest.raises(AttributeError):
        native.entries_plus(array("q", [3]), [("n", object())], 1, fh, _FTYPE)


@settings(max_examples=100, deadline=None)
@given(
    entries=st.dictionaries(names, attrs(False), min_size=1, max_size=30),
    fsid=OK,
)
def test_a_listing_encoded_at_once_is_the_one_encoded_by_pages(entries: dict, fsid: int) -> None:
    """The bytes of every entry, made at once (C or twin), are those each page makes."""
    items = tuple(entries.items())
    listing = Listing(items)

    codec = HandleCodec(None, b"s" * 32)  # type: ignore[arg-type]
    handle_in = HandleCodec(None, b"s" * 32).encoder_in(("d",))  # type: ignore[arg-type]
    at_once = readdir._entries_plus(listing, fsid, codec, ("d",))
    by_one = [
        readdir.entryplus3_bytes(c, readdir.raw_name(n), a, fsid, handle_in(n, a.fileid))
        if len(readdir.raw_name(n)) <= 255
        else None
        for c, (n, a) in zip(listing.cookies, listing.rows, strict=True)
    ]
    if None in by_one:
        assert at_once is None  # a name too long: page by page, as before
    else:
        assert at_once == by_one
