"""File handles: size, tampering, restarts, deep paths, staleness, bounds."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nfsd.programs.handles as handles_module
from nfsd.programs.handles import (
    ADOPTED_FOLDERS,
    MAX_SIZE,
    BadHandle,
    HandleCodec,
    StaleHandle,
    name_hash,
)
from tests.proto.fakens import FakeNamespace

DEEP = tuple(f"d{i}" for i in range(15))


def tree() -> dict:
    t: dict = {("a",): None, ("a", "f"): b"1", ("b",): b"2"}
    for i in range(1, len(DEEP) + 1):
        t[DEEP[:i]] = None
    t[(*DEEP, "leaf")] = b"deep"
    return t


@pytest.fixture(scope="module")
def ns() -> FakeNamespace:
    n = FakeNamespace(tree())
    yield n
    n.close()


def handle(ns: FakeNamespace, path: tuple, secret: bytes = b"s" * 32) -> bytes:
    return HandleCodec(ns, secret).encode(path, ns.getattr(path).fileid)


@pytest.mark.parametrize("path", [(), ("a",), ("a", "f"), ("b",), (*DEEP, "leaf")])
def test_handles_are_small_and_resolve_after_a_restart(ns: FakeNamespace, path: tuple) -> None:
    h = handle(ns, path)
    assert len(h) <= MAX_SIZE
    fresh = HandleCodec(ns, b"s" * 32)  # new process: nothing cached
    assert fresh.resolve(h) == path


def test_same_secret_same_handles(ns: FakeNamespace) -> None:
    assert handle(ns, ("a", "f")) == handle(ns, ("a", "f"))
    assert handle(ns, ("a", "f"), b"t" * 32) != handle(ns, ("a", "f"))


@settings(max_examples=200)
@given(data=st.data())
def test_any_altered_byte_is_a_bad_handle(ns: FakeNamespace, data: st.DataObject) -> None:
    h = bytearray(handle(ns, ("a", "f")))
    i = data.draw(st.integers(0, len(h) - 1))
    h[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(BadHandle):
        HandleCodec(ns, b"s" * 32).resolve(bytes(h))


@given(junk=st.binary(max_size=80))
def test_forged_bytes_are_bad_handles(ns: FakeNamespace, junk: bytes) -> None:
    with pytest.raises(BadHandle):
        HandleCodec(ns, b"s" * 32).resolve(junk)


def test_a_removed_entry_is_stale_after_a_restart() -> None:
    n = FakeNamespace({("x",): None, ("x", "y"): b"1"})
    h = handle(n, ("x", "y"))
    del n.tree[("x", "y")]
    n.tree[("x", "z")] = b"2"
    with pytest.raises(StaleHandle):
        HandleCodec(n, b"s" * 32).resolve(h)
    n.close()


def test_the_cache_is_bounded(ns: FakeNamespace) -> None:
    codec = HandleCodec(ns, b"s" * 32, cache_size=3)
    for p in [("a",), ("a", "f"), ("b",), (), (*DEEP, "leaf")]:
        codec.encode(p, ns.getattr(p).fileid)
    assert len(codec._by_handle) == 3
    assert len(codec._by_path) <= 3


def test_the_cache_drops_the_oldest_issued_a_sixteenth_at_a_time() -> None:
    codec = HandleCodec(None, b"s" * 32, cache_size=64)  # type: ignore[arg-type]
    issued = [codec.encode(("d", f"n{i}"), 1000 + i) for i in range(65)]
    assert len(codec._by_handle) == 64 - 4  # one past the bound: 1 + 64 // 16 go
    assert all(codec.cached(h) is None for h in issued[:5])
    assert [codec.cached(h) for h in issued[5:]] == [("d", f"n{i}") for i in range(5, 65)]
    assert set(codec._by_path) == set(codec._by_handle.values())
    assert all(codec._by_handle[h] == p for p, h in codec._by_path.items())
    again = codec.encode(("d", "n0"), 1000)  # made again, the same bytes
    assert again == issued[0] and codec.cached(again) == ("d", "n0")


@given(
    depth=st.integers(0, 14),
    name=st.text(min_size=1, max_size=20),
    fileid=st.integers(2, 2**63 - 1),
)
@settings(max_examples=200, deadline=None)
def test_a_listing_encoder_issues_the_handles_encode_does(
    depth: int, name: str, fileid: int
) -> None:
    """READDIRPLUS's per-directory encoder: the same bytes as ``encode``, at any depth."""
    directory = DEEP[:depth]
    reference = HandleCodec(None, b"s" * 32).encode((*directory, name), fileid)  # type: ignore[arg-type]
    codec = HandleCodec(None, b"s" * 32)  # type: ignore[arg-type]
    with codec.issuing(directory) as encode:
        assert encode(name, fileid) == reference
        assert codec.cached(reference) is None  # remembered on leaving, all together
    assert codec.cached(reference) == (*directory, name)  # no walk: namespace is None
    assert codec.encoder_in(directory)(name, fileid) == reference
    assert codec.resolve(reference) == (*directory, name)
    other = fileid ^ 1 or 3  # the path now names another entry: a new handle
    assert codec.encoder_in(directory)(name, other) == HandleCodec(None, b"s" * 32).encode(  # type: ignore[arg-type]
        (*directory, name), other
    )


@given(key=st.binary(min_size=0, max_size=100), body=st.binary(max_size=80), name=st.text())
@settings(max_examples=200, deadline=None)
def test_the_mac_and_name_hashes_are_the_standard_ones(key: bytes, body: bytes, name: str) -> None:
    """Handles issued before keep verifying: HMAC-SHA256 and BLAKE2b, whatever their build."""
    import hashlib
    import hmac

    codec = HandleCodec(None, key)  # type: ignore[arg-type]
    assert codec._mac(body) == hmac.new(key, body, hashlib.sha256).digest()[:10]
    data = name.encode("utf-8", "surrogateescape")
    assert name_hash(name) == hashlib.blake2b(data, digest_size=4).digest()


def test_adopted_folders_are_found_on_use_and_bounded() -> None:
    """Handles another process made for a folder: found by a call that presents one
    (no walk, no MAC: the namespace is None), reused by the encoders, the oldest
    folders forgotten past ADOPTED_FOLDERS."""
    made = HandleCodec(None, b"k" * 32)  # type: ignore[arg-type]
    folders = [("top", f"f{i}") for i in range(ADOPTED_FOLDERS + 1)]
    issued = {d: [made.encode((*d, n), 100 + k) for k, n in enumerate("ab")] for d in folders}
    codec = HandleCodec(None, b"k" * 32)  # type: ignore[arg-type]
    for d in folders:
        codec.adopt(d, ["a", "b"], issued[d])
    with pytest.raises(ValueError):
        codec.adopt(("x",), ["a"], [])
    assert codec.cached(issued[folders[0]][0]) is None  # the oldest folder: forgotten
    last = folders[-1]
    codec._mac = None  # type: ignore[assignment,method-assign]
    assert codec.encode((*last, "b"), 101) == issued[last][1]  # no MAC made
    assert codec.encoder_in(last)("a", 100) == issued[last][0]
    assert codec.cached(issued[last][1]) == (*last, "b")
    assert codec.resolve(issued[last][0]) == (*last, "a")
    assert codec._by_handle[issued[last][1]] == (*last, "b")  # now in the cache itself


def test_adopted_handles_given_by_a_function_are_made_on_first_use() -> None:
    """A listing another process shared is often only read: its handles' maps are
    made when a call presents one or an encoder needs one, the same as given whole."""
    made = HandleCodec(None, b"k" * 32)  # type: ignore[arg-type]
    folder = ("top", "big")
    names = [f"n{i}" for i in range(5)]
    issued = [made.encode((*folder, n), 100 + k) for k, n in enumerate(names)]
    asked: list[int] = []

    def handles() -> list[bytes]:
        asked.append(1)
        return list(issued)

    codec = HandleCodec(None, b"k" * 32)  # type: ignore[arg-type]
    codec.adopt(folder, names, handles)
    with codec.issuing(("elsewhere",)) as enc:
        assert len(enc("x", 7)) == HandleCodec.size_at(2)
    with codec.issuing(folder):
        pass
    assert asked == []  # nothing asked yet: not made
    codec._mac = None  # type: ignore[assignment,method-assign]
    assert codec.resolve(issued[3]) == (*folder, "n3")  # found without a walk or a MAC
    assert codec.encoder_in(folder)("n1", 101) == issued[1]
    assert asked == [1]  # made once


_NAMES = st.one_of(
    st.text(min_size=0, max_size=30),  # surrogates too: some cannot be encoded
    st.binary(min_size=1, max_size=300).map(os.fsdecode),  # non-UTF-8, surrogate-escaped
)
_FILEIDS = st.one_of(
    st.integers(1, 2**63 - 1),
    st.sampled_from([0, 2**64 - 1, 2**64, -1, 2**70]),  # past the handle's 64 bits
)


@given(
    rows=st.lists(st.tuples(_NAMES, _FILEIDS), max_size=20, unique_by=lambda r: r[0]),
    depth=st.integers(0, 14),
    key=st.binary(min_size=0, max_size=100),
    pure=st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_a_folders_handles_at_once_are_the_encoders(
    rows: list, depth: int, key: bytes, pure: bool
) -> None:
    """``encode_all`` (C, ``_native.handles``, or its twin): each handle is the one
    ``encoder_in`` makes, remembered as ``issuing`` remembers it; where the
    encoder raises (a fileid past 64 bits, a name that cannot be encoded),
    it raises the same error."""
    directory = DEEP[:depth]
    names, fileids = [n for n, _ in rows], [f for _, f in rows]
    with pytest.MonkeyPatch.context() as m:
        if pure:
            m.setattr(handles_module, "native", None)
        codec = HandleCodec(None, key)  # type: ignore[arg-type]
        try:
            want = [HandleCodec(None, key).encoder_in(directory)(n, f) for n, f in rows]  # type: ignore[arg-type]
        except Exception as e:
            with pytest.raises(type(e)):
                codec.encode_all(directory, names, fileids)
            return
        assert codec.encode_all(directory, names, fileids) == want
    for h in want:
        assert codec.cached(h) is not None  # remembered (no walk: the namespace is None)
    if rows:
        last = {n: h for (n, _), h in zip(rows, want, strict=True)}
        assert codec.cached(last[names[-1]]) == (*directory, names[-1])


def test_the_c_handles_decline_what_the_twin_decides() -> None:
    """``_native.handles`` returns None (the twin then runs and raises where it
    did) for a fileid past 64 bits, a name not encodable, a non-str name, a
    depth or prefix out of the layout, lists of unequal lengths."""
    native = pytest.importorskip("nfsd.programs.nfs3._native")
    ok = native.handles(["a"], [1], 1, b"", True, b"k")
    assert ok is not None and len(ok[0]) == HandleCodec.size_at(1)
    for args in (
        (["a"], [2**64], 1, b"", True, b"k"),
        (["a"], [-1], 1, b"", True, b"k"),
        (["\ud800"], [1], 1, b"", True, b"k"),
        ([b"a"], [1], 1, b"", True, b"k"),
        (["a"], [1.0], 1, b"", True, b"k"),
        (["a"], [1], 256, b"", True, b"k"),
        (["a"], [1], -1, b"", True, b"k"),
        (["a"], [1], 1, b"x" * 45, True, b"k"),
        (["a", "b"], [1], 1, b"", True, b"k"),
    ):
        assert native.handles(*args) is None, args
    with pytest.raises(TypeError):
        native.handles(("a",), [1], 1, b"", True, b"k")


def test_pure_mode_makes_handles_in_python() -> None:
    """``RECOVERY_FS_PURE=1`` (read at import) selects the twin."""
    import subprocess
    import sys

    code = "import nfsd.programs.handles as h; print(h.native is None)"
    for pure, want in (("1", "True"), ("0", "False")):
        env = {**os.environ, "RECOVERY_FS_PURE": pure}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        built = handles_module.native is not None or os.environ.get("RECOVERY_FS_PURE") == "1"
        assert out.stdout.strip() == (want if built else "True")
