"""READ's fill of a reply buffer from runs: equal to copying run by run."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from merge.namespace import ZERO_FD, Run
from nfsd.programs.nfs3.read import BRIDGE, _fill

BASE = os.urandom(1 << 20)
OVER = os.urandom(1 << 16)


def memfd(data: bytes) -> int:
    """A file holding ``data`` (memfd: it has no RWF_NOWAIT, so nowait must fall back)."""
    fd = os.memfd_create("t")
    os.write(fd, data)
    return fd


FDS = {"base": memfd(BASE), "over": memfd(OVER)}


@st.composite
def run_lists(draw: st.DrawFn) -> list[Run]:
    """Runs as a merged image makes them: base at its own offsets, overlays, zeros."""
    pos = draw(st.integers(0, 1 << 19))
    runs: list[Run] = []
    for _ in range(draw(st.integers(0, 25))):
        kind = draw(st.sampled_from(["base", "base", "over", "zero"]))
        length = draw(st.sampled_from([1, 7, 512, 4096, BRIDGE, BRIDGE + 1, 20000]))
        if pos + length > len(BASE):
            break
        if kind == "base":
            runs.append(Run(FDS["base"], pos, length))
        elif kind == "over":
            # Often right after the previous overlay run, as a pancbt stores them.
            last = [r for r in runs if r.fd == FDS["over"]]
            follow = last and draw(st.booleans())
            at = last[-1].pos + last[-1].length if follow else draw(st.integers(0, len(OVER) - 1))
            if at >= len(OVER):
                break
            length = min(length, len(OVER) - at)
            runs.append(Run(FDS["over"], at, length))
        else:
            runs.append(Run(ZERO_FD, 0, length))
        pos += length
    return runs


def naive(runs: list[Run]) -> bytes:
    out = b""
    for fd, pos, length in runs:
        out += bytes(length) if fd == ZERO_FD else os.pread(fd, length, pos)
    return out


@settings(max_examples=300, deadline=None)
@given(runs=run_lists())
def test_fill_equals_copying_run_by_run(runs: list[Run]) -> None:
    buf = bytearray(os.urandom(sum(r.length for r in runs) + 16))
    n = _fill(memoryview(buf), runs, False)
    assert n == sum(r.length for r in runs)
    assert bytes(buf[:n]) == naive(runs)


def test_nowait_on_a_file_system_without_it_hands_over_to_a_worker() -> None:
    import pytest

    from nfsd.rpc import WouldBlock

    with pytest.raises(WouldBlock):
        _fill(memoryview(bytearray(10)), [Run(FDS["base"], 0, 10)], True)


def test_nowait_on_cached_data_reads_inline(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "cached"
    f.write_bytes(BASE[:8192])
    fd = os.open(f, os.O_RDONLY)
    try:
        os.pread(fd, 8192, 0)  # now in the page cache
        buf = bytearray(8192)
        assert _fill(memoryview(buf), [Run(fd, 0, 4096), Run(ZERO_FD, 0, 4096)], True) == 8192
        assert bytes(buf) == BASE[:4096] + bytes(4096)
    finally:
        os.close(fd)


def test_adjacent_overlay_bytes_are_read_in_one_scatter(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from nfsd.programs.nfs3 import read

    calls: list[int] = []
    real = read._scatter

    def spy(pieces, fd, start, length, flags):  # type: ignore[no-untyped-def]
        calls.append(len(pieces))
        real(pieces, fd, start, length, flags)

    monkeypatch.setattr(read, "_scatter", spy)
    b, o = FDS["base"], FDS["over"]
    runs = [Run(b, 0, 100), Run(o, 0, 10), Run(b, 110, 50), Run(o, 10, 20), Run(b, 180, 20)]
    buf = bytearray(200)
    assert _fill(memoryview(buf), runs, False) == 200
    assert bytes(buf) == naive(runs)
    assert calls == [2]
