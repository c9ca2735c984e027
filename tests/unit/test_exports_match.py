"""Which client spec admits an address: each client form, normalization, precedence, look-ups."""

from __future__ import annotations

import pytest

from exports import ExportsError, ExportTable, parse


class FakeLookups:
    """Name tables in memory; every question asked is recorded."""

    def __init__(
        self,
        forward: dict[str, set[str]] | None = None,
        reverse: dict[str, set[str]] | None = None,
    ) -> None:
        self.forward = forward or {}
        self.reverse = reverse or {}
        self.asked: list[tuple[str, str]] = []

    def addresses(self, name: str, wait: float = 0.0) -> set[str] | None:
        self.asked.append(("addresses", name))
        return self.forward.get(name)

    def names(self, addr: str, wait: float = 0.0) -> set[str] | None:
        self.asked.append(("names", addr))
        return self.reverse.get(addr)


NO_NAMES = FakeLookups()


def admitted(table: ExportTable, addr: str, lookups: FakeLookups = NO_NAMES) -> str | None:
    spec = table.match("/e", addr, lookups)
    return None if spec is None else spec.text


def kind_of(client: str) -> str:
    return parse(f"/e {client}").exports[0].clients[0].kind


# -- forms -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client", "kind"),
    [
        ("backup1.example", "host"),
        ("Backup1.Example.", "host"),
        ("localhost", "host"),
        ("my_host", "host"),
        ("10.1.2.3", "host"),
        ("fd00::1", "host"),
        ("[fd00::1]", "host"),
        ("::ffff:10.1.2.3", "host"),
        ("10.0.0.0/8", "network"),
        ("10.0.0.0/255.0.0.0", "network"),
        ("fd00::/64", "network"),
        ("[fd00::]/64", "network"),
        ("*.backup.example", "wildcard"),
        ("web?.example", "wildcard"),
        ("db[12].example", "wildcard"),
        ("db[!3].example", "wildcard"),
        ("*", "anyone"),
    ],
)
def test_client_kinds(client: str, kind: str) -> None:
    assert kind_of(client) == kind


@pytest.mark.parametrize(
    "client",
    [
        "10.1.2",
        "1.2.3.4.5",
        "10.0.0.0/33",
        "10.0.0.0/255.0.255.0",
        "10.0.0.0/",
        "/8",
        "fd00::/129",
        "fd00::/ffff::",
        "10.0.0.0/x",
        "host!name",
        "h,o",
        "a..b",
        "db[.example",
        "db[].example",
        "db[a.b]x",
        "db[z-a].example",
        "a]b*",
        "a*b!",
        "é.example",
    ],
)
def test_clients_that_are_none_of_the_forms(client: str) -> None:
    with pytest.raises(ExportsError) as info:
        parse(f"\n/e {client}(ro)", "f")
    assert str(info.value).startswith(f"f:2: {client}: ")


def test_one_address() -> None:
    table = parse("/e 10.1.2.3 fd00::1")
    assert admitted(table, "10.1.2.3") == "10.1.2.3"
    assert admitted(table, "10.1.2.4") is None
    assert admitted(table, "fd00:0:0::1") == "fd00::1"
    assert admitted(table, "fd00::2") is None


def test_v4_mapped_client_addresses_are_ipv4() -> None:
    table = parse("/e 10.1.2.3 192.168.0.0/16")
    assert admitted(table, "::ffff:10.1.2.3") == "10.1.2.3"
    assert admitted(table, "::ffff:192.168.7.7") == "192.168.0.0/16"
    assert admitted(table, "::ffff:10.1.2.4") is None


def test_v4_mapped_spec_addresses_are_ipv4() -> None:
    table = parse("/e ::ffff:10.1.2.3 ::ffff:192.168.0.0/112")
    assert admitted(table, "10.1.2.3") == "::ffff:10.1.2.3"
    assert admitted(table, "192.168.3.4") == "::ffff:192.168.0.0/112"
    assert admitted(table, "192.169.0.1") is None


def test_scope_ids_and_brackets_are_dropped() -> None:
    table = parse("/e fe80::1 [fd00::]/64")
    assert admitted(table, "fe80::1%eth0") == "fe80::1"
    assert admitted(table, "[fd00::9]") == "[fd00::]/64"


@pytest.mark.parametrize("client", ["10.0.0.0/8", "10.0.0.0/255.0.0.0", "10.9.9.9/8"])
def test_ipv4_networks(client: str) -> None:
    table = parse(f"/e {client}")
    assert admitted(table, "10.200.1.1") == client
    assert admitted(table, "11.0.0.1") is None
    assert admitted(table, "::ffff:10.0.0.1") == client
    assert admitted(table, "::a00:1") is None  # an IPv6 address is not in an IPv4 network


@pytest.mark.parametrize("client", ["fd00::/64", "[fd00::]/64"])
def test_ipv6_networks(client: str) -> None:
    table = parse(f"/e {client}")
    assert admitted(table, "fd00::1234") == client
    assert admitted(table, "fd00:0:0:1::1") is None
    assert admitted(table, "10.0.0.1") is None


def test_anyone() -> None:
    table = parse("/e *")
    assert admitted(table, "203.0.113.9") == "*"
    assert admitted(table, "2001:db8::1") == "*"


def test_host_name_matches_any_of_its_addresses() -> None:
    table = parse("/e Backup1.Example.")
    lookups = FakeLookups(forward={"backup1.example": {"10.0.0.5", "fd00::5"}})
    assert admitted(table, "10.0.0.5", lookups) == "Backup1.Example."
    assert admitted(table, "::ffff:10.0.0.5", lookups) == "Backup1.Example."
    assert admitted(table, "fd00::5", lookups) == "Backup1.Example."
    assert admitted(table, "10.0.0.6", lookups) is None
    assert admitted(table, "10.0.0.5", FakeLookups()) is None  # not resolved (yet)


def test_wildcard_matches_forward_confirmed_names() -> None:
    table = parse("/e *.backup.example")
    lookups = FakeLookups(
        forward={"a.backup.example": {"10.0.0.1"}},
        reverse={"10.0.0.1": {"A.Backup.Example."}, "10.0.0.2": {"a.backup.example"}},
    )
    assert admitted(table, "10.0.0.1", lookups) == "*.backup.example"
    # 10.0.0.2's PTR claims a name whose addresses do not include it: spoofed.
    assert admitted(table, "10.0.0.2", lookups) is None
    assert admitted(table, "10.0.0.3", lookups) is None  # no name at all


def test_wildcard_matches_names_never_addresses() -> None:
    table = parse("/e 10.0.0.*")
    lookups = FakeLookups(reverse={"10.0.0.1": {"x.example"}})
    assert admitted(table, "10.0.0.1", lookups) is None


def test_wildcard_any_of_several_names() -> None:
    table = parse("/e *.b.example")
    lookups = FakeLookups(
        forward={"x.a.example": {"10.0.0.1"}, "x.b.example": {"10.0.0.1"}},
        reverse={"10.0.0.1": {"x.a.example", "x.b.example"}},
    )
    assert admitted(table, "10.0.0.1", lookups) == "*.b.example"


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("*.example", "a.example", True),
        ("*.example", "a.b.example", False),  # exports(5): wildcards do not match dots
        ("*.example", ".example", True),
        ("*", "a", True),
        ("web?.example", "web1.example", True),
        ("web?.example", "web12.example", False),
        ("web?.example", "web.example", False),
        ("db[12].example", "db2.example", True),
        ("db[12].example", "db3.example", False),
        ("db[!12].example", "db3.example", True),
        ("db[^12].example", "db1.example", False),
        ("db[a-c]*", "dbb-7", True),
        ("DB*.Example", "db9.example", True),
        ("a-*.example", "a-b.example", True),
        ("a_*", "a_b", True),
    ],
)
def test_wildcard_patterns(pattern: str, name: str, matches: bool) -> None:
    table = parse(f"/e {pattern}" if pattern != "*" else "/e a*")
    if pattern == "*":
        pattern = "a*"
    lookups = FakeLookups(forward={name: {"10.0.0.1"}}, reverse={"10.0.0.1": {name}})
    assert (admitted(table, "10.0.0.1", lookups) == pattern) is matches


# -- precedence -----------------------------------------------------------------


def test_precedence_by_kind_whatever_the_line_order() -> None:
    table = parse(
        "/e *(all_squash) *.example(anonuid=3) 10.0.0.0/8(anonuid=2) h.example(anonuid=1)"
        " 10.0.0.9(anonuid=4)"
    )
    lookups = FakeLookups(
        forward={"h.example": {"10.0.0.1"}, "w.example": {"10.1.0.1", "192.168.0.1"}},
        reverse={"10.1.0.1": {"w.example"}, "192.168.0.1": {"w.example"}},
    )
    assert admitted(table, "10.0.0.1", lookups) == "h.example"  # host beats network
    assert admitted(table, "10.0.0.9", lookups) == "10.0.0.9"
    assert admitted(table, "10.1.0.1", lookups) == "10.0.0.0/8"  # network beats wildcard
    assert admitted(table, "192.168.0.1", lookups) == "*.example"  # wildcard beats anyone
    assert admitted(table, "172.16.0.1", lookups) == "*"


def test_line_order_within_a_kind() -> None:
    table = parse("/e 10.0.0.0/8(anonuid=1) 10.1.0.0/16(anonuid=2)\n/e 10.1.2.0/24(anonuid=3)")
    spec = table.match("/e", "10.1.2.3", NO_NAMES)
    assert spec is not None and spec.options.anonuid == 1
    later_first = parse("/e 10.1.0.0/16(anonuid=2) 10.0.0.0/8(anonuid=1)")
    spec = later_first.match("/e", "10.1.2.3", NO_NAMES)
    assert spec is not None and spec.options.anonuid == 2


def test_names_and_addresses_share_the_host_kind_in_line_order() -> None:
    lookups = FakeLookups(forward={"h.example": {"10.0.0.1"}})
    name_first = parse("/e h.example(anonuid=1) 10.0.0.1(anonuid=2)")
    spec = name_first.match("/e", "10.0.0.1", lookups)
    assert spec is not None and spec.options.anonuid == 1
    address_first = parse("/e 10.0.0.1(anonuid=2) h.example(anonuid=1)")
    spec = address_first.match("/e", "10.0.0.1", lookups)
    assert spec is not None and spec.options.anonuid == 2


def test_unresolved_name_falls_through_to_lower_precedence() -> None:
    table = parse("/e h.example(anonuid=1) *(anonuid=9)")
    spec = table.match("/e", "10.0.0.1", FakeLookups())
    assert spec is not None and spec.options.anonuid == 9


# -- no look-up unless a spec of higher precedence needs one ------------------------


def test_no_look_up_for_a_client_an_address_spec_admits() -> None:
    table = parse("/e *.example 10.0.0.0/8 10.1.2.3 * h.example")
    lookups = FakeLookups()
    assert admitted(table, "10.1.2.3", lookups) == "10.1.2.3"
    assert lookups.asked == []


def test_no_look_up_when_only_addresses_networks_and_anyone() -> None:
    table = parse("/e 10.0.0.0/8 fd00::/64 192.168.1.1 *")
    lookups = FakeLookups()
    for addr in ("10.1.1.1", "fd00::1", "192.168.1.1", "203.0.113.1", "::ffff:1.2.3.4"):
        assert admitted(table, addr, lookups) is not None
    assert lookups.asked == []


def test_look_ups_only_for_specs_of_higher_precedence() -> None:
    table = parse("/e *.example 10.0.0.0/8 h.example")
    lookups = FakeLookups()
    assert admitted(table, "10.1.1.1", lookups) == "10.0.0.0/8"
    assert lookups.asked == [("addresses", "h.example")]  # the host name, not the wildcard


# -- paths and addresses asked ----------------------------------------------------


def test_match_of_a_path_not_exported_or_spelt_otherwise() -> None:
    table = parse("/e *")
    assert table.match("/other", "10.0.0.1", NO_NAMES) is None
    assert table.match("/e/", "10.0.0.1", NO_NAMES) is not None
    assert table.match("e", "10.0.0.1", NO_NAMES) is None


@pytest.mark.parametrize("addr", ["", "x", "10.0.0", "10.0.0.1:5", "[10.0.0.1"])
def test_match_of_something_not_an_address_admits_nothing(addr: str) -> None:
    assert parse("/e *").match("/e", addr, NO_NAMES) is None


def test_the_returned_spec_carries_its_options_and_source() -> None:
    table = parse("# c\n/e -insecure 10.0.0.0/8(all_squash)", "/etc/x")
    spec = table.match("/e", "10.0.0.1", NO_NAMES)
    assert spec is not None
    assert (spec.kind, spec.source, spec.options.secure, spec.options.squash) == (
        "network",
        "/etc/x:2",
        False,
        "all",
    )
