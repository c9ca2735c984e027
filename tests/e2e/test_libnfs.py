"""End-to-end: Debian's libnfs-utils (and libnfs itself) against ``recovery-fs serve``.

The server runs on 127.0.0.1 on a free port over a storage tree generated in
``tmp_path``; every expectation comes from ``support.storage`` and
``support.pancbt`` (a naive reference of pancbt.md), never from ``merge/``.
Clients: ``nfs-ls -R``, ``nfs-cat``, ``nfs-cp`` and libnfs's ``nfs_pread``
through ctypes for reads at extent edges.  The hostile-client test speaks raw
TCP.  ``nfs-ls -D`` (discovery broadcasts) is never used.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import random
import shutil
import socket
import struct
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.e2e.support.prereq import require as _require
from tests.e2e.support.server import Server, null_call, ping, recovery_fs_command, recv_record
from tests.e2e.support.storage import KIB, MIB, Presented, big_dir_name, build_big_dir, build_sample
from tests.proto.calls import auth_sys, call
from xdr.base import Packer
from xdr.mount3 import MOUNT_PROGRAM, MOUNTPROC3_MNT

pytestmark = pytest.mark.e2e

TOOLS = ("nfs-ls", "nfs-cat", "nfs-cp")
BIG = "big"
BIG_COUNT = 10_000
WEB2 = "2026-11-21T0100/web01/web01-flat.vmdk"
WEB3 = "2026-11-22T0100/web01/web01-flat.vmdk"
HIDDEN = (  # storage names that must never be listed nor looked up
    "2026-11-21T0100/web01/web01-flat.vmdk.json",
    "2026-11-21T0100/web01/web01-pancbt.vmdk",
    "2026-11-22T0100/web01/previous.json",
    "2026-11-22T0100/web01/web01-flat.vmdk.json",
    "2026-11-22T0100/web01/web01-pancbt.vmdk",
    "2026-11-22T0100/db01/db-link.json",
    "2026-11-22T0100/db01/ghost-flat.vmdk.json",
    "2026-11-22T0100/db01/ghost-flat.vmdk",
    "2026-11-22T0100/orphan-pancbt.vmdk",
)


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Presented]:
    for tool in TOOLS:
        _require(shutil.which(tool) is not None, f"{tool} (Debian package libnfs-utils)")
    _require(recovery_fs_command() is not None, "the recovery-fs command (pip install -e .)")
    root = tmp_path_factory.mktemp("storage")
    root.chmod(0o755)  # root_squash (the default): uid 0 is nobody, who must search it
    presented = build_sample(root)
    presented |= build_big_dir(root, BIG, BIG_COUNT)
    return root, presented


def _mnt_call(xid: int) -> bytes:
    """One record: MNT of the export, AUTH_SYS as root (a call the exports admit)."""
    p = Packer()
    p.pack_string(b"/recover/images")
    body = call(MOUNT_PROGRAM, 3, MOUNTPROC3_MNT, p.get_buffer(), xid=xid, cred=auth_sys())
    return struct.pack(">I", 0x80000000 | len(body)) + body


def _start(storage_root: Path, workdir: Path) -> Server:
    try:
        return Server(storage_root, workdir)
    except (RuntimeError, TimeoutError) as e:
        log = workdir / "recovery-fs.out"
        pytest.fail(f"recovery-fs serve did not start: {e}\n{log.read_text(errors='replace')}")


@pytest.fixture(scope="module")
def server(storage, tmp_path_factory):
    srv = _start(storage[0], tmp_path_factory.mktemp("server"))
    yield srv
    alive = srv.alive()
    srv.stop()
    assert alive, f"the server died during the tests\n{srv.diagnostics()}"


def run(argv: list[str], timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, timeout=timeout, check=False, **kw)


def ls_recursive(srv: Server, path: str = "") -> dict[str, tuple[str, int]]:
    """``nfs-ls -R``: presented path -> (mode string, size)."""
    res = run(["nfs-ls", "-R", srv.url(path)])
    assert res.returncode == 0, res.stderr.decode() + srv.diagnostics()
    entries: dict[str, tuple[str, int]] = {}
    for line in res.stdout.decode().splitlines():
        mode, _nlink, _uid, _gid, size, name = line.split(None, 5)
        assert name not in entries, f"{name} listed twice"
        entries[name] = (mode, int(size))
    return entries


def cat(srv: Server, path: str) -> subprocess.CompletedProcess:
    return run(["nfs-cat", srv.url(path)])


def test_listing_matches_the_presented_tree(server, storage):
    expected = {
        path: ("d", 0) if data is None else ("-", len(data)) for path, data in storage[1].items()
    }
    listed = ls_recursive(server)
    got = {path: (mode[0], 0 if mode[0] == "d" else size) for path, (mode, size) in listed.items()}
    assert sorted(set(got) - set(expected)) == [], "listed but not expected"
    assert sorted(set(expected) - set(got)) == [], "expected but not listed"
    assert got == expected
    writable = [path for path, (mode, _) in listed.items() if "w" in mode]
    assert writable == [], "write permission bits must be cleared"


def test_every_file_reads_as_the_storage(server, storage):
    files = {p: d for p, d in storage[1].items() if d is not None}
    big = sorted(p for p in files if p.startswith(BIG + "/"))
    chosen = [p for p in files if not p.startswith(BIG + "/")]
    chosen += random.Random(7).sample(big, 25)
    wrong = []
    for path in chosen:
        res = cat(server, path)
        assert res.returncode == 0, f"nfs-cat {path}: {res.stderr.decode()}"
        if hashlib.sha256(res.stdout).digest() != hashlib.sha256(files[path]).digest():
            wrong.append((path, len(res.stdout), len(files[path])))
    assert wrong == [], "(path, bytes read, bytes expected) that differ"


def test_big_directory_lists_every_name_once(server):
    res = run(["nfs-ls", server.url(BIG)])
    assert res.returncode == 0, res.stderr.decode()
    names = Counter(line.split(None, 5)[5] for line in res.stdout.decode().splitlines())
    assert [n for n, c in names.items() if c > 1] == [], "names listed more than once"
    assert set(names) == {big_dir_name(i) for i in range(BIG_COUNT)}


@pytest.mark.parametrize("path", [WEB2, "2026-11-22T0100/web01/prev.vmdk", WEB3])
def test_merged_image_copies_byte_exact(server, storage, tmp_path, path):
    target = tmp_path / "copy.vmdk"
    res = run(["nfs-cp", server.url(path), str(target)])
    assert res.returncode == 0, res.stderr.decode()
    expected = storage[1][path]
    got = target.read_bytes()
    assert len(got) == len(expected)
    if got != expected:
        first_bad = next(i for i, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b)
        pytest.fail(f"{path}: first wrong byte at {first_bad}")


class _Url(ctypes.Structure):
    _fields_ = [("server", ctypes.c_char_p), ("path", ctypes.c_char_p), ("file", ctypes.c_char_p)]


class LibnfsFile:
    """One file opened with libnfs's synchronous API, for reads at chosen offsets."""

    def __init__(self, url: str) -> None:
        lib = ctypes.CDLL("libnfs.so.13")
        lib.nfs_init_context.restype = ctypes.c_void_p
        lib.nfs_parse_url_full.restype = ctypes.POINTER(_Url)
        lib.nfs_parse_url_full.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nfs_mount.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
        lib.nfs_open.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p]
        lib.nfs_pread.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64]
        lib.nfs_pread.argtypes += [ctypes.c_uint64, ctypes.c_void_p]
        lib.nfs_get_error.restype = ctypes.c_char_p
        lib.nfs_get_error.argtypes = [ctypes.c_void_p]
        lib.nfs_close.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.nfs_destroy_context.argtypes = [ctypes.c_void_p]
        self.lib, self.nfs, self.fh = lib, lib.nfs_init_context(), ctypes.c_void_p()
        u = lib.nfs_parse_url_full(self.nfs, url.encode()).contents
        for rc in (
            lib.nfs_mount(self.nfs, u.server, u.path),
            lib.nfs_open(self.nfs, u.file, os.O_RDONLY, ctypes.byref(self.fh)),
        ):
            assert rc == 0, lib.nfs_get_error(self.nfs)

    def pread(self, offset: int, count: int) -> bytes:
        buf = ctypes.create_string_buffer(count)
        n = self.lib.nfs_pread(self.nfs, self.fh, offset, count, buf)
        assert n >= 0, self.lib.nfs_get_error(self.nfs)
        return buf.raw[:n]

    def close(self) -> None:
        self.lib.nfs_close(self.nfs, self.fh)
        self.lib.nfs_destroy_context(self.nfs)


def test_merged_image_reads_at_extent_edges(server, storage):
    """pread through libnfs at the edges of support.storage's day 2 and 3 overlays."""
    edges = [0, 511, 512, 4095, 4096, 8191, 8192, 12288, 12387, 12388, MIB - 3, MIB + 4093]
    edges += [2 * MIB - 1, 2 * MIB + 64 * KIB, 3 * MIB + 990, 3 * MIB + 1000, 3 * MIB + 1010]
    edges += [3 * MIB - 5, 3 * MIB - 1, 4 * MIB - 8193, 4 * MIB - 1]
    for path in (WEB2, WEB3):
        expected = storage[1][path]
        f = LibnfsFile(server.url(path))
        try:
            for at in edges:
                for count in (1, 2, 7, 4096, 65536 + 3):
                    start = max(0, at - count // 2)
                    want = expected[start : start + count]
                    assert f.pread(start, count) == want, f"{path} at {start}+{count}"
            assert f.pread(len(expected), 10) == b"", "a READ at EOF returns nothing"
        finally:
            f.close()


def test_pancbt_and_link_files_are_hidden(server):
    listed = ls_recursive(server)
    for name in listed:
        assert not name.endswith("-pancbt.vmdk"), name
    assert sorted(set(HIDDEN) & set(listed)) == []
    for path in HIDDEN:
        res = cat(server, path)
        assert res.returncode != 0, f"{path} can be read"
        assert b"NOENT" in res.stderr, f"{path}: {res.stderr.decode()}"


def _snapshot(root: Path) -> list[tuple[str, int, int]]:
    return sorted(
        (str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if not p.is_relative_to(root / BIG)
    )


def test_writes_fail(server, storage, tmp_path):
    local = tmp_path / "local.txt"
    local.write_bytes(b"must not arrive\n")
    before = _snapshot(storage[0])
    for target in ("new-file.txt", "2026-11-20T0100/new-file.txt", "2026-11-20T0100/broken.json"):
        res = run(["nfs-cp", str(local), server.url(target)])
        assert res.returncode != 0, f"nfs-cp onto {target} succeeded"
    assert _snapshot(storage[0]) == before
    assert cat(server, "new-file.txt").returncode != 0


# --- hostile clients -------------------------------------------------------

HOSTILE_WAIT = 10.0


def _closed_or_error_reply(sock: socket.socket, xid: int | None) -> str:
    """How the server answered: 'closed', or 'reply' (an RPC error for ``xid``)."""
    sock.settimeout(HOSTILE_WAIT)
    try:
        reply = recv_record(sock)
    except (EOFError, ConnectionResetError):
        return "closed"
    except TimeoutError:
        return "neither closed nor answered"
    # xid, REPLY; then MSG_DENIED, or MSG_ACCEPTED with a non-SUCCESS accept_stat
    xid_got, msg_type, reply_stat = struct.unpack_from(">III", reply)
    if xid is not None and xid_got != xid:
        return f"a reply for xid {xid_got:#x}, not {xid:#x}"
    if msg_type != 1:
        return f"a record of msg_type {msg_type}"
    if reply_stat == 0:
        (verf_len,) = struct.unpack_from(">I", reply, 16)
        (accept_stat,) = struct.unpack_from(">I", reply, 20 + verf_len)
        if accept_stat == 0:
            return "SUCCESS for a garbage call"
    return "reply"


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _connect(srv: Server) -> socket.socket:
    return socket.create_connection((srv.host, srv.port), timeout=HOSTILE_WAIT)


def test_server_survives_hostile_clients(storage, tmp_path):
    srv = _start(storage[0], tmp_path)
    rnd = random.Random(3)
    outcomes: dict[str, str] = {}
    try:
        rss_before = _rss_kib(srv.proc.pid)

        # A well-formed CALL header to NFS v3 READ whose arguments are garbage.
        call = bytearray(null_call(0xBAD1)[4:])
        call[20:24] = struct.pack(">I", 6)  # procedure READ
        body = bytes(call) + rnd.randbytes(5)
        with _connect(srv) as s:
            s.sendall(struct.pack(">I", 0x80000000 | len(body)) + body)
            outcomes["READ with garbage arguments"] = _closed_or_error_reply(s, 0xBAD1)

        # A complete record of random bytes (not a CALL).
        junk = rnd.randbytes(4096)
        with _connect(srv) as s:
            s.sendall(struct.pack(">I", 0x80000000 | len(junk)) + junk)
            outcomes["random record"] = _closed_or_error_reply(s, None)

        # Random bytes with no record structure at all.
        with _connect(srv) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n" + rnd.randbytes(65536))
            outcomes["HTTP request and noise"] = _closed_or_error_reply(s, None)

        # A record marker claiming 2 GiB, then 1 MiB of it.
        with _connect(srv) as s:
            s.sendall(struct.pack(">I", 0xFFFFFFFF))
            with contextlib.suppress(BrokenPipeError, ConnectionResetError, TimeoutError):
                s.sendall(bytes(MIB))
            outcomes["2 GiB record marker"] = _closed_or_error_reply(s, None)

        # Half a record, then the client vanishes; and a client that never sends.
        for _ in range(20):
            with _connect(srv) as s:
                s.sendall(null_call(0xBAD2)[:20])
            with _connect(srv):
                pass

        # Many connections open at once, each having made a valid call (a MNT the
        # exports admit): all kept and answered.  (Connections that make no such
        # call, a NULL alone included, are capped at 64, the oldest closed first:
        # tests/unit/test_server_limits.py.)
        many: list[socket.socket] = []
        answered = 0
        try:
            for i in range(400):
                s = _connect(srv)
                many.append(s)
                s.sendall(_mnt_call(0x1000 + i))
                answered += recv_record(s)[:4] == struct.pack(">I", 0x1000 + i)
            for i, s in enumerate(many):  # still open, still served
                s.sendall(null_call(0x2000 + i))
                answered += recv_record(s)[:4] == struct.pack(">I", 0x2000 + i)
        finally:
            for s in many:
                s.close()

        # The server still serves, correctly.
        time.sleep(0.2)
        assert srv.alive(), f"the server died\n{srv.diagnostics()}"
        assert ping(srv.host, srv.port), "no NULL reply after the hostile clients"
        res = cat(srv, WEB2)
        assert res.returncode == 0, res.stderr.decode()
        assert res.stdout == storage[1][WEB2]
        rss_after = _rss_kib(srv.proc.pid)
    finally:
        srv.stop()
    bad = {what: how for what, how in outcomes.items() if how not in ("closed", "reply")}
    assert bad == {}, f"expected the connection closed or an RPC error reply: {bad}"
    assert answered == 800
    assert rss_after - rss_before < 256 * 1024, f"RSS grew {rss_before} -> {rss_after} KiB"
