"""Prerequisites of the end-to-end tests: missing, a test skips, except under CI.

Under ``CI=true`` a skipped test fails the run anyway; failing at once, with
what is missing, says more than a skip would.
"""

from __future__ import annotations

import os

import pytest


def require(ok: bool, what: str) -> None:
    """A missing prerequisite skips, except in CI, where it fails."""
    if ok:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"prerequisite missing in CI: {what}")
    pytest.skip(what)
