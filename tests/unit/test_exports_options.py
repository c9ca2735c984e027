"""Export options: each one, conflicts (the last wins), refusals, describe() and its round trip."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exports import ExportOptions, ExportsError, parse
from exports.options import IGNORED, parse_options

DEFAULT = ExportOptions()


def opts(text: str, *, allow_rw: bool = False) -> ExportOptions:
    return parse_options(text, DEFAULT, "f:1", allow_rw=allow_rw)


def refused(text: str) -> str:
    with pytest.raises(ExportsError) as info:
        parse(f"/e a({text})", "f")
    return str(info.value)


def test_defaults_are_those_of_exports5() -> None:
    assert opts("") == DEFAULT
    assert DEFAULT.describe() == "ro,secure,root_squash,anonuid=65534,anongid=65534,sec=sys"
    assert DEFAULT.flavors() == (1,)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ro", DEFAULT),
        ("insecure", ExportOptions(secure=False)),
        ("insecure,secure", DEFAULT),
        ("no_root_squash", ExportOptions(squash="none")),
        ("no_root_squash,root_squash", DEFAULT),
        ("all_squash", ExportOptions(squash="all")),
        ("all_squash,no_all_squash", DEFAULT),
        ("no_root_squash,all_squash,no_all_squash", ExportOptions(squash="none")),
        ("all_squash,no_root_squash", ExportOptions(squash="all")),
        ("all_squash,no_root_squash,no_all_squash", ExportOptions(squash="none")),
        ("anonuid=0,anongid=4294967295", ExportOptions(anonuid=0, anongid=2**32 - 1)),
        ("anonuid=5,anonuid=6", ExportOptions(anonuid=6)),
        ("sec=none:sys", ExportOptions(sec=("none", "sys"))),
        ("sec=sys:none:sys", ExportOptions(sec=("sys", "none"))),
        ("sec=none", ExportOptions(sec=("none",))),
        ("mountpoint", ExportOptions(mountpoint="")),
        ("mp", ExportOptions(mountpoint="")),
        ("mountpoint=/srv/store/", ExportOptions(mountpoint="/srv/store")),
        ("mp=//srv//store", ExportOptions(mountpoint="/srv/store")),
        ("fsid=0", ExportOptions(fsid="0")),
        ("fsid=007", ExportOptions(fsid="7")),
        ("fsid=root", ExportOptions(fsid="root")),
        ("fsid=4294967295", ExportOptions(fsid="4294967295")),
        (
            "fsid=8A0C1C2E-55D5-4E8C-9A4F-1234567890AB",
            ExportOptions(fsid="8a0c1c2e-55d5-4e8c-9a4f-1234567890ab"),
        ),
        (
            "fsid=8a0c1c2e55d54e8c9a4f1234567890ab",
            ExportOptions(fsid="8a0c1c2e-55d5-4e8c-9a4f-1234567890ab"),
        ),
        ("xprtsec=tls:mtls", ExportOptions(xprtsec=("tls", "mtls"))),
        ("xprtsec=none", ExportOptions(xprtsec=("none",))),
        ("xprtsec=none:tls:mtls", DEFAULT),
        ("ro,,secure,", DEFAULT),
    ],
)
def test_each_option(text: str, expected: ExportOptions) -> None:
    assert opts(text) == expected


@pytest.mark.parametrize("name", sorted(IGNORED))
def test_knfsd_options_without_meaning_here_are_accepted_and_change_nothing(name: str) -> None:
    assert opts(name) == DEFAULT
    assert opts(f"insecure,{name},all_squash") == ExportOptions(secure=False, squash="all")


def test_rw_only_when_allowed() -> None:
    assert opts("rw", allow_rw=True) == ExportOptions(ro=False)
    assert opts("rw,ro", allow_rw=True) == DEFAULT
    assert ExportOptions(ro=False).describe().startswith("rw,")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rw", "f:1: rw: this export is read-only"),
        ("bogus", "f:1: bogus: unknown option"),
        ("no_wdelay=1", "f:1: no_wdelay=1: no_wdelay takes no value"),
        ("ro=1", "f:1: ro=1: ro takes no value"),
        ("bogus=1", "f:1: bogus=1: unknown option"),
        ("Ro", "f:1: Ro: unknown option"),
        ("anonuid=", "f:1: anonuid=: anonuid must be an integer from 0 to 4294967295"),
        ("anonuid=-2", "f:1: anonuid=-2: anonuid must be an integer"),
        ("anongid=4294967296", "f:1: anongid=4294967296: anongid must be an integer"),
        ("anonuid=١", "f:1: anonuid=١: anonuid must be an integer"),
        ("sec=krb5", "f:1: sec=krb5: krb5: Kerberos is not supported"),
        ("sec=sys:krb5p", "f:1: sec=sys:krb5p: krb5p: Kerberos is not supported"),
        ("sec=unix", "f:1: sec=unix: unix: not supported"),
        ("sec=", "f:1: sec=: (empty): not supported"),
        ("sec=sys:", "f:1: sec=sys:: (empty): not supported"),
        ("xprtsec=ssl", "f:1: xprtsec=ssl: ssl: not supported"),
        ("mountpoint=rel", "f:1: mountpoint=rel: mountpoint needs an absolute path"),
        ("mp=", "f:1: mp=: mp needs an absolute path"),
        ("fsid=4294967296", "f:1: fsid=4294967296: fsid must fit in 32 bits"),
        ("fsid=-1", "f:1: fsid=-1: fsid must be an integer, root or a UUID"),
        ("fsid=abc", "f:1: fsid=abc: fsid must be an integer, root or a UUID"),
        ("fsid=", "f:1: fsid=: fsid must be an integer, root or a UUID"),
    ],
)
def test_refused_options_name_file_line_and_option(text: str, message: str) -> None:
    assert refused(text).startswith(message)


def test_flavors_in_the_order_written() -> None:
    assert opts("sec=none:sys").flavors() == (0, 1)
    assert opts("sec=sys:none").flavors() == (1, 0)


def test_describe_lists_what_is_set() -> None:
    o = opts("insecure,all_squash,anonuid=1,anongid=2,mp=/s,fsid=root,sec=none,xprtsec=mtls")
    assert o.describe() == (
        "ro,insecure,all_squash,anonuid=1,anongid=2,mountpoint=/s,fsid=root,sec=none,xprtsec=mtls"
    )
    assert opts("mp").describe().endswith(",mountpoint,sec=sys")


@pytest.mark.parametrize(
    "bad",
    [
        {"squash": "some"},
        {"anonuid": -1},
        {"anongid": 2**32},
        {"sec": ()},
        {"sec": ("krb5",)},
        {"xprtsec": ()},
        {"xprtsec": ("ssl",)},
    ],
)
def test_options_built_in_code_are_checked(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ExportOptions(**bad)  # type: ignore[arg-type]


# -- round trip: describe() is read back as the same options ----------------------

_ITEMS = st.sampled_from(
    [
        "ro",
        "rw",
        "secure",
        "insecure",
        "root_squash",
        "no_root_squash",
        "all_squash",
        "no_all_squash",
        "mountpoint",
        "mp",
        "fsid=root",
        *sorted(IGNORED),
    ]
)
_IDS = st.integers(0, 2**32 - 1)
_VALUED = st.one_of(
    _IDS.map(lambda n: f"anonuid={n}"),
    _IDS.map(lambda n: f"anongid={n}"),
    _IDS.map(lambda n: f"fsid={n}"),
    st.uuids().map(lambda u: f"fsid={u}"),
    st.lists(st.sampled_from(["sys", "none"]), min_size=1, max_size=3).map(
        lambda xs: "sec=" + ":".join(xs)
    ),
    st.lists(st.sampled_from(["none", "tls", "mtls"]), min_size=1, max_size=4).map(
        lambda xs: "xprtsec=" + ":".join(xs)
    ),
    st.from_regex(r"/[a-z0-9._/-]{0,20}", fullmatch=True).map(lambda p: f"mountpoint={p}"),
)
OPTION_LISTS = st.lists(st.one_of(_ITEMS, _VALUED), max_size=12).map(",".join)


@given(OPTION_LISTS)
def test_describe_round_trips(text: str) -> None:
    options = opts(text, allow_rw=True)
    assert opts(options.describe(), allow_rw=True) == options
    # and the same through a whole line, as `exports show` output is read back
    table = parse(f"/e a({options.describe()})", allow_rw=True)
    assert table.exports[0].clients[0].options == options
