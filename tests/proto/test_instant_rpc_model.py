"""A session driven over RPC by random sequences of calls, against a model.

What ``tests/unit/test_instant_namespace.py`` does for the namespace alone,
here through the dispatcher (the session's procedures, the router, the reply
cache, the deferred WRITE): a hypothesis state machine makes files and
folders, writes, truncates and extends, renames (over files too), removes,
restarts the server, moves its calls to the other of two servers on the
same state directory (two worker processes: each its own store and caches),
serves them on the transport's loop first (inline) or on a worker,
and after every step the session answers as a plain file system would: each
file's bytes and size, each folder's names, and never
``NFS3ERR_SERVERFAULT``.  Names include bytes that are not UTF-8 (a
Linux client's Latin-1 names), beside their UTF-8 spelling.  The fuzz
harness (``tests/fuzz``) cannot get here: the handles of new entries carry
a MAC, and only the replies give them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from instant import store
from instant.rangemap import RangeMap
from tests.proto.calls import unchanged_sattr
from tests.proto.fakens import FakeNamespace
from tests.proto.sessionclient import SessionCaller
from xdr import nfs3

BASE = bytes(range(256)) * 96  # 24 KiB: the copied file's base bytes
NAMES = [b"a", b"b", "é".encode(), b"\xe9", b"x.vmx~"]
OFFSETS = st.sampled_from([0, 1, 511, 4095, 4096, 8191, 20_000, 24_576, 40_000])


def ok(res: Any) -> Any:
    assert res.status == nfs3.NFS3_OK, res.status
    return res.resok


def sized(size: int) -> nfs3.sattr3:
    s = unchanged_sattr()
    s.size = nfs3.set_size3(True, size)
    return s


class SessionOverRpc(RuleBasedStateMachine):
    """The model: every file's bytes and handle by path, every folder's handle."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.base = FakeNamespace({("vm",): None, ("vm", "disk-flat.vmdk"): BASE})
        self.c = self.caller(start=True)
        self.other = self.caller()  # the second worker
        root = self.c.session_root("s")
        web01 = ok(self.c.lookup(root, b"web01")).object
        sub = ok(self.c.mkdir(web01, b"sub")).obj.handle
        disk = ok(self.c.lookup(web01, b"disk-flat.vmdk")).object
        self.dirs: dict[str, nfs3.nfs_fh3] = {"web01": web01, "web01/sub": sub}
        self.files: dict[str, tuple[nfs3.nfs_fh3, bytes]] = {"web01/disk-flat.vmdk": (disk, BASE)}

    def caller(self, *, start: bool = False) -> SessionCaller:
        """A client of a server started (again): its xids start where the last
        client's ended, as a real client's start at random.  Not again at 1: the
        reply cache outlives a restart for the changes that committed, and a call
        with the xid and arguments of one made before the restart is answered as
        that one was, not made (a retransmission, as far as the server can tell)."""
        c = SessionCaller(self.base, Path(self.tmp.name) / "state")
        c.xid = getattr(self, "c", c).xid + 1_000
        if start:
            c.start("s", {"web01": ("vm",)})
        return c

    def teardown(self) -> None:
        self.c.manager.close()
        self.other.manager.close()
        self.base.close()
        self.tmp.cleanup()

    def names_in(self, folder: str) -> set[bytes]:
        inside = [p.rsplit("/", 1) for p in (*self.files, *self.dirs) if "/" in p]
        return {n.encode("utf-8", "surrogateescape") for d, n in inside if d == folder}

    @staticmethod
    def path(folder: str, name: bytes) -> str:
        return f"{folder}/{name.decode('utf-8', 'surrogateescape')}"

    @rule(data=st.data(), name=st.sampled_from(NAMES))
    def mkdir(self, data: st.DataObject, name: bytes) -> None:
        folder = data.draw(st.sampled_from(sorted(self.dirs)))
        path = self.path(folder, name)
        res = self.c.mkdir(self.dirs[folder], name)
        if path in self.files or path in self.dirs:
            assert res.status == nfs3.NFS3ERR_EXIST, res.status
            return
        self.dirs[path] = ok(res).obj.handle

    @rule(data=st.data())
    def rmdir(self, data: st.DataObject) -> None:
        path = data.draw(st.sampled_from(sorted(self.dirs)))
        if "/" not in path:
            return  # the session's own folder: kept, its handle is the model's start
        folder, name = path.rsplit("/", 1)
        res = self.c.remove(
            self.dirs[folder], name.encode("utf-8", "surrogateescape"), nfs3.NFSPROC3_RMDIR
        )
        if self.names_in(path):
            assert res.status == nfs3.NFS3ERR_NOTEMPTY, res.status
            return
        assert res.status == nfs3.NFS3_OK, res.status
        del self.dirs[path]

    @rule(data=st.data(), name=st.sampled_from(NAMES))
    def create(self, data: st.DataObject, name: bytes) -> None:
        folder = data.draw(st.sampled_from(sorted(self.dirs)))
        path = self.path(folder, name)
        res = self.c.create(self.dirs[folder], name, nfs3.GUARDED)
        if path in self.files or path in self.dirs:
            assert res.status == nfs3.NFS3ERR_EXIST
            return
        self.files[path] = (ok(res).obj.handle, b"")

    @precondition(lambda self: self.files)
    @rule(data=st.data(), offset=OFFSETS, length=st.integers(1, 9000))
    def write(self, data: st.DataObject, offset: int, length: int) -> None:
        path = data.draw(st.sampled_from(sorted(self.files)))
        fh, old = self.files[path]
        payload = bytes([len(self.files) + length & 0xFF or 1]) * length
        ok(self.c.write(fh, offset, payload, nfs3.FILE_SYNC))
        grown = old + bytes(max(0, offset - len(old)))
        self.files[path] = (fh, grown[:offset] + payload + grown[offset + length :])

    @precondition(lambda self: self.files)
    @rule(data=st.data(), size=OFFSETS)
    def resize(self, data: st.DataObject, size: int) -> None:
        path = data.draw(st.sampled_from(sorted(self.files)))
        fh, old = self.files[path]
        ok(self.c.setattr(fh, sized(size)))
        self.files[path] = (fh, old[:size] + bytes(max(0, size - len(old))))

    @precondition(lambda self: self.files)
    @rule(data=st.data(), name=st.sampled_from(NAMES))
    def rename(self, data: st.DataObject, name: bytes) -> None:
        path = data.draw(st.sampled_from(sorted(self.files)))
        to = data.draw(st.sampled_from(sorted(self.dirs)))
        folder, old = path.rsplit("/", 1)
        target = self.path(to, name)
        res = self.c.rename(
            self.dirs[folder], old.encode("utf-8", "surrogateescape"), self.dirs[to], name
        )
        if target in self.dirs:
            assert res.status == nfs3.NFS3ERR_ISDIR
            return
        assert res.status == nfs3.NFS3_OK, res.status
        self.files[target] = self.files.pop(path)  # over a file: that one is gone

    @rule(data=st.data(), name=st.sampled_from(NAMES))
    def remove(self, data: st.DataObject, name: bytes) -> None:
        folder = data.draw(st.sampled_from(sorted(self.dirs)))
        path = self.path(folder, name)
        res = self.c.remove(self.dirs[folder], name)
        if path in self.files:
            assert res.status == nfs3.NFS3_OK, res.status
            del self.files[path]
        elif path in self.dirs:
            assert res.status in (nfs3.NFS3ERR_ISDIR, nfs3.NFS3ERR_NOTDIR), res.status
        else:
            assert res.status == nfs3.NFS3ERR_NOENT, res.status

    @rule()
    def restart(self) -> None:
        """The server stopped and started: every handle still names its entry."""
        self.c.manager.close()
        self.other.manager.close()
        self.c = self.caller()
        self.other = self.caller()

    @rule(loop=st.sampled_from([None, True, False]))
    def served_from(self, loop: bool | None) -> None:
        """The next calls served on a worker, or on the loop first (the fast path,
        ``Store.nowait``), its connection alone there or not, as the transport does."""
        self.c.loop = loop

    @rule()
    def other_worker(self) -> None:
        """The next calls reach the other worker (a reconnect, or ``nconnect``)."""
        self.c, self.other = self.other, self.c
        self.c.xid = self.other.xid + 1_000  # one client: its xids go on

    @invariant()
    def answers_as_the_model(self) -> None:
        for folder, fh in self.dirs.items():
            entries = ok(self.c.readdir(fh, count=65536)).reply.entries
            assert {bytes(e.name) for e in entries} - {b".", b".."} == self.names_in(folder)
        for path, (fh, want) in self.files.items():
            assert ok(self.c.getattr(fh)).obj_attributes.size == len(want), path
            assert self.c.read_all(fh, len(want) + 1) == want, path


class SessionOverRpcSmallMaps(SessionOverRpc):
    """The same with every file's map "large" from two pieces (``PARTIAL_MIN``):
    the entries another worker's change, or a restart, left partial are filled
    piece by piece and swept whole again at once, in maps of chunks of four
    pieces (``RangeMap.LOAD``), and an entry past six pieces (``HELD_MAX``) is
    remade holding none — the paths a VM's random writes take."""

    def __init__(self) -> None:
        self.real = (store.PARTIAL_MIN, store.SWEEP_AFTER, store.SWEEP_PIECES, RangeMap.LOAD)
        self.real_held = store.HELD_MAX
        store.PARTIAL_MIN, store.SWEEP_AFTER, store.SWEEP_PIECES, RangeMap.LOAD = 2, 1, 2, 4
        store.HELD_MAX = 6  # entries past 6 pieces remade holding none
        super().__init__()

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            store.PARTIAL_MIN, store.SWEEP_AFTER, store.SWEEP_PIECES, RangeMap.LOAD = self.real
            store.HELD_MAX = self.real_held


for machine in (SessionOverRpc, SessionOverRpcSmallMaps):
    machine.TestCase.settings = settings(
        max_examples=60,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
test_a_session_over_rpc_answers_as_a_file_system = SessionOverRpc.TestCase
test_the_same_with_partial_maps = SessionOverRpcSmallMaps.TestCase
