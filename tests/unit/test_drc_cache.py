"""The reply cache's keys and bounds (``nfsd.programs.drc``).

A recorded procedure's key is committed to the session database and must
never change (pinned below, as computed before WRITE's key lost its hash); a
WRITE's key is never stored and is tested for what a key must do: the same
call (from any port of the same host) finds the first reply, and any other
call does not.  Entries older than ``max_age`` go, looked at once a second.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nfsd.programs import drc
from nfsd.rpc import CallContext, DropCall
from xdr import nfs3

FH = nfs3.nfs_fh3(b"\x02" + bytes(range(26)))


def _ctx(xid: int = 77, proc: int = 7, peer: str = "10.1.2.3:801") -> CallContext:
    return CallContext(xid, 100003, 3, proc, 1, None, peer, "tcp")


def test_a_recorded_procedures_key_is_unchanged() -> None:
    rename = nfs3.RENAME3args(nfs3.diropargs3(FH, b"a"), nfs3.diropargs3(FH, b"b"))
    key = drc.key_of(_ctx(proc=nfs3.NFSPROC3_RENAME), rename)
    assert key.hex() == "e7b95cfc36f88f725e12d3c5a39f925ef24147c6"


def _write(offset: int = 4096, data: bytes = b"x" * 4096, fh: bytes = FH.data) -> nfs3.WRITE3args:
    return nfs3.WRITE3args(nfs3.nfs_fh3(fh), offset, len(data), nfs3.FILE_SYNC, data)


def test_a_writes_key_ignores_the_port_and_nothing_else() -> None:
    key = drc.key_of(_ctx(), _write())
    assert drc.key_of(_ctx(peer="10.1.2.3:1022"), _write()) == key  # a reconnect
    assert drc.key_of(_ctx(), _write(data=memoryview(b"x" * 4096))) == key  # a record view
    others = [
        drc.key_of(_ctx(xid=78), _write()),
        drc.key_of(_ctx(peer="10.1.2.4:801"), _write()),
        drc.key_of(_ctx(), _write(offset=8192)),
        drc.key_of(_ctx(), _write(data=b"x" * 4095 + b"y")),
        drc.key_of(_ctx(), _write(fh=FH.data + b"\x00")),
        drc.key_of(_ctx(proc=nfs3.NFSPROC3_SETATTR), _write()),
    ]
    assert key not in others and len(set(others)) == len(others)


@given(
    st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**40), st.binary(max_size=64)),
    st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**40), st.binary(max_size=64)),
)
def test_two_writes_share_a_key_only_when_they_are_the_same_call(
    a: tuple[int, int, bytes], b: tuple[int, int, bytes]
) -> None:
    ka = drc.key_of(_ctx(xid=a[0]), _write(offset=a[1], data=a[2]))
    kb = drc.key_of(_ctx(xid=b[0]), _write(offset=b[1], data=b[2]))
    assert (ka == kb) == (a == b)


def test_a_write_and_a_retransmission_of_it(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = drc.ReplyCache()
    key = drc.key_of(_ctx(), _write())
    assert cache.begin(key) is None
    with pytest.raises(DropCall):  # still running
        cache.begin(drc.key_of(_ctx(peer="10.1.2.3:999"), _write()))
    cache.finish(key, b"reply")
    assert cache.begin(drc.key_of(_ctx(peer="10.1.2.3:999"), _write())) == b"reply"


def test_replies_older_than_max_age_go(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(drc.time, "monotonic", lambda: now[0])
    cache = drc.ReplyCache(max_age=60.0)
    cache.begin(b"old")
    cache.finish(b"old", b"first")
    now[0] += 59.0
    assert cache.begin(b"old") == b"first"  # within the age
    cache.begin(b"young")
    now[0] += 1.5  # "old" is 60.5 s old, "young" 1.5 s
    assert cache.begin(b"other") is None
    assert len(cache) == 2  # "old" gone, "young" and "other" kept
    assert cache.begin(b"old") is None  # a new call now
