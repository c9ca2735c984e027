"""The Linux 6.12 client (Debian 13, tlshd) over RPC-with-TLS against ``nfsd.transport.tls``.

One guest boot (~10 s with TCG, plus ~20 s of downloads on a cold cache):
``xprtsec=tls`` then ``xprtsec=mtls`` mount, list and read a 3 MiB file
byte-exact through the throwaway endpoint of ``kernel/tls_probe.py`` (the
real dispatcher, ``nfsd.transport.tls.TlsSession`` after STARTTLS).  The server's own
transport gets its TLS boots once it speaks TLS.
"""

from __future__ import annotations

import os
import shutil

import pytest

from .conftest import _need
from .kernel import assets_tls, tls_probe

pytestmark = pytest.mark.e2e


def test_kernel_client_mounts_and_reads_over_tls_and_mtls() -> None:
    _need(os.geteuid() == 0, "root (unshare --net --mount --pid)")
    missing = [
        t
        for t in ("qemu-system-x86_64", "unshare", "ip", "objcopy", "readelf", "apt-get", "dpkg")
        if shutil.which(t) is None
    ]
    _need(not missing, f"commands {missing} (tools/apt-test.txt)")
    try:
        assets_tls.prepare()
    except assets_tls.AssetError as e:
        _need(False, str(e))
    outcome, lines, sha = tls_probe.run(["tls", "mtls"])
    context = "\n".join(lines + outcome["events"]) + f"\nrun: {outcome['run_dir']}"
    for mode in ("tls", "mtls"):
        assert any(ln.startswith("MOUNT ok") for ln in lines), context
        assert any(f"xprtsec={mode}," in ln for ln in lines if ln.startswith("MOUNTINFO")), context
        assert f"SHA_{mode} {sha}" in lines, context
    handshakes = [e for e in outcome["events"] if e.startswith("HANDSHAKE")]
    assert len(handshakes) == 2, context
    assert all(" TLSv1.3 " in e for e in handshakes), context
    assert "security=tls" in handshakes[0], context
    assert "security=mtls guest.example" in handshakes[1], context
