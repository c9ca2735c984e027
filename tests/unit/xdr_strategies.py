"""Hypothesis strategies for every XDR type of :mod:`xdr` (reusable by any test).

Each protocol has a dict ``<PROTO>_TYPES`` from the XDR type name (as in
``pack_<name>``/``unpack_<name>``) to a strategy of valid values of it, so a
test can run over all of them: ``RPC_TYPES``, ``PORTMAP_TYPES``,
``MOUNT3_TYPES``, ``NFS3_TYPES``.  The single strategies are module
attributes too (``fattr3s``, ``post_op_attrs``, ``READ3args_s``...).
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xdr import mount3, portmap, rpc
from xdr import nfs3 as n
from xdr.base import Packer, Unpacker, XdrError

T = TypeVar("T")

EXAMPLES_PER_TYPE = 40
"""Examples per type for the tests run over every type (there are some 200)."""
SearchStrategy = st.SearchStrategy

uint32s = st.integers(0, 2**32 - 1)
int32s = st.integers(-(2**31), 2**31 - 1)
uint64s = st.integers(0, 2**64 - 1)
int64s = st.integers(-(2**63), 2**63 - 1)
bools = st.booleans()


def encode(packer: type[Packer], name: str, value: Any) -> bytes:
    """``value`` packed by ``packer().pack_<name>``."""
    p = packer()
    getattr(p, f"pack_{name}")(value)
    return p.get_buffer()


def decode(unpacker: type[Unpacker], name: str, data: bytes) -> Any:
    """``unpacker(data).unpack_<name>()``, which must use up every byte."""
    u = unpacker(data)
    value = getattr(u, f"unpack_{name}")()
    u.done()
    return value


def check_roundtrip(packer: type[Packer], unpacker: type[Unpacker], name: str, value: Any) -> bytes:
    """Pack, unpack: the same value; pack again: the same bytes.  Returns the bytes."""
    data = encode(packer, name, value)
    assert len(data) % 4 == 0
    back = decode(unpacker, name, data)
    assert back == value
    assert type(back) is type(value)
    assert encode(packer, name, back) == data
    return data


def check_wire(
    packer: type[Packer], unpacker: type[Unpacker], name: str, value: Any, wire: bytes
) -> None:
    """``value`` packs to exactly ``wire`` (bytes written out by hand), and back."""
    assert encode(packer, name, value) == wire
    assert decode(unpacker, name, wire) == value


def codec(
    packer: type[Packer], unpacker: type[Unpacker]
) -> tuple[
    Callable[[str, Any], bytes], Callable[[str, bytes], Any], Callable[[str, Any, bytes], None]
]:
    """``encode``, ``decode`` and ``check_wire`` bound to one protocol's packer and unpacker."""

    def enc(name: str, value: Any) -> bytes:
        return encode(packer, name, value)

    def dec(name: str, data: bytes) -> Any:
        return decode(unpacker, name, data)

    def known(name: str, value: Any, wire: bytes) -> None:
        check_wire(packer, unpacker, name, value, wire)

    return enc, dec, known


def check_truncated(unpacker: type[Unpacker], name: str, data: bytes, cut: int) -> None:
    """The first ``cut`` bytes of a valid encoding (``cut < len(data)``) are refused."""
    assert cut < len(data)
    u = unpacker(data[:cut])
    try:
        getattr(u, f"unpack_{name}")()
    except XdrError:
        return
    raise AssertionError(f"{name}: {cut} of {len(data)} bytes decoded without an error")


def check_refused_without_allocating(*decodes: Callable[[], Any]) -> None:
    """Each call raises XdrError, and all of them together allocate less than 1 MiB."""
    tracemalloc.start()
    try:
        for decode_it in decodes:
            with pytest.raises(XdrError):
                decode_it()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def _own(cls: type, prefix: str, base: type) -> set[str]:
    return {m[len(prefix) :] for m in dir(cls) if m.startswith(prefix) and not hasattr(base, m)}


def protocol_tests(
    packer: type[Packer], unpacker: type[Unpacker], types: dict[str, SearchStrategy[Any]]
) -> tuple[Callable[..., None], Callable[..., None], Callable[[], None]]:
    """The tests every protocol module passes, over every type of ``types``.

    A test module binds them to module-level ``test_*`` names for pytest:
    round trip, refusal of every truncation, and one ``pack_``/``unpack_``
    pair (and a strategy) for every type, no more, no fewer.
    """
    names = sorted(types)

    @pytest.mark.parametrize("name", names)
    @settings(max_examples=EXAMPLES_PER_TYPE)
    @given(data=st.data())
    def test_roundtrip(name: str, data: st.DataObject) -> None:
        check_roundtrip(packer, unpacker, name, data.draw(types[name]))

    @pytest.mark.parametrize("name", names)
    @settings(max_examples=EXAMPLES_PER_TYPE)
    @given(data=st.data())
    def test_truncated_encoding_is_refused(name: str, data: st.DataObject) -> None:
        encoded = encode(packer, name, data.draw(types[name]))
        check_truncated(unpacker, name, encoded, data.draw(st.integers(0, len(encoded) - 1)))

    def test_every_type_has_pack_unpack_and_a_strategy() -> None:
        packs = _own(packer, "pack_", Packer)
        assert packs == _own(unpacker, "unpack_", Unpacker)
        assert packs == set(names)

    return (
        test_roundtrip,
        test_truncated_encoding_is_refused,
        test_every_type_has_pack_unpack_and_a_strategy,
    )


def opaques(max_size: int | None = None) -> SearchStrategy[bytes]:
    """Variable-length opaque data; short mostly, now and then the full bound."""
    if max_size is None:
        return st.binary(max_size=300)
    return st.one_of(
        st.binary(max_size=min(max_size, 300)), st.binary(min_size=max_size, max_size=max_size)
    )


def lists(items: SearchStrategy[T], max_size: int = 5) -> SearchStrategy[list[T]]:
    return st.lists(items, max_size=max_size)


# --- RPC (RFC 5531) ---------------------------------------------------------

opaque_auths = st.builds(rpc.opaque_auth, int32s, opaques(rpc.MAX_AUTH_BYTES))
authsys_parms_s = st.builds(
    rpc.authsys_parms,
    uint32s,
    opaques(rpc.AUTHSYS_MAX_MACHINENAME),
    uint32s,
    uint32s,
    st.lists(uint32s, max_size=rpc.AUTHSYS_MAX_GIDS),
)
call_bodies = st.builds(
    rpc.call_body, uint32s, uint32s, uint32s, uint32s, opaque_auths, opaque_auths
)

RPC_TYPES: dict[str, SearchStrategy[Any]] = {
    "opaque_auth": opaque_auths,
    "authsys_parms": authsys_parms_s,
}

# --- Port mapper / rpcbind (RFC 1833) -------------------------------------

mappings = st.builds(portmap.mapping, uint32s, uint32s, uint32s, uint32s)
call_args_s = st.builds(portmap.call_args, uint32s, uint32s, uint32s, opaques())
call_results = st.builds(portmap.call_result, uint32s, opaques())
rpcbs = st.builds(portmap.rpcb, uint32s, uint32s, opaques(), opaques(), opaques())
rpcb_rmtcallargs_s = st.builds(portmap.rpcb_rmtcallargs, uint32s, uint32s, uint32s, opaques())
rpcb_rmtcallres_s = st.builds(portmap.rpcb_rmtcallres, opaques(), opaques())
netbufs = st.builds(portmap.netbuf, uint32s, opaques())
rpcb_entries = st.builds(portmap.rpcb_entry, opaques(), opaques(), uint32s, opaques(), opaques())

PORTMAP_TYPES: dict[str, SearchStrategy[Any]] = {
    "mapping": mappings,
    "pmaplist": lists(mappings),
    "call_args": call_args_s,
    "call_result": call_results,
    "rpcb": rpcbs,
    "rpcblist": lists(rpcbs),
    "rpcb_rmtcallargs": rpcb_rmtcallargs_s,
    "rpcb_rmtcallres": rpcb_rmtcallres_s,
    "netbuf": netbufs,
    "rpcb_entry": rpcb_entries,
    "rpcb_entry_list": lists(rpcb_entries),
}

# --- MOUNT v3 (RFC 1813 appendix I) ---------------------------------------

mountstat3s = st.sampled_from(sorted(mount3.MOUNTSTAT3))
dirpaths = opaques(mount3.MNTPATHLEN)
mount_names = opaques(mount3.MNTNAMLEN)
fhandle3s = opaques(mount3.FHSIZE3)
mountres3_oks = st.builds(mount3.mountres3_ok, fhandle3s, lists(int32s))
mountres3s = st.one_of(
    st.builds(mount3.mountres3, st.just(mount3.MNT3_OK), mountres3_oks),
    st.builds(mount3.mountres3, mountstat3s.filter(lambda s: s != mount3.MNT3_OK)),
)
mountbodies = st.builds(mount3.mountbody, mount_names, dirpaths)
exportnodes = st.builds(mount3.exportnode, dirpaths, lists(mount_names))

MOUNT3_TYPES: dict[str, SearchStrategy[Any]] = {
    "dirpath": dirpaths,
    "name": mount_names,
    "fhandle3": fhandle3s,
    "mountstat3": mountstat3s,
    "mountres3_ok": mountres3_oks,
    "mountres3": mountres3s,
    "mountbody": mountbodies,
    "mountlist": lists(mountbodies),
    "groups": lists(mount_names),
    "exportnode": exportnodes,
    "exports": lists(exportnodes),
}

# --- NFSv3 (RFC 1813) ------------------------------------------------------

nfsstat3s = st.sampled_from(sorted(n.NFSSTAT3))
failures = st.sampled_from(sorted(n.NFSSTAT3 - {n.NFS3_OK}))
ftype3s = st.sampled_from(sorted(n.FTYPE3))
stable_hows = st.sampled_from(sorted(n.STABLE_HOW))
createmode3s = st.sampled_from(sorted(n.CREATEMODE3))
time_hows = st.sampled_from(sorted(n.TIME_HOW))
filename3s = opaques(n.MAXNAMLEN)
nfspath3s = opaques(n.MAXPATHLEN)
verfs = st.binary(min_size=8, max_size=8)

specdata3s = st.builds(n.specdata3, uint32s, uint32s)
nfs_fh3s = st.builds(n.nfs_fh3, opaques(n.NFS3_FHSIZE))
nfstime3s = st.builds(n.nfstime3, uint32s, uint32s)
fattr3s = st.builds(
    n.fattr3,
    ftype3s,
    uint32s,
    uint32s,
    uint32s,
    uint32s,
    uint64s,
    uint64s,
    specdata3s,
    uint64s,
    uint64s,
    nfstime3s,
    nfstime3s,
    nfstime3s,
)


def bool_union(cls: type[T], arm: SearchStrategy[Any]) -> SearchStrategy[T]:
    """A union switched by a bool: TRUE with its arm, or FALSE and void."""
    return st.one_of(st.builds(cls, st.just(True), arm), st.builds(cls, st.just(False)))


post_op_attrs = bool_union(n.post_op_attr, fattr3s)
wcc_attrs = st.builds(n.wcc_attr, uint64s, nfstime3s, nfstime3s)
pre_op_attrs = bool_union(n.pre_op_attr, wcc_attrs)
wcc_datas = st.builds(n.wcc_data, pre_op_attrs, post_op_attrs)
post_op_fh3s = bool_union(n.post_op_fh3, nfs_fh3s)
set_mode3s = bool_union(n.set_mode3, uint32s)
set_uid3s = bool_union(n.set_uid3, uint32s)
set_gid3s = bool_union(n.set_gid3, uint32s)
set_size3s = bool_union(n.set_size3, uint64s)


def time_union(cls: type[T]) -> SearchStrategy[T]:
    """set_atime / set_mtime: a time only with SET_TO_CLIENT_TIME."""
    return st.one_of(
        st.builds(cls, st.just(n.SET_TO_CLIENT_TIME), nfstime3s),
        st.builds(cls, st.sampled_from([n.DONT_CHANGE, n.SET_TO_SERVER_TIME])),
    )


set_atimes = time_union(n.set_atime)
set_mtimes = time_union(n.set_mtime)
sattr3s = st.builds(n.sattr3, set_mode3s, set_uid3s, set_gid3s, set_size3s, set_atimes, set_mtimes)
diropargs3s = st.builds(n.diropargs3, nfs_fh3s, filename3s)
sattrguard3s = bool_union(n.sattrguard3, nfstime3s)
createhow3s = st.one_of(
    st.builds(n.createhow3, st.sampled_from([n.UNCHECKED, n.GUARDED]), obj_attributes=sattr3s),
    st.builds(n.createhow3, st.just(n.EXCLUSIVE), verf=verfs),
)
symlinkdata3s = st.builds(n.symlinkdata3, sattr3s, nfspath3s)
devicedata3s = st.builds(n.devicedata3, sattr3s, specdata3s)
mknoddata3s = st.one_of(
    st.builds(n.mknoddata3, st.sampled_from([n.NF3CHR, n.NF3BLK]), device=devicedata3s),
    st.builds(n.mknoddata3, st.sampled_from([n.NF3SOCK, n.NF3FIFO]), pipe_attributes=sattr3s),
    st.builds(n.mknoddata3, st.sampled_from([n.NF3REG, n.NF3DIR, n.NF3LNK])),
)
entry3s = st.builds(n.entry3, uint64s, filename3s, uint64s)
dirlist3s = st.builds(n.dirlist3, lists(entry3s), bools)
entryplus3s = st.builds(n.entryplus3, uint64s, filename3s, uint64s, post_op_attrs, post_op_fh3s)
dirlistplus3s = st.builds(n.dirlistplus3, lists(entryplus3s, 3), bools)


def created(cls: type[T]) -> SearchStrategy[T]:
    return st.builds(cls, post_op_fh3s, post_op_attrs, wcc_datas)


# The arguments, resok and resfail of every procedure, by procedure name.
ARGS: dict[str, SearchStrategy[Any]] = {
    "GETATTR": st.builds(n.GETATTR3args, nfs_fh3s),
    "SETATTR": st.builds(n.SETATTR3args, nfs_fh3s, sattr3s, sattrguard3s),
    "LOOKUP": st.builds(n.LOOKUP3args, diropargs3s),
    "ACCESS": st.builds(n.ACCESS3args, nfs_fh3s, uint32s),
    "READLINK": st.builds(n.READLINK3args, nfs_fh3s),
    "READ": st.builds(n.READ3args, nfs_fh3s, uint64s, uint32s),
    "WRITE": st.builds(n.WRITE3args, nfs_fh3s, uint64s, uint32s, stable_hows, opaques()),
    "CREATE": st.builds(n.CREATE3args, diropargs3s, createhow3s),
    "MKDIR": st.builds(n.MKDIR3args, diropargs3s, sattr3s),
    "SYMLINK": st.builds(n.SYMLINK3args, diropargs3s, symlinkdata3s),
    "MKNOD": st.builds(n.MKNOD3args, diropargs3s, mknoddata3s),
    "REMOVE": st.builds(n.REMOVE3args, diropargs3s),
    "RMDIR": st.builds(n.RMDIR3args, diropargs3s),
    "RENAME": st.builds(n.RENAME3args, diropargs3s, diropargs3s),
    "LINK": st.builds(n.LINK3args, nfs_fh3s, diropargs3s),
    "READDIR": st.builds(n.READDIR3args, nfs_fh3s, uint64s, verfs, uint32s),
    "READDIRPLUS": st.builds(n.READDIRPLUS3args, nfs_fh3s, uint64s, verfs, uint32s, uint32s),
    "FSSTAT": st.builds(n.FSSTAT3args, nfs_fh3s),
    "FSINFO": st.builds(n.FSINFO3args, nfs_fh3s),
    "PATHCONF": st.builds(n.PATHCONF3args, nfs_fh3s),
    "COMMIT": st.builds(n.COMMIT3args, nfs_fh3s, uint64s, uint32s),
}

RESOK: dict[str, SearchStrategy[Any]] = {
    "GETATTR": st.builds(n.GETATTR3resok, fattr3s),
    "SETATTR": st.builds(n.SETATTR3resok, wcc_datas),
    "LOOKUP": st.builds(n.LOOKUP3resok, nfs_fh3s, post_op_attrs, post_op_attrs),
    "ACCESS": st.builds(n.ACCESS3resok, post_op_attrs, uint32s),
    "READLINK": st.builds(n.READLINK3resok, post_op_attrs, nfspath3s),
    "READ": st.builds(n.READ3resok, post_op_attrs, uint32s, bools, opaques()),
    "WRITE": st.builds(n.WRITE3resok, wcc_datas, uint32s, stable_hows, verfs),
    "CREATE": created(n.CREATE3resok),
    "MKDIR": created(n.MKDIR3resok),
    "SYMLINK": created(n.SYMLINK3resok),
    "MKNOD": created(n.MKNOD3resok),
    "REMOVE": st.builds(n.REMOVE3resok, wcc_datas),
    "RMDIR": st.builds(n.RMDIR3resok, wcc_datas),
    "RENAME": st.builds(n.RENAME3resok, wcc_datas, wcc_datas),
    "LINK": st.builds(n.LINK3resok, post_op_attrs, wcc_datas),
    "READDIR": st.builds(n.READDIR3resok, post_op_attrs, verfs, dirlist3s),
    "READDIRPLUS": st.builds(n.READDIRPLUS3resok, post_op_attrs, verfs, dirlistplus3s),
    "FSSTAT": st.builds(
        n.FSSTAT3resok, post_op_attrs, uint64s, uint64s, uint64s, uint64s, uint64s, uint64s, uint32s
    ),
    "FSINFO": st.builds(
        n.FSINFO3resok,
        post_op_attrs,
        uint32s,
        uint32s,
        uint32s,
        uint32s,
        uint32s,
        uint32s,
        uint32s,
        uint64s,
        nfstime3s,
        uint32s,
    ),
    "PATHCONF": st.builds(
        n.PATHCONF3resok, post_op_attrs, uint32s, uint32s, bools, bools, bools, bools
    ),
    "COMMIT": st.builds(n.COMMIT3resok, wcc_datas, verfs),
}

RESFAIL: dict[str, SearchStrategy[Any]] = {
    "SETATTR": st.builds(n.SETATTR3resfail, wcc_datas),
    "LOOKUP": st.builds(n.LOOKUP3resfail, post_op_attrs),
    "ACCESS": st.builds(n.ACCESS3resfail, post_op_attrs),
    "READLINK": st.builds(n.READLINK3resfail, post_op_attrs),
    "READ": st.builds(n.READ3resfail, post_op_attrs),
    "WRITE": st.builds(n.WRITE3resfail, wcc_datas),
    "CREATE": st.builds(n.CREATE3resfail, wcc_datas),
    "MKDIR": st.builds(n.MKDIR3resfail, wcc_datas),
    "SYMLINK": st.builds(n.SYMLINK3resfail, wcc_datas),
    "MKNOD": st.builds(n.MKNOD3resfail, wcc_datas),
    "REMOVE": st.builds(n.REMOVE3resfail, wcc_datas),
    "RMDIR": st.builds(n.RMDIR3resfail, wcc_datas),
    "RENAME": st.builds(n.RENAME3resfail, wcc_datas, wcc_datas),
    "LINK": st.builds(n.LINK3resfail, post_op_attrs, wcc_datas),
    "READDIR": st.builds(n.READDIR3resfail, post_op_attrs),
    "READDIRPLUS": st.builds(n.READDIRPLUS3resfail, post_op_attrs),
    "FSSTAT": st.builds(n.FSSTAT3resfail, post_op_attrs),
    "FSINFO": st.builds(n.FSINFO3resfail, post_op_attrs),
    "PATHCONF": st.builds(n.PATHCONF3resfail, post_op_attrs),
    "COMMIT": st.builds(n.COMMIT3resfail, wcc_datas),
}


def result(proc: str) -> SearchStrategy[Any]:
    """X3res: NFS3_OK with X3resok, or a failure with X3resfail (void for GETATTR)."""
    cls = getattr(n, f"{proc}3res")
    ok = st.builds(cls, st.just(n.NFS3_OK), RESOK[proc])
    if proc not in RESFAIL:
        return st.one_of(ok, st.builds(cls, failures))
    return st.one_of(ok, st.builds(cls, failures, resfail=RESFAIL[proc]))


RESULTS: dict[str, SearchStrategy[Any]] = {proc: result(proc) for proc in ARGS}

NFS3_TYPES: dict[str, SearchStrategy[Any]] = {
    "uint32": uint32s,
    "uint64": uint64s,
    "int32": int32s,
    "int64": int64s,
    "uid3": uint32s,
    "gid3": uint32s,
    "mode3": uint32s,
    "count3": uint32s,
    "fileid3": uint64s,
    "cookie3": uint64s,
    "size3": uint64s,
    "offset3": uint64s,
    "filename3": filename3s,
    "nfspath3": nfspath3s,
    "cookieverf3": verfs,
    "createverf3": verfs,
    "writeverf3": verfs,
    "nfsstat3": nfsstat3s,
    "ftype3": ftype3s,
    "stable_how": stable_hows,
    "createmode3": createmode3s,
    "time_how": time_hows,
    "specdata3": specdata3s,
    "nfs_fh3": nfs_fh3s,
    "nfstime3": nfstime3s,
    "fattr3": fattr3s,
    "post_op_attr": post_op_attrs,
    "wcc_attr": wcc_attrs,
    "pre_op_attr": pre_op_attrs,
    "wcc_data": wcc_datas,
    "post_op_fh3": post_op_fh3s,
    "set_mode3": set_mode3s,
    "set_uid3": set_uid3s,
    "set_gid3": set_gid3s,
    "set_size3": set_size3s,
    "set_atime": set_atimes,
    "set_mtime": set_mtimes,
    "sattr3": sattr3s,
    "diropargs3": diropargs3s,
    "sattrguard3": sattrguard3s,
    "createhow3": createhow3s,
    "symlinkdata3": symlinkdata3s,
    "devicedata3": devicedata3s,
    "mknoddata3": mknoddata3s,
    "entry3": entry3s,
    "dirlist3": dirlist3s,
    "entryplus3": entryplus3s,
    "dirlistplus3": dirlistplus3s,
}
for _proc, _s in ARGS.items():
    NFS3_TYPES[f"{_proc}3args"] = _s
for _proc, _s in RESOK.items():
    NFS3_TYPES[f"{_proc}3resok"] = _s
for _proc, _s in RESFAIL.items():
    NFS3_TYPES[f"{_proc}3resfail"] = _s
for _proc, _s in RESULTS.items():
    NFS3_TYPES[f"{_proc}3res"] = _s

# Convenience names for single procedure types.
READ3args_s = ARGS["READ"]
READ3res_s = RESULTS["READ"]
GETATTR3res_s = RESULTS["GETATTR"]
READDIRPLUS3res_s = RESULTS["READDIRPLUS"]
