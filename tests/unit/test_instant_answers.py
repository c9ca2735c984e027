"""instant.answers: what a session's reads keep between changes is never stale.

The namespace under test keeps its answers (nodes, directories' attributes,
names, listings) per version of the session database; a second namespace on
the same directory (its own connections, as another server process) and the
first one itself change the tree, and after every change each answer the
first gives must equal one read from the database at that moment.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from instant import namespace
from instant.answers import Answers
from instant.namespace import SessionNamespace
from merge.namespace import ZERO_FD, Attrs, NamespaceError
from nfsd.programs.handles import BadHandle
from nfsd.programs.sessions import _BODY, VERSION, SessionManager
from tests.unit.test_instant_namespace import make_storage, open_session


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    make_storage(tmp_path)
    return tmp_path


def test_an_older_version_neither_reads_nor_stores() -> None:
    a = Answers(limit=4)
    a.put(5, "k", "old")  # nothing seen yet at 5: not kept
    assert a.get(5, "k") is None
    a.put(5, "k", "v5")
    assert a.get(5, "k") == "v5"
    assert a.get(6, "k") is None  # a newer version drops everything
    a.put(5, "k", "late")  # read before 6 was seen: not kept under 6
    assert a.get(6, "k") is None
    assert a.get(5, "k") is None  # nor given to a caller still at 5
    for i in range(5):
        a.put(6, i, i)
    assert len(a) <= 4


def _fresh(ns: SessionNamespace, fileid: int) -> object:
    """``fileid``'s attributes read now, around every kept answer."""
    try:
        with ns.store.read() as conn:
            return ns._attrs(conn, ns._by_fileid(conn, fileid))
    except NamespaceError as e:
        return type(e)


def _kept(ns: SessionNamespace, fileid: int) -> object:
    try:
        return ns.getattr(fileid)
    except NamespaceError as e:
        return type(e)


def _listing(ns: SessionNamespace, fileid: int) -> object:
    try:
        return sorted((n, a.fileid, a.size, a.mtime_ns, a.mode) for n, a in ns.readdir(fileid))
    except NamespaceError as e:
        return type(e)


ops = st.lists(
    st.tuples(
        st.sampled_from(["mine", "other"]),
        st.sampled_from(["create", "write", "size", "mode", "remove", "rename", "mkdir"]),
        st.sampled_from(["a", "b", "web01.vmx", "web01-flat.vmdk"]),
        st.integers(0, 70_000),
    ),
    min_size=1,
    max_size=25,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops)
def test_kept_answers_equal_the_database_after_every_change(storage: Path, script: list) -> None:  # type: ignore[type-arg]
    name = f"s{abs(hash(str(script)))}"
    with open_session(storage, name) as mine, open_session(storage, name) as other:
        w = mine.resolve(("web01",))
        fileids = {mine.root(), w, *(a.fileid for _, a in mine.readdir(w))}
        for who, op, entry, n in script:
            ns = mine if who == "mine" else other
            try:
                if op == "create":
                    fileids.add(ns.create(w, entry).fileid)
                elif op == "mkdir":
                    fileids.add(ns.mkdir(w, entry).fileid)
                elif op == "write":
                    ns.write(ns.lookup(w, entry).fileid, n, b"x" * (n % 5000 + 1))
                elif op == "size":
                    ns.setattr(ns.lookup(w, entry).fileid, size=n)
                elif op == "mode":
                    ns.setattr(ns.lookup(w, entry).fileid, mode=n & 0o777)
                elif op == "remove":
                    ns.remove(w, entry)
                else:
                    ns.rename(w, entry, w, "renamed")
                    fileids.add(ns.lookup(w, "renamed").fileid)
            except NamespaceError:
                pass
            # Ask first (answers kept), then compare with the database.
            for fid in sorted(fileids):
                kept = _kept(mine, fid)
                assert kept == _fresh(mine, fid), (op, fid)
            for entry_name in ("a", "b", "web01.vmx", "renamed", "nothing"):
                try:
                    got: object = mine.lookup(w, entry_name)
                except NamespaceError as e:
                    got = type(e)
                want = next((a for nm, a in _fresh_listing(mine, w) if nm == entry_name), None)
                if want is None:
                    assert not isinstance(got, Attrs), entry_name
                else:
                    assert got == want, entry_name
            assert _listing(mine, w) == sorted(
                (nm, a.fileid, a.size, a.mtime_ns, a.mode) for nm, a in _fresh_listing(mine, w)
            )


def _fresh_listing(ns: SessionNamespace, d: int) -> list[tuple[str, Attrs]]:
    with ns.store.read() as conn:
        rows = conn.execute(
            "SELECT d.name, n.fileid FROM dirents d JOIN nodes n ON n.id = d.node "
            "JOIN nodes p ON p.id = d.parent WHERE p.fileid=?",
            (d,),
        ).fetchall()
        return [(nm, ns._attrs(conn, ns._by_fileid(conn, fid))) for nm, fid in rows]


def test_a_write_shows_in_getattr_of_the_writer_and_of_another_process(storage: Path) -> None:
    with open_session(storage, "w") as mine, open_session(storage, "w") as other:
        f = mine.resolve(("web01", "web01.vmx"))
        assert mine.getattr(f).size == 6 and other.getattr(f).size == 6  # both kept
        mine.write(f, 100, b"z")
        assert mine.getattr(f).size == 101
        assert other.getattr(f).size == 101
        with other.open(f) as r:
            assert r.attrs.size == 101
        other.setattr(f, mode=0o600)
        assert mine.getattr(f).mode == 0o600
        other.remove(mine.resolve(("web01",)), "web01.vmx")
        with pytest.raises(NamespaceError):
            mine.getattr(f)


def test_a_verified_handle_is_remembered_a_forged_one_never(tmp_path: Path) -> None:
    from instant.sessions import SessionRegistry

    m = SessionManager(SessionRegistry(tmp_path), None, b"s" * 32)  # type: ignore[arg-type]
    body = _BODY.pack(VERSION, b"K" * 8, 42)
    good = body + m._mac(body)
    assert m.decode(good) == (b"K" * 8, 42)
    assert m.decode(good) == (b"K" * 8, 42)  # from the kept answer
    for i in range(len(good)):  # any byte changed: checked, and refused
        bad = bytearray(good)
        bad[i] ^= 1
        if bytes(bad)[:1] != bytes([VERSION]):
            continue
        with pytest.raises(BadHandle):
            m.decode(bytes(bad))
    other = SessionManager(SessionRegistry(tmp_path), None, b"t" * 32)  # type: ignore[arg-type]
    with pytest.raises(BadHandle):  # another secret's server never saw it verify
        other.decode(good)


def _pread(runs: list) -> bytes:  # type: ignore[type-arg]
    return b"".join(
        bytes(r.length) if r.fd == ZERO_FD else os.pread(r.fd, r.length, r.pos) for r in runs
    )


def test_the_base_reader_is_shared_then_opened_again(storage: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Kept across READs; a replaced storage file shows once it is older than
    BASE_KEPT_FOR; a READ holding the old one still reads it whole."""
    with open_session(storage, "b") as ns:
        opened = []
        real_open = ns.base.open
        monkeypatch.setattr(ns.base, "open", lambda p: opened.append(p) or real_open(p))
        f = ns.resolve(("web01", "web01.vmx"))
        for _ in range(3):
            with ns.open(f) as r:
                assert _pread(r.runs(0, 100)) == b"config"
        assert len(opened) == 1
        held = ns.open(f)
        held_runs = held.runs(0, 100)
        new = storage / "storage/day1/web01/.new"
        new.write_bytes(b"CONFIG")
        os.replace(new, storage / "storage/day1/web01/web01.vmx")
        monkeypatch.setattr(namespace, "BASE_KEPT_FOR", 0.0)
        deadline = time.monotonic() + 5  # the read-only stack's own ttl (1 s) too
        while True:
            with ns.open(f) as r:
                got = _pread(r.runs(0, 100))
            if got == b"CONFIG" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert got == b"CONFIG"
        assert _pread(held_runs) == b"config"  # not closed under the READ holding it
        held.__exit__(None, None, None)
        kept = list(ns._bases.values())
        assert kept
    assert all(k._refs == 0 for k in kept)  # closed with the session


def test_a_kept_getattr_does_not_wait_for_the_read_connection(storage: Path) -> None:
    """Another thread may hold the read connection for long (loading a large map):
    GETATTRs answered from what is kept (ESXi's heartbeats) must not wait for it."""
    with open_session(storage, "l") as ns:
        f = ns.resolve(("web01", "web01.vmx"))
        d = ns.resolve(("web01",))
        want = (ns.getattr(f), ns.getattr(d))
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            with ns.store._rlock:
                held.set()
                release.wait(10)

        holder = threading.Thread(target=hold)
        holder.start()
        held.wait()
        try:
            got: list[object] = []
            asker = threading.Thread(target=lambda: got.append((ns.getattr(f), ns.getattr(d))))
            asker.start()
            asker.join(2)
            assert got == [want], "GETATTR waited for the read connection"
        finally:
            release.set()
            holder.join()
            asker.join()
