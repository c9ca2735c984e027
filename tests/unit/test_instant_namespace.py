"""instant.namespace: the writable session tree against a naive model, identity, durability."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from instant.errors import (
    Exists,
    InvalidArgument,
    MadeAlready,
    NotEmpty,
    NotSupported,
    NotSync,
)
from instant.namespace import NOW, CreateHow, SessionNamespace
from merge.namespace import ZERO_FD, IsADirectory, Kind, NotADirectory, NotFound
from merge.stack import build_namespace

ROOT = Path(__file__).resolve().parents[2]
FLAT = bytes((i * 11 + 1) % 251 + 1 for i in range(50_000))
TREE = {
    "day1/web01/web01-flat.vmdk": FLAT,
    "day1/web01/web01.vmx": b"config",
    "day1/web01/sub/notes.txt": b"notes",
}


def make_storage(root: Path) -> Path:
    storage = root / "storage"
    for rel, data in TREE.items():
        p = storage / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return storage


def open_session(root: Path, name: str = "sess") -> SessionNamespace:
    return SessionNamespace(
        root / name, build_namespace(str(root / "storage")), {"web01": ("day1", "web01")}
    )


def ticking_session(storage: Path) -> SessionNamespace:
    """A session of ``web01`` as ``w`` whose clock steps 1 µs a reading: every change
    gets a later time than the one before."""
    clock = iter(range(10**9, 10**10, 1000))
    return SessionNamespace(
        storage / "s", build_namespace(str(storage / "storage")), {"w": ("day1", "web01")},
        clock=lambda: next(clock),
    )  # fmt: skip


def cat(ns: SessionNamespace, fid: int) -> bytes:
    with ns.open(fid) as r:
        return b"".join(
            bytes(x.length) if x.fd == ZERO_FD else os.pread(x.fd, x.length, x.pos)
            for x in r.runs(0, 1 << 30)
        )


def tree(ns: SessionNamespace, fid: int | None = None, prefix: str = "") -> dict[str, object]:
    """Path → (fileid, bytes) for files, fileid for directories, target for links."""
    out: dict[str, object] = {}
    for name, a in ns.readdir(ns.root() if fid is None else fid):
        path = prefix + name
        if a.kind == Kind.DIR:
            out[path] = a.fileid
            out.update(tree(ns, a.fileid, path + "/"))
        elif a.kind == Kind.LNK:
            out[path] = ns.readlink(a.fileid)
        else:
            out[path] = (a.fileid, cat(ns, a.fileid))
    return out


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    make_storage(tmp_path)
    return tmp_path


def test_session_presents_the_folders_with_base_fileids(storage: Path) -> None:
    base = build_namespace(str(storage / "storage"))
    with open_session(storage) as ns:
        t = tree(ns)
        assert set(t) == {
            "web01",
            "web01/web01-flat.vmdk",
            "web01/web01.vmx",
            "web01/sub",
            "web01/sub/notes.txt",
        }
        flat = ns.resolve(("web01", "web01-flat.vmdk"))
        assert flat == base.getattr(("day1", "web01", "web01-flat.vmdk")).fileid
        assert cat(ns, flat) == FLAT
        assert ns.getattr(flat).mode & 0o200  # writable


def test_identity_kept_by_first_write_rename_and_restart(storage: Path) -> None:
    with open_session(storage) as ns:
        w = ns.resolve(("web01",))
        flat = ns.resolve(("web01", "web01-flat.vmdk"))
        ns.write(flat, 4096, b"x" * 4096)
        ns.rename(w, "web01-flat.vmdk", ns.resolve(("web01", "sub")), "moved.vmdk")
        assert ns.resolve(("web01", "sub", "moved.vmdk")) == flat
    with open_session(storage) as ns:  # restart
        assert ns.resolve(("web01", "sub", "moved.vmdk")) == flat
        assert cat(ns, flat) == FLAT[:4096] + b"x" * 4096 + FLAT[8192:]
    assert (storage / "storage/day1/web01/web01-flat.vmdk").read_bytes() == FLAT  # never written


def test_exclusive_create_keeps_its_verifier(storage: Path) -> None:
    with open_session(storage) as ns:
        w = ns.resolve(("web01",))
        a = ns.create(w, ".lck-0102", how=CreateHow.EXCLUSIVE, verifier=b"v1v1v1v1")
        assert (
            ns.create(w, ".lck-0102", how=CreateHow.EXCLUSIVE, verifier=b"v1v1v1v1").fileid
            == a.fileid
        )
        with pytest.raises(Exists):
            ns.create(w, ".lck-0102", how=CreateHow.EXCLUSIVE, verifier=b"v2v2v2v2")
        with pytest.raises(Exists):
            ns.create(w, ".lck-0102", how=CreateHow.GUARDED)
        assert ns.create(w, ".lck-0102").fileid == a.fileid  # UNCHECKED
    with open_session(storage) as ns:  # the verifier survives a restart
        assert (
            ns.create(w, ".lck-0102", how=CreateHow.EXCLUSIVE, verifier=b"v1v1v1v1").fileid
            == a.fileid
        )


def test_swap_file_is_sparse_and_truncate_regrow_reads_zeros(storage: Path) -> None:
    with open_session(storage) as ns:
        w = ns.resolve(("web01",))
        swap = ns.create(w, "web01.vswp").fileid
        ns.setattr(swap, size=4 << 30)
        assert ns.getattr(swap).size == 4 << 30 and ns.store.usage().logged == 0
        flat = ns.resolve(("web01", "web01-flat.vmdk"))
        ns.setattr(flat, size=100)
        ns.setattr(flat, size=200)
        assert cat(ns, flat) == FLAT[:100] + bytes(100)


def test_setattr_fields_guard_and_times(storage: Path) -> None:
    ns = ticking_session(storage)
    f = ns.resolve(("w", "web01.vmx"))
    a = ns.setattr(f, mode=0o600, uid=5, gid=6, atime_ns=123, mtime_ns=NOW)
    assert (a.mode, a.uid, a.gid, a.atime_ns) == (0o600, 5, 6, 123) and a.mtime_ns == a.ctime_ns
    with pytest.raises(NotSync):
        ns.setattr(f, mode=0o644, guard_ctime_ns=a.ctime_ns - 1)
    b = ns.setattr(f, mode=0o644, guard_ctime_ns=a.ctime_ns)
    assert b.mode == 0o644 and b.ctime_ns > a.ctime_ns
    c = ns.write(f, 0, b"X")
    assert c.mtime_ns > b.mtime_ns
    ns.close()


def test_write_answers_and_commits_its_times_and_size_kept_node_untouched(storage: Path) -> None:
    """WRITE takes the node kept for the version it finds; the new times and size go
    into its answer and the database, never into the kept node."""
    ns = ticking_session(storage)
    f = ns.resolve(("w", "web01.vmx"))
    before = ns.getattr(f)
    kept = ns._node_at(ns.store.version(), f)
    a = ns.write(f, before.size + 10, b"tail")
    assert a.size == before.size + 14 and a.mtime_ns == a.ctime_ns != before.mtime_ns
    assert (kept.mtime, kept.ctime) == (before.mtime_ns, before.ctime_ns)
    g = ns.getattr(f)
    assert (g.size, g.mtime_ns, g.ctime_ns) == (a.size, a.mtime_ns, a.ctime_ns)
    ns.close()
    with open_session(storage, "s") as again:  # durable: a new process reads the same
        g2 = again.getattr(f)
        assert (g2.size, g2.mtime_ns, g2.ctime_ns) == (a.size, a.mtime_ns, a.ctime_ns)


def test_errors(storage: Path) -> None:
    with open_session(storage) as ns:
        root, w = ns.root(), ns.resolve(("web01",))
        vmx = ns.resolve(("web01", "web01.vmx"))
        for bad in ("", ".", "..", "a/b", "a\0b"):
            with pytest.raises(InvalidArgument):
                ns.create(w, bad)
        with pytest.raises(NotEmpty):
            ns.rmdir(w, "sub")
        with pytest.raises(IsADirectory):
            ns.remove(w, "sub")
        with pytest.raises(NotADirectory):
            ns.rmdir(w, "web01.vmx")
        with pytest.raises(NotADirectory):
            ns.lookup(vmx, "x")
        with pytest.raises(InvalidArgument):
            ns.rename(root, "web01", ns.resolve(("web01", "sub")), "loop")
        with pytest.raises(IsADirectory):
            ns.rename(w, "web01.vmx", root, "web01")
        with pytest.raises(NotADirectory):
            ns.rename(w, "sub", w, "web01.vmx")
        with pytest.raises(NotSupported):
            ns.link(vmx, w, "hard")
        with pytest.raises(NotFound):
            ns.remove(w, "nothing")
        ns.symlink(w, "ln", b"../x")
        assert ns.readlink(ns.resolve(("web01", "ln"))) == b"../x"
        with pytest.raises(Exists):
            ns.mkdir(w, "ln")


def test_another_process_sees_changes_at_once(storage: Path) -> None:
    with open_session(storage) as ns:
        w = ns.resolve(("web01",))
        code = (
            f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
            "from tests.unit.test_instant_namespace import open_session\n"
            "from pathlib import Path\n"
            f"ns = open_session(Path({str(storage)!r}))\n"
            "w = ns.resolve(('web01',))\n"
            "f = ns.create(w, 'from-child').fileid\n"
            "ns.write(f, 0, b'child')\n"
            "ns.remove(w, 'web01.vmx')\n"
            "ns.write(ns.resolve(('web01', 'web01-flat.vmdk')), 0, b'C')\n"
        )
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
        assert cat(ns, ns.resolve(("web01", "from-child"))) == b"child"
        with pytest.raises(NotFound):
            ns.lookup(w, "web01.vmx")
        assert cat(ns, ns.resolve(("web01", "web01-flat.vmdk")))[:2] == b"C" + FLAT[1:2]


def test_a_recorded_call_changes_once_across_processes(storage: Path) -> None:
    """A change under a key another process committed already (the same call,
    retransmitted to another worker) is not made: ``MadeAlready``, found in the
    change's own write transaction, nothing changed and the key not consumed."""
    with open_session(storage) as one, open_session(storage) as two:
        w = one.resolve(("web01",))
        with one.recording(b"k1"):
            one.create(w, "new", how=CreateHow.GUARDED, size=7)
        with one.recording(b"k2"):
            one.remove(w, "web01.vmx")
        assert two.recorded(b"k1") and not two.recorded(b"k3")
        with two.recording(b"k1"), pytest.raises(MadeAlready):
            two.create(w, "new", how=CreateHow.GUARDED, size=7)
        with two.recording(b"k2"), pytest.raises(MadeAlready):
            two.remove(w, "web01.vmx")
        with two.recording(b"k2"), pytest.raises(MadeAlready):
            two.create(w, "web01.vmx")  # not made: the key names a change made already
        with pytest.raises(NotFound):
            one.lookup(w, "web01.vmx")
        assert one.lookup(w, "new").size == 7


# "é" and the byte 0xE9 alone (a Latin-1 é, not UTF-8: a surrogate escape) are
# two names, kept apart in the database (one TEXT, one BLOB)
names = st.sampled_from(["a", "b", "é", "\udce9"])
dirs = st.sampled_from(["web01", "web01", "web01/sub", "web01/d"])
ns_ops = st.lists(
    st.one_of(
        st.tuples(st.just("create"), dirs, names, st.just(0), st.just(0)),
        st.tuples(st.just("write"), dirs, names, st.integers(0, 9000), st.integers(1, 5000)),
        st.tuples(st.just("size"), dirs, names, st.integers(0, 60_000), st.just(0)),
        st.tuples(st.just("remove"), dirs, names, st.just(0), st.just(0)),
        st.tuples(st.just("rename"), dirs, names, st.sampled_from([0, 1, 2]), names),
        st.tuples(st.just("mkdir"), st.just("web01"), st.just("d"), st.just(0), st.just(0)),
        st.tuples(st.just("rmdir"), st.just("web01"), st.just("d"), st.just(0), st.just(0)),
        st.tuples(
            st.just("base"),
            st.just("web01"),
            st.just("web01-flat.vmdk"),
            st.integers(0, 60_000),
            st.integers(1, 9000),
        ),
    ),
    min_size=4,
    max_size=30,
)


class Model:
    """Path → fileid and bytes; applies what the session should do, or refuses."""

    def __init__(self, ns: SessionNamespace) -> None:
        self.files = {p: v for p, v in tree(ns).items() if isinstance(v, tuple)}
        self.dirs = {p for p, v in tree(ns).items() if isinstance(v, int)}

    def children(self, d: str) -> list[str]:
        return [p for p in (*self.files, *self.dirs) if p.rsplit("/", 1)[0] == d]


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ns_ops)
def test_namespace_against_a_model(storage: Path, script: list) -> None:  # type: ignore[type-arg]
    ns = open_session(storage, f"s{os.urandom(4).hex()}")
    m = Model(ns)
    dlist = ["web01", "web01/sub", "web01/d"]
    for i, (op, d, name, x, y) in enumerate(script):
        path = f"{d}/{name}"
        if d not in m.dirs:
            continue
        dfid = ns.resolve(tuple(d.split("/")))
        if op == "create" and path not in m.dirs:
            fid = ns.create(dfid, name).fileid
            m.files.setdefault(path, (fid, b""))
        elif op in ("write", "size", "base") and path in m.files:
            fid, data = m.files[path]
            if op == "size":
                ns.setattr(fid, size=x)
                data = data[:x] + bytes(max(0, x - len(data)))
            else:
                payload = bytes([i % 250 + 1]) * y
                ns.write(fid, x, payload)
                data = data + bytes(max(0, x - len(data)))
                data = data[:x] + payload + data[x + y :]
            m.files[path] = (fid, data)
        elif op == "remove" and path in m.files:
            ns.remove(dfid, name)
            del m.files[path]
        elif op == "rename" and path in m.files and dlist[x] in m.dirs:
            to = f"{dlist[x]}/{y}"
            if to in m.dirs:
                continue
            ns.rename(dfid, name, ns.resolve(tuple(dlist[x].split("/"))), y)
            m.files[to] = m.files.pop(path)
        elif op == "mkdir" and path not in m.dirs and path not in m.files:
            ns.mkdir(dfid, name)
            m.dirs.add(path)
        elif op == "rmdir" and path in m.dirs and not m.children(path):
            ns.rmdir(dfid, name)
            m.dirs.discard(path)
    want = {**m.files, **{d: ns.resolve(tuple(d.split("/"))) for d in m.dirs}}
    assert tree(ns) == want
    ns.close()
    ns = open_session(storage, ns.dir.name)
    assert tree(ns) == want
    ns.close()
    assert (storage / "storage/day1/web01/web01-flat.vmdk").read_bytes() == FLAT
