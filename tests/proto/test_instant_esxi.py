"""What ESXi does to a datastore (docs: ../shared/testing/esxi.md), on a session, call by call.

Power-on files, lock refreshes, the swap file, log rotation, the ``.vmx~``
rename over the base ``.vmx``, synchronous guest writes checked byte for
byte, a server restart in the middle (a new dispatcher and session manager
over the same state: the handles ESXi holds must keep working), power-off;
and two server processes on one session seeing each other's writes.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.proto.fakens import FakeNamespace
from tests.proto.sessionclient import SessionCaller
from tests.proto.test_instant_session import DISK, ok, sattr
from xdr import nfs3


@pytest.fixture()
def base() -> FakeNamespace:
    ns = FakeNamespace(
        {
            ("vm",): None,
            ("vm", "vm-flat.vmdk"): DISK,
            ("vm", "vm.vmx"): b'memsize = "1024"\n',
            ("vm", "vm.nvram"): b"N" * 8684,
            ("vm", "vmware.log"): b"old log\n",
        }
    )
    yield ns
    ns.close()


def lock_name(fileid: int) -> bytes:
    """ESXi's lock file: `.lck-` and the fileid, 8 bytes little-endian, in hex."""
    return b".lck-" + fileid.to_bytes(8, "little").hex().encode()


def test_power_on_run_restart_power_off(base: FakeNamespace, tmp_path: Path) -> None:
    state = tmp_path / "state"
    c = SessionCaller(base, state)
    c.start("esx", {"vm": ("vm",)}, quota=64 << 20)
    d = ok(c.lookup(c.session_root("esx"), b"vm")).object
    disk = ok(c.lookup(d, b"vm-flat.vmdk"))
    lck = lock_name(disk.obj_attributes.attributes.fileid)
    # power-on: lock file created EXCLUSIVE (retransmitted once), host name written
    l1 = ok(c.create(d, lck, nfs3.EXCLUSIVE, verf=b"esx01-01"))
    l2 = ok(c.create(d, lck, nfs3.EXCLUSIVE, verf=b"esx01-01"))
    assert l1.obj.handle.data == l2.obj.handle.data
    lock = l1.obj.handle
    ok(c.setattr(lock, sattr(mode=0o600)))
    ok(c.write(lock, 0, b"esx01".ljust(84, b"\0"), nfs3.FILE_SYNC))
    ok(c.create(d, b"vm.vmx.lck", nfs3.GUARDED))
    # swap file: CREATE then SETATTR size, sparse
    swap = ok(c.create(d, b"vm.vswp", nfs3.GUARDED)).obj.handle
    ok(c.setattr(swap, sattr(size=1 << 30)))
    # log rotation: vmware.log -> vmware-1.log, a new vmware.log
    ok(c.rename(d, b"vmware.log", d, b"vmware-1.log"))
    log = ok(c.create(d, b"vmware.log", nfs3.GUARDED)).obj.handle
    # .vmx~ written, renamed over the base .vmx; .nvram rewritten
    tmp = ok(c.create(d, b"vm.vmx~", nfs3.GUARDED)).obj.handle
    ok(c.write(tmp, 0, b'memsize = "2048"\n', nfs3.FILE_SYNC))
    ok(c.rename(d, b"vm.vmx~", d, b"vm.vmx"))
    nvram = ok(c.lookup(d, b"vm.nvram")).object
    ok(c.write(nvram, 0, b"M" * 8684, nfs3.FILE_SYNC))
    # the guest writes synchronously; the lock is refreshed; a log line appended
    rng = random.Random(3)
    model = bytearray(DISK)
    img = disk.object
    logged = b""
    for i in range(60):
        off, n = rng.randrange(0, len(DISK) + 8192), rng.choice((512, 4096, 65536))
        data = os.urandom(n)
        w = ok(c.write(img, off, data, nfs3.FILE_SYNC))
        assert w.committed == nfs3.FILE_SYNC and w.count == n
        model[len(model) : off] = bytes(max(0, off - len(model)))
        model[off : off + n] = data
        line = f"{i} vcpu-0 ok\n".encode()
        ok(c.write(log, len(logged), line))
        logged += line
        if i % 10 == 0:
            ok(c.write(lock, 0, f"esx01 {i}".encode().ljust(84, b"\0"), nfs3.FILE_SYNC))
        if i == 30:  # the server restarts: ESXi keeps every handle it holds
            c.manager.close()
            c = SessionCaller(base, state)
    assert c.read_all(img, len(model)) == bytes(model)
    assert c.read_all(log, len(logged)) == logged
    assert c.read_all(ok(c.lookup(d, b"vm.vmx")).object, 17) == b'memsize = "2048"\n'
    assert c.read_all(ok(c.lookup(d, b"vmware-1.log")).object, 8) == b"old log\n"
    assert c.read_all(nvram, 8684) == b"M" * 8684
    assert c.getattr(swap).resok.obj_attributes.size == 1 << 30
    # power-off: locks and swap removed
    for name in (lck, b"vm.vmx.lck", b"vm.vswp"):
        ok(c.remove(d, name))
    names = {e.name for e in ok(c.readdirplus(d)).reply.entries}
    assert names == {b"vm-flat.vmdk", b"vm.vmx", b"vm.nvram", b"vmware.log", b"vmware-1.log"}
    assert c.getattr(lock).status == nfs3.NFS3ERR_STALE
    c.manager.close()


def test_two_processes_see_each_others_writes(base: FakeNamespace, tmp_path: Path) -> None:
    """Two server processes (two managers, two stores, one session directory)."""
    state = tmp_path / "state"
    a = SessionCaller(base, state)
    a.start("two", {"vm": ("vm",)})
    b = SessionCaller(base, state, peer="127.0.0.1:901")
    da = ok(a.lookup(a.session_root("two"), b"vm")).object
    fh = ok(a.lookup(da, b"vm-flat.vmdk")).object
    ok(a.write(fh, 0, b"A" * 4096))
    assert ok(b.read(fh, 0, 4096)).data == b"A" * 4096  # a's handle, b's process
    ok(b.write(fh, 4096, b"B" * 4096))
    assert ok(a.read(fh, 0, 8192)).data == b"A" * 4096 + b"B" * 4096
    new = ok(b.create(da, b"from-b")).obj.handle
    assert ok(a.lookup(da, b"from-b")).object.data == new.data
    a.manager.close()
    b.manager.close()
