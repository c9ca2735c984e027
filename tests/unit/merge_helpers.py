"""Test helpers for ``merge``, written from the specs alone.

Nothing here uses ``merge.pancbt`` or ``merge.extents``: the pancbt encoder
is ``struct`` + ``zlib`` straight from pancbt.md's tables, and the merged
image reference is a ``bytearray`` built byte range by byte range per
"The merged image", so the code under test is compared with an independent
reading of the spec.

============================  ===============================================
helper                        what
============================  ===============================================
``encode``                    pancbt bytes from explicit fields (may be
                              invalid: every field can be overridden)
``build``                     a valid pancbt from changes, data first
``naive_merged``              the merged image, the slow obvious way
``read_all``/``preadv_runs``  bytes of a reader, by ``os.preadv`` as the
                              server reads them
``presented_tree``            every presented path and its bytes
``write_link``                a SmartMotion link file
``open_fds``                  the process's open descriptors (leak checks)
``run_threads``               one function on many threads at once
``FakeClock``                 a clock the test moves
``FakeLower``                 a layer from a dict, to test one layer alone
============================  ===============================================
"""

from __future__ import annotations

import gc
import json
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import merge.passthrough
from merge import stamps
from merge.namespace import ZERO_FD, InputChanged, Kind, Namespace, Reader, Run

MAGIC = b"PANCBT\0\0"
HEADER = struct.Struct("<8sHHIQQIIQQ256s196s")  # bytes 0..507, then header_crc
ENTRY = struct.Struct("<QQQII")
DATA, ZERO = 1, 2
KIB, MIB = 1024, 1024 * 1024

# A change: (offset, bytes) for DATA, (offset, int length) for ZERO.
Change = tuple[int, bytes | int]


def encode(
    entries: list[tuple[int, int, int, int]] | list[tuple[int, int, int, int, int]],
    data: bytes = b"",
    *,
    disk_size: int,
    base_size: int = 0,
    block_size: int = 4096,
    table_offset: int | None = None,
    extent_count: int | None = None,
    magic: bytes = MAGIC,
    version: int = 1,
    flags: int = 0,
    header_size: int = 512,
    created: int = 1_795_000_000,
    base_hint: bytes = b"",
    reserved: bytes = bytes(196),
    header_crc: int | None = None,
    table_crc: int | None = None,
) -> bytes:
    """Header, ``data`` (from offset 512), then the table; any field may lie."""
    table = b"".join(ENTRY.pack(*(*e, 0)[:5]) for e in entries)
    if table_offset is None:
        table_offset = 512 + len(data)
    count = len(entries) if extent_count is None else extent_count
    head = HEADER.pack(
        magic,
        version,
        flags,
        header_size,
        disk_size,
        base_size,
        block_size,
        count,
        table_offset,
        created,
        base_hint,
        reserved,
    )
    head += struct.pack("<I", zlib.crc32(head) if header_crc is None else header_crc)
    body = bytearray(head + data)
    if len(body) < table_offset:
        body += bytes(table_offset - len(body))
    del body[table_offset:]
    body += table + struct.pack("<I", zlib.crc32(table) if table_crc is None else table_crc)
    return bytes(body)


def patch_header(raw: bytes, offset: int, fmt: str, value: int) -> bytes:
    """``raw`` with one header field rewritten and ``header_crc`` made right again."""
    out = bytearray(raw)
    struct.pack_into(fmt, out, offset, value)
    struct.pack_into("<I", out, 508, zlib.crc32(bytes(out[:508])))
    return bytes(out)


def build(changes: list[Change], disk_size: int, **fields: Any) -> bytes:
    """A valid pancbt of ``changes`` (sorted, non-overlapping), data then table."""
    entries = []
    data = bytearray()
    for offset, what in changes:
        if isinstance(what, int):
            entries.append((offset, what, 0, ZERO))
        else:
            entries.append((offset, len(what), 512 + len(data), DATA))
            data += what
    return encode(entries, bytes(data), disk_size=disk_size, **fields)


def decode(pancbt: bytes) -> tuple[int, list[tuple[int, int, int, int]]]:
    """``disk_size`` and ``(offset, length, data_offset, kind)`` of a *valid* pancbt."""
    fields = HEADER.unpack_from(pancbt)
    count, table_offset = fields[7], fields[8]
    table = pancbt[table_offset : table_offset + ENTRY.size * count]
    return fields[4], [e[:4] for e in ENTRY.iter_unpack(table)]


def naive_merged(base: bytes, pancbt: bytes) -> bytes:
    """pancbt.md "The merged image", directly: base, cut or zero-extended, then extents."""
    disk_size, entries = decode(pancbt)
    out = bytearray(disk_size)  # past the base: zeros
    n = min(len(base), disk_size)
    out[:n] = base[:n]  # inside the base: base bytes
    for offset, length, data_offset, kind in entries:
        if kind == DATA:
            out[offset : offset + length] = pancbt[data_offset : data_offset + length]
        else:
            out[offset : offset + length] = bytes(length)
    return bytes(out)


def preadv_runs(runs: list[Run], expect: int | None = None) -> bytes:
    """The bytes of ``runs``, each file run ``preadv``'d into one buffer (as the server)."""
    total = sum(r.length for r in runs)
    if expect is not None:
        assert total == expect, f"runs cover {total} bytes, expected {expect}"
    buf = bytearray(total)
    view = memoryview(buf)
    pos = 0
    for fd, start, length in runs:
        assert length > 0, "an empty run"
        if fd != ZERO_FD:
            assert fd >= 0, f"a source tag leaked out: {fd}"
            got = 0
            while got < length:
                n = os.preadv(fd, [view[pos + got : pos + length]], start + got)
                if n <= 0:
                    raise InputChanged("short read")
                got += n
        pos += length
    return bytes(buf)


def read_range(reader: Reader, offset: int, count: int) -> bytes:
    want = max(0, min(offset + count, reader.size) - offset)
    return preadv_runs(reader.runs(offset, count), want)


def read_all(reader: Reader) -> bytes:
    return read_range(reader, 0, reader.size)


def presented_tree(ns: Namespace, start: tuple[str, ...] = ()) -> dict[str, bytes | None]:
    """What a client sees: path -> bytes (files) or None (directories), attributes checked."""
    out: dict[str, bytes | None] = {}
    for name, attrs in ns.readdir(start):
        path = (*start, name)
        assert ns.getattr(path) == attrs, path
        if attrs.kind == Kind.DIR:
            out["/".join(path)] = None
            out |= presented_tree(ns, path)
        else:
            with ns.open(path) as r:
                out["/".join(path)] = read_all(r)
    return out


def write_link(path: Path, target: str, **extra: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"smartmotion": 1, "target": target, **extra}))
    return path


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def run_threads(work: Callable[[int], None], count: int = 8) -> list[BaseException]:
    """Run ``work(seed)`` on ``count`` threads at once; the exceptions they raised."""
    errors: list[BaseException] = []

    def guarded(seed: int) -> None:
        try:
            work(seed)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=(s,)) for s in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def open_fds() -> set[int]:
    return {int(n) for n in os.listdir("/proc/self/fd")}


def leaked_fds(before: set[int]) -> dict[int, str]:
    """Descriptors open now that were not in ``before``, with what each names.

    Counted after a full collection: a descriptor that only garbage of cycles
    (an earlier test's, say) still held is closed by it, and one this process
    would not close by itself is still there.  (A pure-Python run in CI once
    saw one more descriptor at a teardown than the same test alone ever did.)
    Counted again for a moment: a descriptor another thread has open for an instant
    (an earlier test's folder watch still running) is gone by then, and one that
    closed before it could be named was no leak (the next CI run saw that, "?")."""
    names: dict[int, str] = {}
    for attempt in range(5):
        if attempt:
            time.sleep(0.05)
        extra = open_fds() - before
        if extra:
            gc.collect()
            extra = open_fds() - before
        names = {}
        for fd in sorted(extra):
            try:
                names[fd] = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue  # closed since it was counted
        if not names:
            return names
    return names


class FakeClock:
    """``time.monotonic`` stand-in that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def tree_files(tree: Mapping[str, bytes | None]) -> dict[tuple[str, ...], bytes | None]:
    """``{"a/b": ...}`` to ``{("a", "b"): ...}`` with every parent directory added."""
    out: dict[tuple[str, ...], bytes | None] = {(): None}
    for rel, data in tree.items():
        parts = tuple(rel.split("/"))
        for i in range(1, len(parts)):
            out.setdefault(parts[:i], None)
        out[parts] = data
    return out


def same_tick_rewrite(monkeypatch: Any, path: Path, data: bytes) -> None:
    """``path`` rewritten in place with ``data`` (its size) within the tick of its
    last change: every ``stat`` of it from now on shows the stat from before (what
    a file system whose times have a coarse grain shows; ``merge.stamps``)."""
    before = os.stat(path)
    assert len(data) == before.st_size
    with open(path, "r+b") as f:
        f.write(data)

    def as_before(real: Any) -> Any:
        def look(p: Any, *a: Any, **kw: Any) -> Any:
            st = real(p, *a, **kw)
            return before if st.st_ino == before.st_ino and st.st_dev == before.st_dev else st

        return look

    for name in ("stat", "lstat", "fstat"):
        monkeypatch.setattr(os, name, as_before(getattr(os, name)))
    # A folder's scan too: Python's (entries' stat()) and not the C one, which
    # cannot be patched (merge.passthrough's ``native``).
    monkeypatch.setattr(merge.passthrough, "native", None)
    scandir = os.scandir

    class _Entry:
        def __init__(self, de: Any) -> None:
            self._de, self.name, self.path = de, de.name, de.path

        def __getattr__(self, name: str) -> Any:
            return getattr(self._de, name)

        def stat(self, **kw: Any) -> Any:
            st = self._de.stat(**kw)
            return before if st.st_ino == before.st_ino and st.st_dev == before.st_dev else st

    class _Scan:
        def __init__(self, *a: Any) -> None:
            self._it = scandir(*a)

        def __enter__(self) -> _Scan:
            return self

        def __exit__(self, *exc: object) -> None:
            self._it.close()

        def __iter__(self) -> Any:
            return (_Entry(d) for d in self._it)

    monkeypatch.setattr(os, "scandir", _Scan)


def stamps_settled(monkeypatch: Any) -> None:
    """The stamps' clock moved past every racy stamp's tick (``merge.stamps``)."""
    real = time.time_ns
    monkeypatch.setattr(stamps, "now_ns", lambda: real() + stamps.RACY_NS)
