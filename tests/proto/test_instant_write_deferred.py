"""A session WRITE answered later, by the store's committer (``nfsd.rpc.Later``).

The dispatcher returns at once with a deferred reply; the answer is there
only once the write's group is durable.  The duplicate request cache drops
a retransmission while the first runs and answers the first reply after;
a group that fails answers each of its WRITEs with an error and wcc.
"""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from instant.store import Store
from nfsd.programs.nfs3.router import INLINE_WRITE
from nfsd.rpc import Later, Reply, WouldBlock, batched, hold, settle
from tests.proto.calls import call, parse
from tests.proto.fakens import FakeNamespace
from tests.proto.sessionclient import SessionCaller
from tests.unit.test_group_sends import committer_waits
from xdr import nfs3
from xdr.nfs3 import NFS3Packer, NFS3Unpacker

DISK = bytes(range(256)) * 64  # 16 KiB


@pytest.fixture()
def c(tmp_path: Path) -> SessionCaller:
    base = FakeNamespace({("vm",): None, ("vm", "disk-flat.vmdk"): DISK})
    caller = SessionCaller(base, tmp_path / "state")
    caller.start("s1", {"web01": ("vm",)})
    yield caller
    caller.manager.close()
    base.close()


def disk(c: SessionCaller) -> nfs3.nfs_fh3:
    d = c.lookup(c.session_root("s1"), b"web01").resok.object
    return c.lookup(d, b"disk-flat.vmdk").resok.object


def write_record(fh: nfs3.nfs_fh3, offset: int, data: bytes, xid: int) -> bytes:
    p = NFS3Packer()
    p.pack_WRITE3args(nfs3.WRITE3args(fh, offset, len(data), nfs3.FILE_SYNC, data))
    return call(nfs3.NFS_PROGRAM, 3, nfs3.NFSPROC3_WRITE, p.get_buffer(), xid=xid)


@contextmanager
def read_lock_held(store: Store) -> Iterator[None]:
    """The store's read lock held by another thread for the block."""
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with store.read():
            held.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    assert held.wait(10)
    try:
        yield
    finally:
        release.set()
        t.join(10)


def write_res(parts: list) -> nfs3.WRITE3res:  # type: ignore[type-arg]
    r = parse(parts)
    assert r.stat == 0
    u = NFS3Unpacker(r.body)
    res = u.unpack_WRITE3res()
    u.done()
    return res


def test_a_write_is_answered_only_once_durable_and_its_duplicate_meanwhile_is_dropped(
    c: SessionCaller,
) -> None:
    fh = disk(c)
    store = c.manager.by_export("/recover/instant/s1").ns.store  # type: ignore[union-attr]
    assert c.write(fh, 0, b"w" * 10, nfs3.FILE_SYNC).status == nfs3.NFS3_OK  # committer up
    hold = threading.Event()
    store.hook = lambda point: hold.wait(10) if point == "after-sync" else None
    rec = write_record(fh, 4096, b"N" * 4096, xid=4242)
    first = c.dispatcher.dispatch(rec, c.peer, "tcp")
    assert first is not None and first.later is not None
    threading.Event().wait(0.05)
    assert not first.later.done  # the group is not durable: no answer yet
    dup = c.dispatcher.dispatch(rec, c.peer, "tcp")
    assert dup is not None and dup.dropped and not dup.parts  # a duplicate while it runs
    hold.set()
    answer = first.later.wait(10)
    assert answer is not None
    res = write_res(answer.parts)
    assert res.status == nfs3.NFS3_OK and res.resok.committed == nfs3.FILE_SYNC
    assert res.resok.file_wcc.before.attributes_follow
    assert res.resok.file_wcc.after.attributes.size == len(DISK)
    again = c.dispatcher.dispatch(rec, c.peer, "tcp")  # finished: the first answer
    assert again is not None and again.later is None
    assert b"".join(bytes(p) for p in again.parts) == b"".join(bytes(p) for p in answer.parts)
    assert c.read_all(fh, len(DISK))[4096:8192] == b"N" * 4096


def test_a_failed_group_answers_each_of_its_writes_with_an_error_and_wcc(
    c: SessionCaller,
) -> None:
    fh = disk(c)
    store = c.manager.by_export("/recover/instant/s1").ns.store  # type: ignore[union-attr]
    assert c.write(fh, 0, b"w" * 10, nfs3.FILE_SYNC).status == nfs3.NFS3_OK
    fail = threading.Event()

    def hook(point: str) -> None:
        if point == "after-sync" and fail.is_set():
            raise OSError(5, "I/O error")

    store.hook = hook
    fail.set()
    with store.transaction():  # the committer waits: the three go in one group
        replies = [
            c.dispatcher.dispatch(write_record(fh, i * 4096, b"X" * 4096, 700 + i), c.peer, "tcp")
            for i in range(3)
        ]
    for r in replies:
        assert r is not None and r.later is not None
        res = write_res(r.later.wait(10).parts)  # type: ignore[union-attr]
        assert res.status == nfs3.NFS3ERR_IO
        assert res.resfail.file_wcc.before.attributes_follow
        assert res.resfail.file_wcc.after.attributes_follow
    fail.clear()
    assert c.read_all(fh, len(DISK))[:4096] == b"w" * 10 + DISK[10:4096]  # none of them
    assert c.write(fh, 0, b"y" * 10, nfs3.FILE_SYNC).status == nfs3.NFS3_OK


def test_a_small_write_is_served_on_the_loop_and_answered_later(c: SessionCaller) -> None:
    """Inline (the loop): a WRITE up to INLINE_WRITE bytes is taken there, its bytes in
    the log, answered when its group commits; the same answer as on a worker."""
    fh = disk(c)
    assert c.write(fh, 0, b"w" * 10, nfs3.FILE_SYNC).status == nfs3.NFS3_OK  # the log open
    assert c.getattr(fh).status == nfs3.NFS3_OK  # the file's map loaded (else: a worker's)
    inline = c.dispatcher.dispatch(write_record(fh, 8192, b"L" * 4096, 801), c.peer, "tcp", True)
    assert inline is not None and inline.later is not None
    res = write_res(inline.later.wait(10).parts)  # type: ignore[union-attr]
    assert res.status == nfs3.NFS3_OK and res.resok.count == 4096
    assert c.read_all(fh, len(DISK))[8192 : 8192 + 4096] == b"L" * 4096
    big = write_record(fh, 0, b"B" * (INLINE_WRITE + 1), 802)
    with pytest.raises(WouldBlock):
        c.dispatcher.dispatch(big, c.peer, "tcp", True)


def test_an_inline_write_that_would_wait_goes_to_a_worker_having_changed_nothing(
    c: SessionCaller,
) -> None:
    """The store's read lock held by another thread when the write must read, or the
    log's zeros to extend:
    WouldBlock before a byte is written, and the same call then served on a worker
    (the reply cache forgot the first attempt)."""
    fh = disk(c)
    store = c.manager.by_export("/recover/instant/s1").ns.store  # type: ignore[union-attr]
    assert c.write(fh, 0, b"w" * 10, nfs3.FILE_SYNC).status == nfs3.NFS3_OK
    assert c.getattr(fh).status == nfs3.NFS3_OK
    rec = write_record(fh, 4096, b"K" * 4096, 803)
    end = store._log_end
    with read_lock_held(store):
        store._rstates.clear()  # the file's size must be read: the lock is needed
        with pytest.raises(WouldBlock):
            c.dispatcher.dispatch(rec, c.peer, "tcp", True)
    zeroed = store._log_zeroed
    store._log_zeroed = store._log_end  # the next write would need the zeros ahead
    try:
        with pytest.raises(WouldBlock):
            c.dispatcher.dispatch(rec, c.peer, "tcp", True)
    finally:
        store._log_zeroed = zeroed
    assert store._log_end == end  # nothing reserved, nothing written
    on_worker = settle(c.dispatcher.dispatch(rec, c.peer, "tcp"), 10)  # not a duplicate
    assert on_worker is not None
    assert write_res(on_worker.parts).status == nfs3.NFS3_OK
    assert c.read_all(fh, len(DISK))[4096:8192] == b"K" * 4096


def test_an_inline_write_returns_while_a_commit_holds_the_database(c: SessionCaller) -> None:
    """The loop never waits for a group: with sqlite's write lock held (another
    process's commit, here this test's transaction) an inline WRITE still returns
    at once, its answer to come once the lock is free."""
    fh = disk(c)
    store = c.manager.by_export("/recover/instant/s1").ns.store  # type: ignore[union-attr]
    assert c.write(fh, 0, b"w" * 10, nfs3.FILE_SYNC).status == nfs3.NFS3_OK
    assert c.getattr(fh).status == nfs3.NFS3_OK
    got: list[object] = []
    rec = write_record(fh, 12288, b"H" * 4096, 804)
    with store.transaction():
        t = threading.Thread(
            target=lambda: got.append(c.dispatcher.dispatch(rec, c.peer, "tcp", True)),
            daemon=True,
        )
        t.start()
        t.join(5)
        assert not t.is_alive(), "an inline WRITE waited for the database"
        (reply,) = got
        assert reply.later is not None and not reply.later.done  # type: ignore[attr-defined]
    res = write_res(reply.later.wait(10).parts)  # type: ignore[attr-defined]
    assert res.status == nfs3.NFS3_OK
    assert c.read_all(fh, len(DISK))[12288 : 12288 + 4096] == b"H" * 4096


def test_an_inline_write_does_not_need_the_read_lock_when_its_answers_are_kept(
    c: SessionCaller,
) -> None:
    """``Store.nowait`` takes the read lock only for a read that needs it: a WRITE
    whose node and size are kept at this version is served inline while another
    thread (the committer publishing a group, a worker loading a map) holds it."""
    fh = disk(c)
    store = c.manager.by_export("/recover/instant/s1").ns.store  # type: ignore[union-attr]
    assert c.write(fh, 0, b"w" * 10, nfs3.FILE_SYNC).status == nfs3.NFS3_OK
    assert c.getattr(fh).status == nfs3.NFS3_OK  # node and size kept at this version
    with read_lock_held(store):
        reply = c.dispatcher.dispatch(write_record(fh, 4096, b"L" * 4096, 812), c.peer, "tcp", True)
        assert reply is not None and reply.later is not None
    assert write_res(settle(reply, 10).parts).status == nfs3.NFS3_OK  # type: ignore[union-attr]
    assert c.read_all(fh, len(DISK))[4096:8192] == b"L" * 4096


class _Record(bytearray):
    """A record buffer that can be weakly referenced."""


def test_a_queued_write_holds_no_reference_to_its_record(c: SessionCaller) -> None:
    """A WRITE waiting for its group holds its metadata only: its bytes are in
    the log, and the deferred chain (reply cache, dispatcher) must not keep
    the record its data viewed (a flood of 1 MiB WRITEs would hold them all)."""
    fh = disk(c)
    store = c.manager.by_export("/recover/instant/s1").ns.store  # type: ignore[union-attr]
    assert c.write(fh, 0, b"w" * 10, nfs3.FILE_SYNC).status == nfs3.NFS3_OK
    hold = threading.Event()
    store.hook = lambda point: hold.wait(10) if point == "after-sync" else None
    rec = _Record(write_record(fh, 1 << 20, b"M" * (1 << 20), xid=991))
    ref = weakref.ref(rec)
    reply = c.dispatcher.dispatch(rec, c.peer, "tcp")
    assert reply is not None and reply.later is not None and not reply.later.done
    del rec
    gc.collect()
    alive = ref() is not None
    hold.set()
    res = write_res(reply.later.wait(10).parts)  # type: ignore[union-attr]
    assert res.status == nfs3.NFS3_OK
    assert not alive, "the 1 MiB record is held while its WRITE waits for its group"


def test_the_inline_writes_of_one_loop_round_form_one_group_and_leave_in_one_flush(
    c: SessionCaller,
) -> None:
    """The loop serves a round of calls in a batch (``nfsd.rpc.batched``): its WRITEs
    wake the committer once the round ends, so they go in one group, and the
    committer settles their replies in its own batch, so the transport's
    ``hold`` gets them together (one send per connection)."""
    fh = disk(c)
    assert c.write(fh, 0, b"w" * 10, nfs3.FILE_SYNC).status == nfs3.NFS3_OK  # the log open
    assert c.getattr(fh).status == nfs3.NFS3_OK  # the file's map loaded (else: a worker's)
    store = c.manager.by_export("/recover/instant/s1").ns.store  # type: ignore[union-attr]
    _wait_until(lambda: committer_waits(store))  # not still finishing the first write's group
    groups = store.stats.groups
    sent: list[object] = []

    def send(done: Later[Reply | None]) -> None:  # as the transport's _deliver does
        if not hold("conn", done.result(), lambda key, items: sent.append(len(items))):
            sent.append("alone")

    with batched():  # one round of the loop
        replies = [
            c.dispatcher.dispatch(
                write_record(fh, i * 512, b"r" * 512, 900 + i), c.peer, "tcp", True
            )
            for i in range(6)
        ]
        for r in replies:
            assert r is not None and r.later is not None
            r.later.then(send)
        threading.Event().wait(0.2)
        assert not any(r.later.done for r in replies if r.later is not None)  # not woken yet
    for r in replies:
        assert r.later is not None and write_res(r.later.wait(10).parts).status == nfs3.NFS3_OK  # type: ignore[union-attr]
    assert store.stats.groups - groups == 1
    _wait_until(lambda: sent == [6])
    assert c.read_all(fh, 6 * 512) == b"r" * 6 * 512


def _wait_until(cond, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = threading.Event()
    for _ in range(int(timeout / 0.005)):
        if cond():
            return
        deadline.wait(0.005)
    assert cond()
