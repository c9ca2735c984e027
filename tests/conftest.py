"""Suite-wide rules.

Under ``CI=true`` a skipped test is a failure: every test that needs QEMU,
libnfs or nfs-ganesha must run in CI, where ``make test`` installs them.
"""

from __future__ import annotations

import os

import pytest


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or not _in_ci():
        return
    skipped = reporter.stats.get("skipped", [])
    if skipped:
        reporter.write_line(f"CI=true: {len(skipped)} test(s) skipped; a skip is a failure here")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
