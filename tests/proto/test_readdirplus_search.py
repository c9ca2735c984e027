"""READDIRPLUS of a folder the caller may list (r) but not search (x): names, no handles.

A handle is what LOOKUP would give, and LOOKUP in such a folder is
``NFS3ERR_ACCES``; knfsd's READDIRPLUS looks each entry up with the caller's
credentials and, failing the search check, sends the entry with neither
attributes nor handle.  Handed out, the handles opened the files behind the
folder to any raw client (a probe read one, uid 1000, through a 0744 folder).
Both exports, both the general path and the loop's fast path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from merge import build_namespace
from nfsd.rpc import WouldBlock, settle
from tests.proto.calls import auth_sys, call, parse
from tests.proto.nfsclient import Caller
from tests.proto.sessionclient import SessionCaller
from tests.proto.test_instant_session import as_user, ok, sattr
from xdr import nfs3
from xdr.nfs3 import NFS3Packer, NFS3Unpacker


@pytest.fixture()
def storage(tmp_path: Path) -> Path:
    root = tmp_path / "storage"
    (root / "ronly").mkdir(parents=True)
    (root / "ronly" / "f.txt").write_bytes(b"behind a folder one may not search\n")
    (root / "ronly").chmod(0o744)
    (root / "open").mkdir()
    (root / "open" / "g.txt").write_bytes(b"g\n")
    os.chmod(root, 0o755)
    return root


def _plus(c: Caller, fh: nfs3.nfs_fh3, uid: int, *, inline: bool) -> Any:
    p = NFS3Packer()
    p.pack_READDIRPLUS3args(nfs3.READDIRPLUS3args(fh, 0, bytes(8), 4096, 32768))
    c.xid += 1
    rec = call(nfs3.NFS_PROGRAM, 3, nfs3.NFSPROC3_READDIRPLUS, p.get_buffer(), xid=c.xid,
               cred=auth_sys(uid, uid))  # fmt: skip
    try:
        reply = c.dispatcher.dispatch(rec, "127.0.0.1:900", "tcp", inline, alone=True)
    except WouldBlock:
        reply = c.dispatcher.dispatch(rec, "127.0.0.1:900", "tcp")
    reply = settle(reply, 30)
    assert reply is not None
    r = parse(reply.parts)
    reply.free()
    res = NFS3Unpacker(r.body).unpack_READDIRPLUS3res()
    assert res.status == nfs3.NFS3_OK, res.status
    return res.resok.reply.entries


def _by_name(entries: Any) -> dict[bytes, Any]:
    return {e.name: e for e in entries}


@pytest.mark.parametrize("inline", [False, True])
def test_the_read_only_export_names_without_handles(storage: Path, inline: bool) -> None:
    ns = build_namespace(str(storage))
    c = Caller(ns)
    ronly, open_ = c.walk("ronly"), c.walk("open")
    for _ in range(2):  # the second: a listing encoded whole, the fast path's
        e = _by_name(_plus(c, ronly, 0, inline=inline))[b"f.txt"]
        assert e.name_handle.handle_follows and e.name_attributes.attributes_follow
    e = _by_name(_plus(c, ronly, 1000, inline=inline))[b"f.txt"]
    assert not e.name_handle.handle_follows and not e.name_attributes.attributes_follow
    assert e.fileid and e.cookie  # the names and cookies of READDIR
    e = _by_name(_plus(c, open_, 1000, inline=inline))[b"g.txt"]  # 0755: searchable
    assert e.name_handle.handle_follows and e.name_attributes.attributes_follow
    e = _by_name(_plus(c, ronly, 0, inline=inline))[b"f.txt"]  # root's again whole
    assert e.name_handle.handle_follows


def test_a_session_names_without_handles(storage: Path, tmp_path: Path) -> None:
    ns = build_namespace(str(storage))
    c = SessionCaller(ns, tmp_path / "state")
    try:
        c.start("s1", {"open": ("open",)})
        d = ok(c.lookup(c.session_root("s1"), b"open")).object
        ok(c.setattr(d, sattr(mode=0o744)))
        args = nfs3.READDIRPLUS3args(d, 0, bytes(8), 4096, 32768)
        res = as_user(c, 1000, nfs3.NFSPROC3_READDIRPLUS, "READDIRPLUS3", args)
        e = _by_name(ok(res).reply.entries)[b"g.txt"]
        assert not e.name_handle.handle_follows and not e.name_attributes.attributes_follow
        lookup = nfs3.LOOKUP3args(nfs3.diropargs3(d, b"g.txt"))
        assert as_user(c, 1000, nfs3.NFSPROC3_LOOKUP, "LOOKUP3", lookup).status == (
            nfs3.NFS3ERR_ACCES
        )
        e = _by_name(ok(c.readdirplus(d)).reply.entries)[b"g.txt"]  # root may search
        assert e.name_handle.handle_follows and e.name_attributes.attributes_follow
    finally:
        c.manager.close()
