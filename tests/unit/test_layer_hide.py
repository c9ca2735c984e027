"""merge.hide alone, over a fake lower layer: rule 2, and rule 5's orphans."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from merge.hide import HideLayer
from merge.namespace import NotFound
from tests.unit.fake_layer import FakeLower, make_ctx


def stack(
    tmp_path: Path, tree: dict[str, bytes | None], withheld: dict[str, set[str]] | None = None
):
    ctx = make_ctx(tmp_path / "root")
    lower = FakeLower(ctx, tmp_path / "blobs", tree, withheld)
    return HideLayer(lower, ctx), lower


def test_pancbt_names_are_never_listed_nor_found(tmp_path: Path) -> None:
    ns, _ = stack(
        tmp_path,
        {
            "d/a-flat.vmdk": b"merged below",
            "d/a-pancbt.vmdk": b"p",
            "d/-pancbt.vmdk": b"p",  # an empty NAME
            "d/dir-pancbt.vmdk/x": b"",  # a directory by that name, and what is in it
            "d/a.vmdk": b"descriptor",
            "d/A-PANCBT.VMDK": b"other case: not a pancbt",
        },
    )
    assert {n for n, _ in ns.readdir(("d",))} == {"a-flat.vmdk", "a.vmdk", "A-PANCBT.VMDK"}
    for name in ("a-pancbt.vmdk", "-pancbt.vmdk", "dir-pancbt.vmdk", "nonexistent-pancbt.vmdk"):
        with pytest.raises(NotFound):
            ns.getattr(("d", name))
        with pytest.raises(NotFound):
            ns.open(("d", name))
    with pytest.raises(NotFound):
        ns.getattr(("d", "dir-pancbt.vmdk", "x"))


def test_orphan_pancbt_is_reported_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="recovery_fs.merge")
    ns, _ = stack(
        tmp_path,
        {
            "d/lonely-pancbt.vmdk": b"p",
            "d/x": b"x",
            "d/dirbase-flat.vmdk/f": b"",
            "d/dirbase-pancbt.vmdk": b"p",
        },
    )
    for _ in range(3):
        assert {n for n, _ in ns.readdir(("d",))} == {"x", "dirbase-flat.vmdk"}
    problems = ns.ctx.problems.all()
    assert [p.storage_path.rsplit("/", 1)[1] for p in problems] == [
        "dirbase-pancbt.vmdk",
        "lonely-pancbt.vmdk",
    ]
    assert all("orphan" in p.reason and p.rule == 5 for p in problems)
    records = [r for r in caplog.records if r.name == "recovery_fs.merge"]
    assert (
        len(records) == 2
        and "lonely-pancbt.vmdk" in records[0].getMessage() + records[1].getMessage()
    )


def test_a_flat_withheld_below_does_not_make_an_orphan(tmp_path: Path) -> None:
    ns, _ = stack(
        tmp_path,
        {"d/bad-pancbt.vmdk": b"p"},
        withheld={"d": {"bad-flat.vmdk"}},  # e.g. an invalid pancbt, reported by the merge layer
    )
    assert list(ns.readdir(("d",))) == []
    assert ns.ctx.problems.all() == []


def test_listing_is_derived_once_per_lower_listing(tmp_path: Path) -> None:
    ns, _ = stack(tmp_path, {"d/x": b"x"})
    assert ns.readdir(("d",)) == ns.readdir(("d",))
    low = ns.lower.listing(("d",))
    assert ns.listing(("d",)).entries == low.entries
