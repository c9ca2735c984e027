"""An ESXi-like client against a real server over TCP, SIGKILLed and restarted in the middle.

``tests/proto/test_instant_esxi.py`` runs the same kind of sequence call by
call in process (its "restart" is a new dispatcher over the same state).
Here the server is ``recovery-fs serve --workers 2`` in a process group of
its own, the session is made with ``recovery-fs instant start``, and the
client (``support.wirecaller``: a port below 1024, pipelined calls, a hard
mount that sends unanswered calls again with the same xid) goes through
what a hypervisor does to a datastore (../shared/testing/esxi.md):

1. power-on: the disk's ``.lck-<fileid>`` created EXCLUSIVE (sent twice
   with one xid, then again with the same verifier, then with another:
   EXIST), ``.vmx.lck``, a 1 GiB swap file (CREATE then SETATTR size:
   sparse, the quota's space barely moves), ``vmware.log`` rotated by
   RENAME, ``.vmx~`` renamed over the base ``.vmx``;
2. the server SIGKILLed and started again; the RENAME sent again with its
   xid gets its first answer (the reply cache survives the restart), the
   lock's EXCLUSIVE create with its verifier still succeeds;
3. the guest's synchronous writes, 32 pipelined at a time to disjoint
   places of the merged disk, with lock refreshes and log lines; in some
   rounds the whole server is SIGKILLed once a few replies have arrived
   and started again: the calls still unanswered are sent again, those
   answered are not, and every byte of the disk is checked against a
   model at the end (an acknowledged write lost shows there);
4. power-off: locks, swap and the old log removed; the lock's handle is
   then ``NFS3ERR_STALE``.

The storage tree is fingerprinted before and after: identical.
"""

from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.kernel.servers import REPO, RecoveryFs, ServerConfig
from tests.e2e.support.server import free_port, recv_record
from tests.e2e.support.storage import MIB, build_sample
from tests.e2e.support.wirecaller import WireCaller
from tests.proto.calls import parse
from tests.proto.test_instant_esxi import lock_name
from tests.proto.test_instant_session import ok, sattr
from tests.tree_digest import tree_digest
from xdr import nfs3
from xdr.nfs3 import NFS3Packer, NFS3Unpacker

pytestmark = pytest.mark.e2e

FOLDER = "2026-11-21T0100/web01"  # a merged image (a link and a pancbt)
DISK = f"{FOLDER}/web01-flat.vmdk"
SESSION = "esx"
ROUNDS, PIPELINE = 8, 32


def _cli(server: RecoveryFs, *args: str) -> subprocess.CompletedProcess[str]:
    state = str(server.workdir / "state")
    argv = [sys.executable, "-m", "nfsd.cli", args[0], args[1], "--state-dir", state, *args[2:]]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=120, cwd=REPO, env=server.env(), check=False
    )


def _start_session(server: RecoveryFs, quota: str) -> WireCaller:
    """``instant start`` of FOLDER as an administrator would; a client for it."""
    started = _cli(
        server, "instant", "start", "--storage", server.config.storage, "--name", SESSION,
        "--clients", "127.0.0.1", "--quota", quota, FOLDER,
    )  # fmt: skip
    assert started.returncode == 0, started.stdout + started.stderr
    return WireCaller("127.0.0.1", server.config.port)


def _session_root(c: WireCaller, deadline: float) -> nfs3.nfs_fh3:
    """The session export's root once it is served (instant start: within seconds)."""
    while True:
        res = c.mount(f"/recover/instant/{SESSION}".encode())
        if res.fhs_status == 0 and res.mountinfo is not None:
            return nfs3.nfs_fh3(res.mountinfo.fhandle)
        assert time.monotonic() < deadline, f"MNT of the session: {res.fhs_status}"
        time.sleep(0.2)


def _write_call(c: WireCaller, fh: nfs3.nfs_fh3, off: int, data: bytes) -> tuple[int, bytes]:
    p = NFS3Packer()
    p.pack_WRITE3args(nfs3.WRITE3args(fh, off, len(data), nfs3.FILE_SYNC, data))
    return c.record(nfs3.NFS_PROGRAM, 3, nfs3.NFSPROC3_WRITE, p.get_buffer())


def _write_ok(body: bytes, n: int) -> None:
    u = NFS3Unpacker(body)
    res = u.unpack_WRITE3res()
    assert res.status == nfs3.NFS3_OK, res.status
    assert (res.resok.count, res.resok.committed) == (n, nfs3.FILE_SYNC)


@pytest.fixture()
def server(tmp_path: Path):
    storage = tmp_path / "storage"
    presented = build_sample(storage)
    before = tree_digest(storage)
    config = ServerConfig(
        kind="recovery-fs",
        storage=str(storage),
        workdir=str(tmp_path / "server"),
        port=free_port(),
        exports="/recover/images 127.0.0.1\n",
    )
    s = RecoveryFs(config)
    s.own_group = True  # a kill reaches the supervisor and both workers at once
    s.start()
    try:
        yield s, presented[DISK]
    finally:
        s.stop()
        assert tree_digest(storage) == before, "the storage tree changed"


def test_power_on_run_kill_restart_power_off(server) -> None:
    srv, merged = server
    c = _start_session(srv, "64M")
    try:
        root = _session_root(c, time.monotonic() + 30)
        d = ok(c.lookup(root, b"web01")).object
        disk = ok(c.lookup(d, b"web01-flat.vmdk"))
        img = disk.object
        assert disk.obj_attributes.attributes.size == len(merged)
        lck = lock_name(disk.obj_attributes.attributes.fileid)

        # 1. power-on
        p = NFS3Packer()
        how = nfs3.createhow3(nfs3.EXCLUSIVE, verf=b"esx01-01")
        p.pack_CREATE3args(nfs3.CREATE3args(nfs3.diropargs3(d, lck), how))
        create = c.record(nfs3.NFS_PROGRAM, 3, nfs3.NFSPROC3_CREATE, p.get_buffer())
        first = c.exchange([create])[create[0]]
        again = c.exchange([create])[create[0]]  # the same call retransmitted
        assert again == first
        lock = ok(NFS3Unpacker(first).unpack_CREATE3res()).obj.handle
        assert ok(c.create(d, lck, nfs3.EXCLUSIVE, verf=b"esx01-01")).obj.handle == lock
        assert c.create(d, lck, nfs3.EXCLUSIVE, verf=b"esx02-01").status == nfs3.NFS3ERR_EXIST
        ok(c.setattr(lock, sattr(mode=0o600)))
        ok(c.write(lock, 0, b"esx01".ljust(84, b"\0"), nfs3.FILE_SYNC))
        ok(c.create(d, b"web01.vmx.lck", nfs3.GUARDED))
        space = ok(c.fsstat(root)).fbytes
        swap = ok(c.create(d, b"web01.vswp", nfs3.GUARDED)).obj.handle
        ok(c.setattr(swap, sattr(size=1 << 30)))
        assert space - ok(c.fsstat(root)).fbytes < MIB, "a sparse swap file took quota"
        log = ok(c.create(d, b"vmware.log", nfs3.GUARDED)).obj.handle
        logged = b"power on\n"
        ok(c.write(log, 0, logged, nfs3.FILE_SYNC))
        ok(c.rename(d, b"vmware.log", d, b"vmware-1.log"))
        old_log, logged_before = log, logged
        log, logged = ok(c.create(d, b"vmware.log", nfs3.GUARDED)).obj.handle, b""
        vmx = b'displayName = "web01"\nmemsize = "1024"\n'
        tmp = ok(c.create(d, b"web01.vmx~", nfs3.GUARDED)).obj.handle
        ok(c.write(tmp, 0, vmx, nfs3.FILE_SYNC))
        p = NFS3Packer()
        p.pack_RENAME3args(
            nfs3.RENAME3args(nfs3.diropargs3(d, b"web01.vmx~"), nfs3.diropargs3(d, b"web01.vmx"))
        )
        rename = c.record(nfs3.NFS_PROGRAM, 3, nfs3.NFSPROC3_RENAME, p.get_buffer())
        assert NFS3Unpacker(c.exchange([rename])[rename[0]]).unpack_uint() == nfs3.NFS3_OK

        # 2. a crash between calls: the reply cache and the verifier outlive it
        srv.kill()
        srv.start()
        replayed = NFS3Unpacker(c.exchange([rename])[rename[0]]).unpack_RENAME3res()
        assert replayed.status == nfs3.NFS3_OK, "a retransmitted RENAME was run again"
        assert ok(c.create(d, lck, nfs3.EXCLUSIVE, verf=b"esx01-01")).obj.handle == lock

        # 3. the guest's synchronous writes; crashes with writes in flight
        rng = random.Random(7)
        model = bytearray(merged)
        slots = list(range(0, len(merged) + 2 * MIB - 64 * 1024, 64 * 1024))
        crashes = caught = 0
        for i in range(ROUNDS):
            batch, sizes = [], {}
            for slot in rng.sample(slots, PIPELINE):  # disjoint: any order is the model
                n = rng.choice((512, 4096, 4096, 65536))
                off = slot + rng.randrange(0, 64 * 1024 - n + 1, 512)
                data = os.urandom(n)
                model[len(model) : off] = bytes(max(0, off - len(model)))
                model[off : off + n] = data
                call = _write_call(c, img, off, data)
                batch.append(call)
                sizes[call[0]] = n
            resent = c.resent
            crash = i % 2 == 1 and caught < 2
            if crash:
                crashes += 1
                replies = c.exchange(batch, after=4, then=srv.restart)
                caught += c.resent > resent
            else:
                replies = c.exchange(batch)
            for xid, body in replies.items():
                _write_ok(body, sizes[xid])
            line = f"{i} vcpu-0 ok\n".encode()
            ok(c.write(log, len(logged), line, nfs3.FILE_SYNC))
            logged += line
            ok(c.write(lock, 0, f"esx01 {i}".encode().ljust(84, b"\0"), nfs3.FILE_SYNC))
        assert caught, f"none of {crashes} crashes caught a write in flight"

        assert c.read_all(img, len(model) + 1) == bytes(model)
        assert c.getattr(img).resok.obj_attributes.size == len(model)
        assert c.read_all(log, len(logged) + 1) == logged
        assert c.read_all(old_log, 100) == logged_before
        assert c.read_all(ok(c.lookup(d, b"web01.vmx")).object, 200) == vmx
        assert c.getattr(swap).resok.obj_attributes.size == 1 << 30
        assert c.read(swap, (1 << 30) - 4096, 4096).resok.data == bytes(4096)

        # 4. power-off
        for name in (lck, b"web01.vmx.lck", b"web01.vswp", b"vmware-1.log"):
            ok(c.remove(d, name))
        names = {e.name for e in ok(c.readdirplus(d)).reply.entries}
        assert names == {b"web01-flat.vmdk", b"web01.vmx", b"web01.vmdk", b"vmware.log"}
        assert c.getattr(lock).status == nfs3.NFS3ERR_STALE
    finally:
        c.close()
    assert c.connections >= 1 + 1 + caught, c.connections


class _Stream:
    """One connection whose calls are sent as they come and answered as they go:
    a reader thread notes when each reply arrives, by xid (what a hypervisor's one
    connection to its datastore carries: the guest's writes and the host's
    heartbeats, interleaved)."""

    def __init__(self, c: WireCaller) -> None:
        self.c = c
        c.sock = c._connect(time.monotonic() + 10)
        self.sent: dict[int, float] = {}
        self.took: dict[int, float] = {}
        self.bodies: dict[int, bytes] = {}
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def send(self, call: tuple[int, bytes]) -> int:
        xid, rec = call
        with self.lock:
            self.sent[xid] = time.monotonic()
            assert self.c.sock is not None
            self.c.sock.sendall(struct.pack(">I", 0x80000000 | len(rec)) + rec)
        return xid

    def _read(self) -> None:
        while True:
            try:
                assert self.c.sock is not None
                r = parse([recv_record(self.c.sock)])
            except (OSError, EOFError, AssertionError):
                return
            with self.lock:
                self.took[r.xid] = time.monotonic() - self.sent[r.xid]
                self.bodies[r.xid] = r.body
                self.arrived.notify_all()

    def wait(self, xids: set[int], timeout: float = 30.0) -> None:
        with self.lock:
            assert self.arrived.wait_for(lambda: xids <= self.took.keys(), timeout), "no reply"


def _heartbeat(c: WireCaller, root: nfs3.nfs_fh3, lock: nfs3.nfs_fh3, i: int) -> list:
    """ESXi's every-few-seconds pair: a GETATTR of the datastore's root, the lock rewritten."""
    p = NFS3Packer()
    p.pack_GETATTR3args(nfs3.GETATTR3args(root))
    getattr_call = c.record(nfs3.NFS_PROGRAM, 3, nfs3.NFSPROC3_GETATTR, p.get_buffer())
    return [getattr_call, _write_call(c, lock, 0, f"esx01 {i}".encode().ljust(84, b"\0"))]


def test_lock_refreshes_and_heartbeats_answered_within_a_second_under_load(
    server, tmp_path: Path
) -> None:
    """While 1 MiB WRITEs stream (8 in flight, a disk being copied in), the merged
    disk is read on another connection and ``instant export`` runs, every
    heartbeat GETATTR and lock refresh WRITE is answered within 1 s: on the
    writes' own connection and on a connection of its own (ESXi declares a
    datastore down, and the VM's lock lost, when they stall)."""
    srv, merged = server
    c = _start_session(srv, "16G")
    root = _session_root(c, time.monotonic() + 30)
    d = ok(c.lookup(root, b"web01")).object
    disk = ok(c.lookup(d, b"web01-flat.vmdk")).object
    lock = ok(c.create(d, b".lck-0000000000000001", nfs3.GUARDED)).obj.handle
    copy = ok(c.create(d, b"web01-copy-flat.vmdk", nfs3.GUARDED)).obj.handle
    c.close()

    writes, beats = _Stream(WireCaller("127.0.0.1", srv.config.port)), []
    apart = _Stream(WireCaller("127.0.0.1", srv.config.port))
    reader = WireCaller("127.0.0.1", srv.config.port)
    stop = threading.Event()

    def read_disk() -> None:
        while not stop.is_set():
            assert reader.read_all(disk, len(merged) + 1) == merged

    copied = threading.Thread(target=read_disk, daemon=True)
    copied.start()
    export = subprocess.Popen(
        [sys.executable, "-m", "nfsd.cli", "instant", "export", SESSION,
         "--state-dir", str(srv.workdir / "state"), "--storage", srv.config.storage,
         "--to", str(tmp_path / "exported")],
        cwd=REPO, env=srv.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    chunk, region = os.urandom(MIB), 256
    in_flight: set[int] = set()
    sent = 0
    end = time.monotonic() + 3.0
    next_beat = time.monotonic()
    try:
        while time.monotonic() < end:
            with writes.lock:
                in_flight -= writes.took.keys()
            while len(in_flight) < 8:
                call = _write_call(writes.c, copy, (sent % region) * MIB, chunk)
                in_flight.add(writes.send(call))
                sent += 1
            if time.monotonic() >= next_beat:
                i = len(beats)
                beats += [(writes, writes.send(x)) for x in _heartbeat(writes.c, root, lock, i)]
                beats += [(apart, apart.send(x)) for x in _heartbeat(apart.c, root, lock, i)]
                next_beat += 0.2
            time.sleep(0.002)
        for stream in (writes, apart):
            stream.wait({xid for s, xid in beats if s is stream})
        writes.wait(in_flight)
    finally:
        stop.set()
        copied.join(60)
        export.wait(120)
        for s in (writes.c, apart.c, reader):
            s.close()
    assert export.returncode == 0, export.stderr.read().decode() if export.stderr else ""
    assert sent >= 8 and len(beats) >= 20, (sent, len(beats))
    for stream, xid in beats:
        body = stream.bodies[xid]
        assert NFS3Unpacker(body).unpack_uint() == nfs3.NFS3_OK
    worst = max(s.took[xid] for s, xid in beats)
    assert worst < 1.0, f"a heartbeat took {worst:.3f} s ({sent} MiB written meanwhile)"
    print(f"heartbeats: {len(beats)}, worst {worst * 1000:.0f} ms; {sent} MiB written")
