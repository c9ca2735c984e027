"""The Linux 6.12 client (Debian 13, tlshd) over RPC-with-TLS against the real server.

One guest boot (``kernel/tls_scenario.py``, ``kernel/sh/tls.sh``): ``xprtsec=tls``
then ``xprtsec=mtls`` mount, list the whole tree and read files byte-exact
(merged images included) through ``recovery-fs serve --tls-cert ...``; a mount
without TLS on the same export is refused.  The Debian 12 guest of
``test_kernel_client.py`` keeps covering the plain exports.
"""

from __future__ import annotations

import shutil

import pytest

from .conftest import _need
from .kernel import assets_tls, scenarios, tls_scenario

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def tls_run(kernel_env: scenarios.Env, kernel_report: list[str]) -> scenarios.Run:
    missing = [t for t in ("readelf", "objcopy", "apt-get", "dpkg") if shutil.which(t) is None]
    _need(not missing, f"commands {missing} (tools/apt-test.txt)")
    try:
        assets_tls.prepare()
    except assets_tls.AssetError as e:
        _need(False, str(e))
    run = tls_scenario.run_tls(kernel_env)
    kernel_report.append(f"tls: {tls_scenario.summary(run)}")
    return run


@pytest.mark.parametrize("mode", tls_scenario.MODES)
def test_mounts_lists_and_reads_over_tls(tls_run, kernel_env, mode) -> None:  # type: ignore[no-untyped-def]
    problems = tls_scenario.mounted_problems(tls_run, mode)
    problems += scenarios.listing_problems(tls_run, kernel_env.layout, key=f"ENTRY_{mode}")
    checked, files, nbytes = scenarios.check_problems(tls_run, {mode})
    problems += checked
    assert not problems, tls_run.fail(f"xprtsec={mode}", problems)
    assert files >= 4 and nbytes > 0


def test_a_mount_without_tls_is_refused_on_a_tls_export(tls_run) -> None:  # type: ignore[no-untyped-def]
    problems = tls_scenario.plain_refused_problems(tls_run)
    assert not problems, tls_run.fail("mount without TLS", problems)
    log = tls_scenario.server_log(tls_run)
    assert "a none connection, the export wants xprtsec=tls" in log, log[-3000:]
