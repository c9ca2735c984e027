"""Edges of the writable sessions found by review: each test fails on the code before its fix.

* a WRITE whose file is removed before its group commits never lands in a
  file made later (the store's ``live``; node ids never given twice);
* sizes and write ends past 2^63 - 1 are ``TooLarge`` (FBIG), and a record
  past it in a log is never redone;
* a failed COMMIT raises what failed (NOSPC), not ROLLBACK's error, and
  leaves no change marked as publishing;
* a registry file is known by inode and ctime (a session started again under
  its name often gets the old inode on ext4);
* a client list is one export of the session's path; overlapping folders and
  nesting too deep are refused cleanly; the export walks a deep tree.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from instant import db
from instant.errors import MAX_FILE_SIZE, NoSpace, Stale, TooLarge
from instant.export import export_tree, walk
from instant.namespace import LINK_MAX, SessionNamespace
from instant.sessions import SessionError, SessionInfo, SessionRegistry, create_session, file_ident
from instant.store import HEAD, Store, _read_record, _record
from merge.namespace import Kind
from merge.stack import build_namespace
from nfsd.programs import sessions as server_sessions
from tests.unit.test_instant_namespace import cat, make_storage, open_session


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    make_storage(tmp_path)
    return tmp_path


def _folder(ns: SessionNamespace) -> int:
    return ns.lookup(ns.root(), "web01").fileid


def test_a_write_racing_remove_never_lands_in_a_new_file(storage: Path) -> None:
    """The write is logged, its file removed, a new file made, then the group
    commits: the write is refused (Stale) and the new file is empty."""
    logged = threading.Event()
    go = threading.Event()

    def hook(point: str) -> None:
        if point == "after-data" and threading.current_thread().name == "writer":
            logged.set()
            assert go.wait(10)

    ns = SessionNamespace(
        storage / "s", build_namespace(str(storage / "storage")), {"web01": ("day1", "web01")},
        hook=hook,
    )  # fmt: skip
    try:
        d = _folder(ns)
        victim = ns.create(d, "victim").fileid
        ns.write(victim, 0, b"before")
        outcome: list[object] = []

        def write() -> None:
            try:
                outcome.append(ns.write(victim, 0, b"SECRET" * 100))
            except Exception as e:  # what the write was told
                outcome.append(e)

        t = threading.Thread(target=write, name="writer")
        t.start()
        assert logged.wait(10)
        ns.remove(d, "victim")
        fresh = ns.create(d, "fresh")
        go.set()
        t.join(10)
        assert isinstance(outcome[0], Stale), outcome
        assert fresh.fileid != victim
        assert ns.getattr(fresh.fileid).size == 0
        assert cat(ns, fresh.fileid) == b""
    finally:
        go.set()
        ns.close()


def test_node_ids_and_fileids_are_never_given_twice(storage: Path) -> None:
    """A handle of a removed file must never name a file made after it."""
    ns = open_session(storage)
    try:
        d = _folder(ns)
        seen = set()
        for i in range(5):
            a = ns.create(d, f"f{i}")
            assert a.fileid not in seen
            seen.add(a.fileid)
            ns.write(a.fileid, 0, b"x" * (i + 1))
            ns.remove(d, f"f{i}")
        with pytest.raises(Stale):
            ns.getattr(a.fileid)
    finally:
        ns.close()
    ns = open_session(storage)  # and after a restart (the counter is in the database)
    try:
        assert ns.create(_folder(ns), "again").fileid not in seen
    finally:
        ns.close()


def test_sizes_past_the_largest_file_are_too_large(storage: Path) -> None:
    ns = open_session(storage)
    try:
        f = ns.create(_folder(ns), "big").fileid
        with pytest.raises(TooLarge):
            ns.write(f, MAX_FILE_SIZE, b"x")
        with pytest.raises(TooLarge):
            ns.setattr(f, size=MAX_FILE_SIZE + 1)
        with pytest.raises(TooLarge):
            ns.store.write(1, MAX_FILE_SIZE - 1, b"xy", 0)
        ns.write(f, MAX_FILE_SIZE - 1, b"x")  # ends at the largest size: allowed
        assert ns.getattr(f).size == MAX_FILE_SIZE
        assert ns.setattr(f, size=MAX_FILE_SIZE).size == MAX_FILE_SIZE
    finally:
        ns.close()


def test_a_record_past_the_largest_file_is_never_redone(tmp_path: Path) -> None:
    log = tmp_path / "log"
    ok = b"".join(_record(1, 4096, b"data", 0, stamp=None, pos=0, span=HEAD + 4))
    bad = b"".join(_record(1, MAX_FILE_SIZE, b"data", 0, stamp=None, pos=0, span=HEAD + 4))
    for raw, want in ((ok, True), (bad, False)):
        log.write_bytes(raw)
        fd = os.open(log, os.O_RDONLY)
        try:
            assert (_read_record(fd, 0) is not None) is want
        finally:
            os.close(fd)


def test_a_failed_commit_raises_what_failed_and_cleans_up(tmp_path: Path) -> None:
    """SQLITE_FULL at COMMIT rolls the transaction back itself: ROLLBACK must not
    be run over it (it raised "no transaction is active" and skipped the clean-up)."""
    with Store(tmp_path / "s") as s:
        s.write(1, 0, b"a" * 100, 0)
        with pytest.raises(NoSpace), s.transaction() as tx:
            tx.truncate(1, 10, 0)
            tx.conn.execute("ROLLBACK")  # what a COMMIT that found the disk full leaves
            raise sqlite3.OperationalError("database or disk is full")
        assert s._publishing == {}
        assert s.size(1, 0) == 100
        s.write(1, 100, b"b", 0)  # the store goes on
        assert s.size(1, 0) == 101


def test_a_registry_file_is_known_by_inode_and_ctime(tmp_path: Path) -> None:
    p = tmp_path / "a.json"
    p.write_text("1")
    first = file_ident(os.stat(p))
    assert first == (os.stat(p).st_ino, os.stat(p).st_ctime_ns)
    os.utime(p, ns=(1, 1))  # a change of the same file moves its ctime too
    assert file_ident(os.stat(p)) != first


def test_manager_retires_a_session_whose_file_changed_under_one_inode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same name, same inode, another file: the old session is stale."""
    make_storage(tmp_path)
    base = build_namespace(str(tmp_path / "storage"))
    registry = SessionRegistry(tmp_path / "state")
    create_session(registry, base, "s", {"web01": ("day1", "web01")}, clients="*")
    manager = server_sessions.SessionManager(registry, base, b"k" * 32)
    try:
        s = manager.by_key(registry.get("s").key_bytes)  # type: ignore[union-attr]
        real = os.stat

        def reused(path: object, *a: object, **kw: object) -> os.stat_result:
            st = real(path, *a, **kw)  # type: ignore[arg-type]
            if str(path).endswith("s.json"):
                fields = list(st)
                return os.stat_result(fields, {"st_ctime_ns": st.st_ctime_ns + 1})
            return st

        monkeypatch.setattr(server_sessions.os, "stat", reused)
        assert not manager._alive(s)
    finally:
        monkeypatch.undo()
        manager.close()


@pytest.mark.parametrize(
    "clients",
    [
        "127.0.0.1(insecure)\n/recover/instant/victim 127.0.0.2(rw,no_root_squash)",
        "127.0.0.1 # comment",
        "127.0.0.1\\",
        "127.0.0.1\r127.0.0.2",
    ],
)
def test_a_client_list_is_one_line_of_the_sessions_export(storage: Path, clients: str) -> None:
    base = build_namespace(str(storage / "storage"))
    registry = SessionRegistry(storage / "state")
    with pytest.raises(SessionError):
        create_session(registry, base, "s", {"web01": ("day1", "web01")}, clients=clients)
    assert registry.get("s") is None


def test_a_published_bad_client_list_exports_nothing(storage: Path) -> None:
    info = SessionInfo.__new__(SessionInfo)
    object.__setattr__(info, "name", "s")
    object.__setattr__(info, "clients", "h\n/recover/instant/other *(rw)")
    with pytest.raises(Exception, match="one line"):
        info.exports_table()


def test_overlapping_folders_are_refused_cleanly(storage: Path) -> None:
    base = build_namespace(str(storage / "storage"))
    registry = SessionRegistry(storage / "state")
    with pytest.raises(SessionError, match="overlap"):
        create_session(registry, base, "s", {"day1": ("day1",), "web01": ("day1", "web01")})
    assert registry.get("s") is None
    assert not list((storage / "state" / "instant").glob("s*"))


def test_the_export_walks_a_tree_deeper_than_pythons_recursion(storage: Path) -> None:
    ns = open_session(storage)
    try:
        d = _folder(ns)
        for i in range(1200):
            d = ns.mkdir(d, f"d{i}").fileid
        ns.create(d, "leaf")
        entries = list(walk(ns))
        leaf = [p for p, _ in entries if p.name == "leaf"]
        assert len(leaf) == 1
        assert len(leaf[0].parts) == 1 + 1200 + 1
        nested = [p for p, a in entries if a.kind == Kind.DIR and p.name.startswith("d")]
        assert [len(p.parts) for p in nested] == list(range(2, 1202))  # parents first
    finally:
        ns.close()


def test_the_walk_order_is_parents_first_names_in_order(storage: Path) -> None:
    ns = open_session(storage)
    try:
        d = _folder(ns)
        b = ns.mkdir(d, "b").fileid
        ns.create(b, "z")
        ns.create(d, "a")
        got = [str(p) for p, _ in walk(ns)]
        assert got.index("web01") < got.index("web01/a") < got.index("web01/b")
        assert got.index("web01/b") + 1 == got.index("web01/b/z")
        assert got == sorted(got, key=lambda s: s.split("/"))
    finally:
        ns.close()


def test_names_count_in_the_quota(storage: Path) -> None:
    """Past the quota, names are refused too: links of 4 KiB targets once filled
    the cache file system (3,000 accepted, 15 MB, under a 1 MiB quota)."""
    ns = SessionNamespace(
        storage / "s", build_namespace(str(storage / "storage")), {"web01": ("day1", "web01")},
        quota=1 << 20,
    )  # fmt: skip
    try:
        d = _folder(ns)
        made = 0
        with pytest.raises(NoSpace):
            for made in range(5000):
                ns.symlink(d, f"l{made}", b"t" * LINK_MAX)
        assert 50 < made < 1000
        with pytest.raises(NoSpace):
            ns.mkdir(d, "more")
        db = storage / "s" / "session.sqlite"
        grown = db.stat().st_size + Path(f"{db}-wal").stat().st_size
        assert grown < 4 << 20
        ns.remove(d, "l0")  # removing still works
    finally:
        ns.close()


def test_a_database_that_cannot_be_opened_fails_at_once(tmp_path: Path) -> None:
    """Only BUSY is waited for (up to 120 s): a worker out of descriptors waited
    that long for a file it could not open, then failed anyway."""
    (tmp_path / f"{db.DB_NAME}-wal").mkdir()  # the WAL cannot be made
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError):
        db.connect(tmp_path)
    assert time.monotonic() - started < 5


def test_the_export_ends_when_a_file_is_cut_short_under_it(storage: Path, tmp_path: Path) -> None:
    """A client truncating a file the export is copying: the export ends with what
    was there (it spun forever: the runs past the new end were empty)."""
    ns = open_session(storage)
    try:
        f = ns.create(_folder(ns), "big").fileid
        chunk = bytes(range(256)) * 4096  # 1 MiB
        for i in range(20):
            ns.write(f, i << 20, chunk)
        cut = []

        def progress(n: int) -> None:
            if not cut:
                cut.append(n)
                ns.setattr(f, size=4096)

        out: list[object] = []
        t = threading.Thread(
            target=lambda: out.append(export_tree(ns, tmp_path / "out", progress)), daemon=True
        )
        t.start()
        t.join(30)
        assert not t.is_alive(), "the export did not end"
        copied = (tmp_path / "out" / "web01" / "big").read_bytes()
        assert 0 < len(copied) <= 20 << 20
        assert copied == (chunk * 20)[: len(copied)]
    finally:
        ns.close()


def test_a_session_that_failed_to_open_is_tried_again(
    storage: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its overlay missing at first (a file system not mounted yet): once it is
    back, the worker serves the session without a MNT or a registry change."""
    monkeypatch.setattr(server_sessions, "OPEN_RETRY", 0.05)
    base = build_namespace(str(storage / "storage"))
    registry = SessionRegistry(storage / "state")
    info = create_session(registry, base, "s", {"web01": ("day1", "web01")}, clients="*")
    overlay = Path(info.overlay)
    hidden = overlay.with_name("away")
    overlay.rename(hidden)
    manager = server_sessions.SessionManager(registry, base, b"k" * 32)
    try:
        assert manager.export_of(info.key_bytes) is None  # could not be opened
        hidden.rename(overlay)
        time.sleep(0.2)
        assert manager.export_of(info.key_bytes) == info.export_path
    finally:
        manager.close()


def test_a_client_is_noted_once_a_minute_whatever_its_calls(
    storage: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``instant list``'s clients: a client's calls touch its registry entry once per
    CLIENT_TOUCH_EVERY, whether they come on one connection (its peer string, the
    memo of the last call) or on several; a new client, or the same one after
    that time, is noted at once."""
    now = [1_000_000.0]
    monkeypatch.setattr(server_sessions.time, "time", lambda: now[0])
    base = build_namespace(str(storage / "storage"))
    registry = SessionRegistry(storage / "state")
    info = create_session(registry, base, "s", {"web01": ("day1", "web01")}, clients="*")
    touched: list[str] = []
    monkeypatch.setattr(registry, "touch_client", lambda name, addr: touched.append(addr))
    manager = server_sessions.SessionManager(registry, base, b"k" * 32)
    try:
        key = info.key_bytes
        assert manager.known(key) is not None
        conn = "10.0.0.5:801"
        parsed: list[str] = []
        split = server_sessions.split_peer
        monkeypatch.setattr(server_sessions, "split_peer", lambda p: parsed.append(p) or split(p))
        for _ in range(3):
            manager.note_client(key, conn)
        assert parsed == [conn]  # a connection's next calls: nothing parsed, nothing looked up
        manager.note_client(key, "10.0.0.5:802")  # its second connection
        assert touched == ["10.0.0.5"]
        manager.note_client(key, "10.0.0.6:801")
        manager.note_client(key, conn)
        assert touched == ["10.0.0.5", "10.0.0.6"]
        now[0] += server_sessions.CLIENT_TOUCH_EVERY + 1
        manager.note_client(key, conn)
        manager.note_client(key, conn)
        assert touched == ["10.0.0.5", "10.0.0.6", "10.0.0.5"]
        manager.note_client(b"o" * 8, conn)  # another session's key: its own list
        assert touched[-1] == "10.0.0.5" and len(touched) == 3  # not known: not touched
        assert manager._clients[b"o" * 8] == {"10.0.0.5": now[0]}
    finally:
        manager.close()
