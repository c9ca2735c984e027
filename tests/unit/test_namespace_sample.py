"""The namespace against the e2e tests' expectations (``tests/e2e/support/storage.py``).

That module builds storage trees and computes, independently of ``merge``,
the tree a client must see.  Comparing with it here, without a server,
catches a disagreement between the two readings of the specs early.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from merge.stack import build_stack
from tests.unit.merge_helpers import open_fds, presented_tree

storage = pytest.importorskip("tests.e2e.support.storage")


def test_sample_tree_as_the_e2e_tests_expect(tmp_path: Path) -> None:
    before = open_fds()
    expected = storage.build_sample(tmp_path / "storage")
    stack = build_stack(str(tmp_path / "storage"))
    assert presented_tree(stack.top) == expected
    reasons = sorted(p.storage_path.rsplit("/", 1)[1] for p in stack.problems.all())
    assert reasons == ["ghost-flat.vmdk.json", "orphan-pancbt.vmdk"]
    stack.close()
    assert open_fds() == before
