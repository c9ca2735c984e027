"""instant.rangemap against a naive model: a bytearray per file, and the base limit rule."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from instant.rangemap import FileState, Piece, RangeMap
from merge.namespace import ZERO_FD, Run

BLOCK = 4096
BASE = bytes((i * 7 + 3) % 251 + 1 for i in range(3 * BLOCK + 100))  # never zero
BASE_FD = 1000

# Offsets at and around every block and sub-block (512) boundary of a few blocks.
_edges = [b * 512 + d for b in range(4 * BLOCK // 512 + 1) for d in (-1, 0, 1)]
offsets = st.one_of(st.sampled_from([e for e in _edges if e >= 0]), st.integers(0, 4 * BLOCK))
lengths = st.one_of(
    st.sampled_from([1, 511, 512, 513, BLOCK - 1, BLOCK, BLOCK + 1]), st.integers(1, 9000)
)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("write"), offsets, lengths),
        st.tuples(st.just("truncate"), offsets, st.just(0)),
    ),
    max_size=25,
)


class Model:
    """The file as bytes, with the rule that a truncated base byte never returns."""

    def __init__(self) -> None:
        self.data = bytearray(BASE)

    def write(self, off: int, data: bytes) -> None:
        if off > len(self.data):
            self.data.extend(bytes(off - len(self.data)))
        self.data[off : off + len(data)] = data

    def truncate(self, size: int) -> None:
        if size < len(self.data):
            del self.data[size:]
        else:
            self.data.extend(bytes(size - len(self.data)))


def _base(offset: int, count: int) -> list[Run]:
    end = min(offset + count, len(BASE))
    return [Run(BASE_FD, offset, end - offset)] if offset < end else []


def _read(state: FileState, logs: dict[int, bytearray], offset: int, count: int) -> bytes:
    out = bytearray()
    for r in state.runs(offset, count, _base, lambda log: log):
        if r.fd == ZERO_FD:
            out += bytes(r.length)
        elif r.fd == BASE_FD:
            out += BASE[r.pos : r.pos + r.length]
        else:
            out += logs[r.fd][r.pos : r.pos + r.length]
            assert r.pos + r.length <= len(logs[r.fd])
    return bytes(out)


@settings(max_examples=300, deadline=None)
@given(ops, st.data())
def test_file_state_reads_as_the_model(
    script: list[tuple[str, int, int]], data: st.DataObject
) -> None:
    state = FileState(len(BASE), len(BASE))
    logs = {1: bytearray(), 2: bytearray()}
    model = Model()
    for i, (op, off, n) in enumerate(script):
        if op == "write":
            log = 1 + i % 2
            payload = bytes([(i % 250) + 1]) * n
            pos = len(logs[log])
            logs[log] += payload
            state.write(Piece(off, n, log, pos))
            model.write(off, payload)
        else:
            state.truncate(off)
            model.truncate(off)
        assert state.size == len(model.data)
    assert _read(state, logs, 0, 1 << 20) == bytes(model.data)
    for _ in range(5):
        off = data.draw(offsets)
        n = data.draw(st.integers(0, 3 * BLOCK))
        assert _read(state, logs, off, n) == bytes(model.data[off : off + n])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(offsets, lengths, st.booleans()), max_size=30))
def test_edits_replayed_on_a_copy_give_the_same_map(script: list[tuple[int, int, bool]]) -> None:
    """What the read cache does: apply the writer's edits to its own copy."""
    a, b = RangeMap(), RangeMap()
    pos = 0
    for off, n, cut in script:
        edits = a.cut(off) if cut else a.put(Piece(off, n, 1, pos))
        pos += n
        b.apply(edits)
        assert list(a) == list(b)
        assert all(p.end <= q.start for p, q in zip(a, list(a)[1:], strict=False))


def test_a_sequential_writer_stays_one_piece() -> None:
    m = RangeMap()
    for i in range(1000):
        m.put(Piece(i * BLOCK, BLOCK, 7, 100 + i * BLOCK))
    assert list(m) == [Piece(0, 1000 * BLOCK, 7, 100)]


def test_truncated_and_regrown_reads_zeros_not_the_base() -> None:
    state = FileState(len(BASE), len(BASE))
    state.truncate(10)
    state.truncate(len(BASE))
    assert _read(state, {}, 0, 20) == BASE[:10] + bytes(10)
    state.write(Piece(BLOCK, 1, 1, 0))  # a write past the limit does not bring the base back
    assert _read(state, {1: bytearray(b"x")}, BLOCK - 2, 4) == b"\0\0x\0"


def test_a_small_write_maps_only_its_bytes() -> None:
    """No copy-up: a 4 KiB write in the middle of a big file adds one 4 KiB piece."""
    state = FileState(1 << 30, 1 << 30)
    edits = state.write(Piece(5 * BLOCK + 100, BLOCK, 1, 0))
    assert edits.added == [Piece(5 * BLOCK + 100, BLOCK, 1, 0)] and state.map.bytes == BLOCK
