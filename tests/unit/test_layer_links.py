"""merge.links alone, over a fake lower layer: SmartMotion links (rules 3, 5, 6).

Alone, the layer is its own top: targets resolve through it, so chains of
links work and merged images do not exist here (see test_namespace_rules).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from merge.attrs import fileid_for
from merge.links import LinksLayer
from merge.namespace import Kind, NotFound
from tests.unit.fake_layer import FakeLower, make_ctx
from tests.unit.merge_helpers import FakeClock, read_all, same_tick_rewrite, stamps_settled


def link(target: object, **extra: object) -> bytes:
    return json.dumps({"smartmotion": 1, "target": target, **extra}).encode()


def stack(tmp_path: Path, tree: dict[str, bytes | None], clock: FakeClock | None = None):
    ctx = make_ctx(tmp_path / "root", clock)
    lower = FakeLower(ctx, tmp_path / "blobs", tree)
    return LinksLayer(lower, ctx), lower


def names(layer: LinksLayer, d: str = "") -> set[str]:
    return {n for n, _ in layer.readdir(tuple(d.split("/")) if d else ())}


def problems(layer: LinksLayer) -> list[str]:
    return [f"{p.rule} {p.storage_path} {p.reason}" for p in layer.ctx.problems.all()]


def test_a_link_presents_its_target(tmp_path: Path) -> None:
    ns, lower = stack(
        tmp_path,
        {
            "d1/disk-flat.vmdk": b"full image",
            "d2/disk-flat.vmdk.json": link("../d1/disk-flat.vmdk", comment="unknown keys ignored"),
        },
    )
    assert names(ns, "d2") == {"disk-flat.vmdk"}  # the .json itself is not listed
    with pytest.raises(NotFound):
        ns.getattr(("d2", "disk-flat.vmdk.json"))
    attrs = ns.getattr(("d2", "disk-flat.vmdk"))
    target = ns.getattr(("d1", "disk-flat.vmdk"))
    assert attrs.size == 10 and attrs.kind == Kind.REG
    assert attrs.fileid == fileid_for(("d2", "disk-flat.vmdk")) != target.fileid
    assert attrs.mtime_ns >= target.mtime_ns
    with ns.open(("d2", "disk-flat.vmdk")) as r:
        assert read_all(r) == b"full image"
    assert lower.open_handles == 0


def test_name_key_and_root_relative_target(tmp_path: Path) -> None:
    ns, _ = stack(
        tmp_path,
        {"a/b/file": b"x", "c/anything.json": link("/a/b/file", name="shown-as")},
    )
    assert names(ns, "c") == {"shown-as"}
    with ns.open(("c", "shown-as")) as r:
        assert read_all(r) == b"x"


@pytest.mark.parametrize(
    "target", ["./file", "sub/../file", ".//file", "/c/file", "/../c/file"[3:]]
)
def test_target_normalisation(tmp_path: Path, target: str) -> None:
    ns, _ = stack(tmp_path, {"c/file": b"x", "c/sub/.keep": b"", "c/l.json": link(target)})
    assert ns.getattr(("c", "l")).size == 1


@pytest.mark.parametrize("target", ["../../etc/passwd", "../../../x", "/../x", "/a/../../x", ".."])
def test_targets_escaping_the_root_are_withheld(tmp_path: Path, target: str) -> None:
    ns, _ = stack(tmp_path, {"a/l.json": link(target), "x": b"x"})
    assert names(ns, "a") == set()
    with pytest.raises(NotFound):
        ns.getattr(("a", "l"))
    assert any("storage root" in p for p in problems(ns))


def chain(n: int) -> dict[str, bytes | None]:
    """``l00`` -> ``l01`` -> ... -> ``l{n-1}`` -> ``file``: l00 is n links deep."""
    tree: dict[str, bytes | None] = {"c/file": b"end"}
    for i in range(n):
        tree[f"c/l{i:02d}.json"] = link(f"l{i + 1:02d}" if i < n - 1 else "file")
    return tree


def test_chains_of_16_links_are_followed(tmp_path: Path) -> None:
    ns, lower = stack(tmp_path, chain(16))
    with ns.open(("c", "l00")) as r:
        assert read_all(r) == b"end"
    assert names(ns, "c") == {"file"} | {f"l{i:02d}" for i in range(16)}
    assert lower.open_handles == 0


def test_17_links_deep_is_withheld_but_its_16_deep_tail_is_not(tmp_path: Path) -> None:
    ns, _ = stack(tmp_path, chain(17))
    with pytest.raises(NotFound):
        ns.getattr(("c", "l00"))  # resolved first, from the top of the chain
    assert ns.getattr(("c", "l01")).size == 3
    assert names(ns, "c") == {"file"} | {f"l{i:02d}" for i in range(1, 17)}
    assert [p for p in problems(ns) if "16 links deep" in p] == [
        f"5 {ns.ctx.root}/c/l00.json more than 16 links deep"
    ]


def test_17_deep_found_from_a_cached_tail(tmp_path: Path) -> None:
    ns, _ = stack(tmp_path, chain(17))
    assert ns.getattr(("c", "l01")).size == 3  # the tail resolved and cached first
    with pytest.raises(NotFound):
        ns.getattr(("c", "l00"))


@pytest.mark.parametrize(
    "tree",
    [
        {"c/self.json": link("self")},
        {"c/a.json": link("b"), "c/b.json": link("a")},
        {"c/a.json": link("b"), "c/b.json": link("/c/c"), "c/c.json": link("../c/a")},
        {
            "c/a.json": link("b"),
            "c/b.json": link("c"),
            "c/c.json": link("b"),
        },  # a leads into a loop
    ],
)
def test_loops_are_withheld(tmp_path: Path, tree: dict[str, bytes | None]) -> None:
    ns, _ = stack(tmp_path, tree)
    assert names(ns, "c") == set()
    for name in tree:
        with pytest.raises(NotFound):
            ns.getattr(("c", name.split("/")[1].removesuffix(".json")))
    assert len(problems(ns)) == len(tree) and all("loop" in p for p in problems(ns))


def test_target_kinds_that_fail(tmp_path: Path) -> None:
    ns, _ = stack(
        tmp_path,
        {
            "c/dir/x": b"x",
            "c/to-dir.json": link("dir"),
            "c/missing.json": link("nothing-here"),
            "c/to-link-file.json": link("other.json"),
            "c/other.json": link("dir/x"),
            "c/through-file.json": link("other/x"),
            "c/to-root.json": link("/"),
        },
    )
    assert names(ns, "c") == {"dir", "other"}
    reasons = "\n".join(problems(ns))
    assert "is a directory" in reasons and "missing" in reasons
    assert "the .json file of a link" in reasons and "storage root, not a file" in reasons


@pytest.mark.parametrize(
    "content",
    [
        b'{"smartmotion": 1, "target": ',  # not JSON
        b"[1, 2]",  # not an object
        b'{"target": "f"}',  # no marker
        b'{"smartmotion": 2, "target": "f"}',
        b'{"smartmotion": "1", "target": "f"}',
        b'{"smartmotion": true, "target": "f"}',
        b'{"smartmotion": 1.0, "target": "f"}',
        b'{"smartmotion": 1, "target": 5}',
        b'{"smartmotion": 1}',
        b"\xff\xfe\x00",
        b'{"smartmotion": 1, "target": "f", "x": NaN}',  # not JSON (RFC 8259)
        b'{"smartmotion": 1, "target": "f", "x": -Infinity}',
        b'{"smartmotion": Infinity, "target": "f"}',
        b'{"smartmotion": 1' + b"0" * 5000 + b', "target": "f"}',  # not 1
        b'{"smartmotion": 1, "target": ' + b"1" * 5000 + b"}",  # not a string
        b"[" * 100_000,  # too deep to parse, too big to be a link
        json.dumps({"smartmotion": 1, "target": "f", "pad": "x" * 70_000}).encode(),  # > 64 KiB
    ],
)
def test_json_that_is_not_a_link_is_an_ordinary_file(tmp_path: Path, content: bytes) -> None:
    ns, _ = stack(tmp_path, {"c/f": b"target", "c/data.json": content})
    assert names(ns, "c") == {"f", "data.json"}
    with ns.open(("c", "data.json")) as r:
        assert read_all(r) == content
    assert problems(ns) == []


# JSON escapes that spell no storage bytes: a lone surrogate; escapes of the bytes
# of "é", which the client would be sent as "é" and look up as "é", another name
NO_BYTES = ["\ud800x", "\udcc3\udca9"]


# longer than NFSv3 can send (255 bytes): in bytes, not in characters
TOO_LONG = ["L" * 256, "é" * 128]


@pytest.mark.parametrize(
    "content",
    [
        b'{"smartmotion": 1, "target": "f", "x": ' + b"1" * 5000 + b"}",  # any length: JSON
        b'{"smartmotion": 1, "target": "f", "x": -' + b"9" * 60_000 + b"}",
        b'{"smartmotion": 1, "target": "f", "x": [1e999, -1e999, 0.5]}',
    ],
)
def test_link_with_large_numbers_under_unknown_keys(tmp_path: Path, content: bytes) -> None:
    ns, _ = stack(tmp_path, {"c/f": b"target", "c/l.json": content})
    assert names(ns, "c") == {"f", "l"}
    with ns.open(("c", "l")) as r:
        assert read_all(r) == b"target"


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "nul\0", 5, None, *NO_BYTES, *TOO_LONG])
def test_link_with_an_unusable_name_is_withheld(tmp_path: Path, bad: object) -> None:
    ns, _ = stack(tmp_path, {"c/f": b"x", "c/g": b"y", "c/l.json": link("f", name=bad)})
    assert names(ns, "c") == {"f", "g"}
    assert ns.getattr(("c", "g")).size == 1
    assert len(problems(ns)) == 1 and "unusable" in problems(ns)[0]


@pytest.mark.parametrize("name", ["L" * 255, "é" * 127 + "x"])
def test_link_name_of_255_bytes_is_presented(tmp_path: Path, name: str) -> None:
    ns, _ = stack(tmp_path, {"c/f": b"x", "c/l.json": link("f", name=name)})
    assert names(ns, "c") == {"f", name}
    assert problems(ns) == []


@pytest.mark.parametrize("bad", ["f\0", "sub/\0/f", "/\0", *NO_BYTES, "sub/\ud800/f"])
def test_link_with_an_unusable_target_is_withheld(tmp_path: Path, bad: str) -> None:
    ns, _ = stack(tmp_path, {"c/f": b"x", "c/sub/f": b"y", "c/l.json": link(bad)})
    for _ in range(2):
        assert names(ns, "c") == {"f", "sub"}
        with pytest.raises(NotFound):
            ns.lookup(("c", "l"))
    assert ns.lookup(("c", "f")).attrs.size == 1
    assert problems(ns) == [
        f'5 {ns.ctx.root}/c/l.json SmartMotion link with an unusable "target": {bad!r}'
    ]


def test_rule_6_a_real_file_wins_over_a_link(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="recovery_fs.merge")
    ns, _ = stack(tmp_path, {"c/f": b"real", "c/g": b"other", "c/f.json": link("g")})
    assert names(ns, "c") == {"f", "g"}
    with ns.open(("c", "f")) as r:
        assert read_all(r) == b"real"
    assert ns.getattr(("c", "f")).size == 4
    assert problems(ns) == [
        f'6 {ns.ctx.root}/c/f.json link ignored: a real entry "f" has the name it presents'
    ]
    assert len([r for r in caplog.records if r.name == "recovery_fs.merge"]) == 1


def test_two_links_presenting_one_name_are_both_ignored(tmp_path: Path) -> None:
    ns, _ = stack(
        tmp_path, {"c/g": b"x", "c/a.json": link("g", name="n"), "c/b.json": link("g", name="n")}
    )
    assert names(ns, "c") == {"g"}
    with pytest.raises(NotFound):
        ns.getattr(("c", "n"))
    assert len(problems(ns)) == 2


def test_changed_link_is_followed_after_the_ttl(tmp_path: Path) -> None:
    clock = FakeClock()
    ns, lower = stack(tmp_path, {"c/a": b"AAAA", "c/b": b"BB", "c/l.json": link("a")}, clock)
    assert ns.getattr(("c", "l")).size == 4
    lower.set("c/l.json", link("b"))
    clock.advance(1.0)
    assert ns.getattr(("c", "l")).size == 2
    with ns.open(("c", "l")) as r:
        assert read_all(r) == b"BB"


def test_link_files_are_read_once_per_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    ns, lower = stack(tmp_path, {"c/a": b"A", "c/l.json": link("a")}, clock)
    stamps_settled(monkeypatch)  # written long ago
    for _ in range(5):
        names(ns, "c")
        ns.getattr(("c", "l"))
        clock.advance(1.0)
    assert lower.calls["open"] == 1  # listed five times, read once


def test_a_link_file_read_in_its_change_s_tick_is_read_again_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A link file read less than ``RACY_NS`` after its last change may have been
    changed again in that tick, after the read, with the same stat: its target is
    not kept, until a read after the tick (then once per change again).  The
    rewrite within the tick is simulated: the file's new bytes, its old stat."""
    clock = FakeClock()
    ns, lower = stack(tmp_path, {"c/a": b"A", "c/b": b"B", "c/l.json": link("a")}, clock)
    blob = lower.tree[("c", "l.json")]
    assert blob is not None
    with ns.open(("c", "l")) as r:
        assert read_all(r) == b"A"  # read in its tick: not kept
    same_tick_rewrite(monkeypatch, blob, link("b"))  # same size, another target
    clock.advance(1.0)
    with ns.open(("c", "l")) as r:
        assert read_all(r) == b"B"  # not the target kept from the racy read
    stamps_settled(monkeypatch)  # the tick over
    opened = lower.calls["open"]
    for _ in range(3):
        clock.advance(1.0)
        with ns.open(("c", "l")) as r:
            assert read_all(r) == b"B"
    assert lower.calls["open"] - opened <= 3 + 1  # the targets, and the link once more


def test_link_reader_is_current_while_link_and_target_are(tmp_path: Path) -> None:
    ns, lower = stack(tmp_path, {"c/a": b"A", "c/l.json": link("a")})
    with ns.open(("c", "l")) as r:
        assert r.is_current()
        lower.set("c/a", b"changed")
        assert not r.is_current()
        assert read_all(r) == b"A"  # its own descriptor: the old, consistent bytes
    assert lower.open_handles == 0


def test_a_folder_without_link_files_is_handed_on_not_copied(tmp_path: Path) -> None:
    """No ``.json`` file: the listing below itself (its entries not copied: memory), and
    a lookup in it finds the same entries; one ``.json`` file: an index of its own."""
    ns, _ = stack(tmp_path, {"plain/a": b"a", "plain/b": b"bb", "with/x": b"x"})
    listed = ns.listing(("plain",))
    index = ns._index(("plain",))
    assert listed is index.low and index.real is index.low.entries
    assert ns.lookup(("plain", "b")).attrs.size == 2
    ns2, _ = stack(tmp_path / "2", {"d/t": b"t", "d/l.json": link("t")})
    index = ns2._index(("d",))
    assert index.real is not index.low.entries and set(index.links) == {"l"}
    assert names(ns2, "d") == {"t", "l"}
