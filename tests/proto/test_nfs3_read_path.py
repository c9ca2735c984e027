"""MOUNT, GETATTR, LOOKUP and READ over the dispatcher: bytes in, bytes out."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.proto.fakens import FakeNamespace, fileid_of
from tests.proto.nfsclient import Caller
from xdr import mount3, nfs3

DATA = os.urandom(3 * 1024 * 1024 + 17)


@pytest.fixture(scope="module")
def ns() -> FakeNamespace:
    tree = {
        ("vm",): None,
        ("vm", "disk-flat.vmdk"): DATA,
        ("vm", "disk.vmdk"): b"# Disk DescriptorFile\n",
        ("empty",): b"",
    }
    n = FakeNamespace(tree)
    yield n
    n.close()


@pytest.fixture()
def c(ns: FakeNamespace) -> Caller:
    return Caller(ns)


def test_mnt_of_the_export_gives_the_root_handle_and_both_flavours(c: Caller) -> None:
    res = c.mount()
    assert res.fhs_status == mount3.MNT3_OK
    assert res.mountinfo is not None
    assert 0 < len(res.mountinfo.fhandle) <= 64
    assert set(res.mountinfo.auth_flavors) == {0, 1}
    assert c.mount(b"/recover/images/").fhs_status == mount3.MNT3_OK


@pytest.mark.parametrize(
    "path",
    [
        b"/",
        b"/recover",
        b"/storage",
        b"/recover/images/nope",
        b"/recover/images/../x",
        b"",
        b"recover/images",
        b"recover/images/vm",
        b"/recover/images/vm\0",
    ],
)
def test_mnt_of_anything_else_is_noent(c: Caller, path: bytes) -> None:
    assert c.mount(path).fhs_status == mount3.MNT3ERR_NOENT


def test_mnt_of_a_folder_below_the_export_gives_its_handle(c: Caller) -> None:
    res = c.mount(b"/recover/images/vm")
    assert res.fhs_status == mount3.MNT3_OK
    assert res.mountinfo.fhandle == c.walk("vm").data
    assert c.mount(b"/recover/images/vm/disk.vmdk").fhs_status == mount3.MNT3ERR_NOTDIR


def test_getattr_of_root_and_file(c: Caller) -> None:
    root = c.getattr(c.root())
    assert root.status == nfs3.NFS3_OK
    assert root.resok.obj_attributes.type == nfs3.NF3DIR
    f = c.getattr(c.walk("vm", "disk-flat.vmdk")).resok.obj_attributes
    assert f.type == nfs3.NF3REG
    assert f.size == len(DATA)
    assert f.fileid == fileid_of(("vm", "disk-flat.vmdk"))
    assert f.mode & 0o222 == 0
    assert f.mtime.nseconds == 123456789


def test_lookup_missing_is_noent_with_dir_attributes(c: Caller) -> None:
    res = c.lookup(c.root(), b"nope")
    assert res.status == nfs3.NFS3ERR_NOENT
    assert res.resfail.dir_attributes.attributes_follow


def test_lookup_in_a_file_is_notdir(c: Caller) -> None:
    res = c.lookup(c.walk("vm", "disk.vmdk"), b"x")
    assert res.status == nfs3.NFS3ERR_NOTDIR


def test_lookup_dot_and_dotdot(c: Caller) -> None:
    vm = c.walk("vm")
    assert c.lookup(vm, b".").resok.object == vm
    assert c.lookup(vm, b"..").resok.object == c.root()


def test_lookup_name_too_long(c: Caller) -> None:
    # 255 is the limit; the XDR layer refuses longer names as garbage, so the
    # longest name that decodes is answered with NOENT here.
    assert c.lookup(c.root(), b"a" * 255).status == nfs3.NFS3ERR_NOENT


@settings(max_examples=60, deadline=None)
@given(offset=st.integers(0, len(DATA) + 10), count=st.integers(0, 2 * 1024 * 1024))
def test_read_returns_exactly_the_bytes_and_never_more_than_count(
    ns: FakeNamespace, offset: int, count: int
) -> None:
    c = Caller(ns)
    fh = c.walk("vm", "disk-flat.vmdk")
    res = c.read(fh, offset, count)
    assert res.status == nfs3.NFS3_OK
    expected = DATA[offset : offset + min(count, 1024 * 1024)]
    assert res.resok.data == expected
    assert res.resok.count == len(expected)
    assert res.resok.eof == (offset + len(expected) >= len(DATA))
    assert c.released == 1


def test_read_of_a_directory_is_isdir(c: Caller) -> None:
    assert c.read(c.walk("vm"), 0, 10).status == nfs3.NFS3ERR_ISDIR


def test_read_of_an_empty_file_is_eof(c: Caller) -> None:
    res = c.read(c.walk("empty"), 0, 100)
    assert (res.status, res.resok.count, res.resok.eof, res.resok.data) == (
        nfs3.NFS3_OK,
        0,
        True,
        b"",
    )


def test_read_over_udp_is_capped_to_a_datagram(ns: FakeNamespace) -> None:
    c = Caller(ns, transport="udp")
    res = c.read(c.walk("vm", "disk-flat.vmdk"), 0, 1024 * 1024)
    assert len(res.resok.data) <= 32 * 1024


def test_tampered_handle_is_badhandle(c: Caller) -> None:
    fh = c.walk("vm", "disk.vmdk")
    for i in range(len(fh.data)):
        bad = bytearray(fh.data)
        bad[i] ^= 0x01
        assert c.getattr(nfs3.nfs_fh3(bytes(bad))).status == nfs3.NFS3ERR_BADHANDLE
    assert c.getattr(nfs3.nfs_fh3(b"")).status == nfs3.NFS3ERR_BADHANDLE
    assert c.getattr(nfs3.nfs_fh3(fh.data[:-1])).status == nfs3.NFS3ERR_BADHANDLE


def test_handle_from_another_secret_is_badhandle(ns: FakeNamespace) -> None:
    fh = Caller(ns, secret=b"a" * 32).walk("vm")
    assert Caller(ns, secret=b"b" * 32).getattr(fh).status == nfs3.NFS3ERR_BADHANDLE


def test_handles_survive_a_restart_with_the_same_secret(ns: FakeNamespace) -> None:
    fh = Caller(ns).walk("vm", "disk-flat.vmdk")
    fresh = Caller(ns)  # a new server process: empty caches
    res = fresh.getattr(fh)
    assert res.status == nfs3.NFS3_OK
    assert res.resok.obj_attributes.size == len(DATA)


def test_handle_of_a_removed_file_is_stale() -> None:
    n = FakeNamespace({("a",): b"x", ("b",): b"y"})
    fh = Caller(n).walk("a")
    del n.tree[("a",)]
    c = Caller(n)
    assert c.getattr(fh).status == nfs3.NFS3ERR_STALE
    assert c.read(fh, 0, 1).status == nfs3.NFS3ERR_STALE
    n.close()
