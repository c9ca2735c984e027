"""merge.shared.PackedItems: a shared listing read lazily is the listing that was written."""

from __future__ import annotations

import marshal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from merge.namespace import Attrs, Kind
from merge.shared import _ENTRIES_MAGIC, PackedItems, SharedListings, _digest, _frame, _rows
from tests.unit.test_shared_encodings import listings

STAMP = (1, 2, 3, 4)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(items=listings, picks=st.lists(st.integers(-50, 50), max_size=10))
def test_read_lazily_equals_what_was_written(tmp_path_factory, items, picks) -> None:
    folder = tmp_path_factory.mktemp("shared")
    SharedListings(str(folder), min_entries=1, boot="b").store(("d",), items, 10.0, STAMP)
    got = SharedListings(str(folder), min_entries=1, boot="b").load(("d",), 1.0, STAMP)
    assert got is not None
    read = got[0]
    assert isinstance(read, PackedItems)
    assert read.names == [n for n, _ in items]
    assert not any(read._pairs)  # nothing made yet
    for i in picks:
        if -len(items) <= i < len(items):
            assert read[i] == items[i]
            assert read[i] is read[i]  # made once
        else:
            try:
                read[i]
            except IndexError:
                continue
            raise AssertionError(f"index {i} of {len(items)}")
    assert read[1:3] == list(items[1:3])
    assert read == items and list(read) == list(items) and tuple(read) == items
    assert (read != items[:-1] and read != items[::-1]) or len(items) == 1


def test_entries_of_the_wrong_shape_are_not_read(tmp_path: Path) -> None:
    a = Attrs(Kind.REG, 1, 1, 0o444, 1, 0, 0, 5, 1, 2, 3)
    items = (("a", a), ("b", a))
    names, kinds, packed = _rows(items)
    bad = [
        (names, kinds, packed[:-1]),  # short
        (names[:1], kinds, packed),  # a name missing
        ([names[0], 7], kinds, packed),  # not a name
        (names, bytes([kinds[0], 99]), packed),  # not a kind
        (tuple(names), kinds, packed),  # not a list
    ]
    for k, content in enumerate(bad):
        folder = tmp_path / str(k)
        shared = SharedListings(str(folder), min_entries=1, boot="b")
        data = marshal.dumps(content)
        digest = _digest(data)
        Path(shared._entries_path(digest)).write_bytes(framed(digest, data))
        assert shared._read_entries(("d",), digest) is None, k
    good = marshal.dumps((names, kinds, packed))
    digest = _digest(good)
    shared = SharedListings(str(tmp_path / "good"), min_entries=1, boot="b")
    Path(shared._entries_path(digest)).write_bytes(framed(digest, good))
    assert shared._read_entries(("d",), digest) == items
    Path(shared._entries_path(digest)).write_bytes(good)  # bare (format 2): not read
    assert shared._read_entries(("d",), digest) is None


def framed(digest: bytes, data: bytes) -> bytes:
    return b"".join(_frame(_ENTRIES_MAGIC, digest, data))


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=300), tag=st.binary(max_size=40), where=st.integers(0, 10**6))
def test_an_extra_reads_back_and_any_damage_or_foreign_file_is_refused(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, tag: bytes, where: int
) -> None:
    """The CRC-32 and length a file carries refuse a byte changed anywhere (a
    CRC finds every burst of up to 32 bits), a byte cut or added; the digests
    it names refuse the file of another listing or tag under this name."""
    folder = tmp_path_factory.mktemp("extras")
    shared = SharedListings(str(folder), min_entries=1, boot="b")
    digest = bytes(range(16))
    shared.store_extra(digest, tag, data)
    assert shared.load_extra(digest, tag) == data
    (path,) = folder.glob("*.extra")
    good = path.read_bytes()
    i = where % len(good)
    for bad in (
        good[:i] + bytes([good[i] ^ (1 + where % 255)]) + good[i + 1 :],  # one byte changed
        good[:i],  # cut
        good + b"\0",  # longer
    ):
        path.write_bytes(bad)
        assert shared.load_extra(digest, tag) is None
    other = bytes(range(1, 17))
    shared.store_extra(other, tag, data)  # the other listing's file, under this name
    path.write_bytes(Path(shared._extra_path(other, tag)).read_bytes())
    assert shared.load_extra(digest, tag) is None
    shared.store_extra(digest, tag + b"x", data)  # another tag's
    path.write_bytes(Path(shared._extra_path(digest, tag + b"x")).read_bytes())
    assert shared.load_extra(digest, tag) is None


@settings(max_examples=40, deadline=None)
@given(where=st.integers(0, 10**6))
def test_an_entries_file_changed_anywhere_is_not_read(
    tmp_path_factory: pytest.TempPathFactory, where: int
) -> None:
    a = Attrs(Kind.REG, 1, 1, 0o444, 1, 0, 0, 5, 1, 2, 3)
    good = marshal.dumps(_rows((("a", a), ("b", a))))
    digest = _digest(good)
    shared = SharedListings(str(tmp_path_factory.mktemp("e")), min_entries=1, boot="b")
    file = framed(digest, good)
    i = where % len(file)
    Path(shared._entries_path(digest)).write_bytes(
        file[:i] + bytes([file[i] ^ (1 + where % 255)]) + file[i + 1 :]
    )
    assert shared._read_entries(("d",), digest) is None
