"""The SOCKS allowlist: entries parsed and checked at config time, and what they let through."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tether.allowlist import allows, parse_rule, parse_rules, probe_target
from tether.errors import UsageError


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("db.internal:5432", "db.internal:5432"),
        ("DB.Internal.:5432", "db.internal:5432"),
        ("*.corp.example:443", "*.corp.example:443"),
        ("10.0.0.0/8:*", "10.0.0.0/8:*"),
        ("[fd00::/8]:*", "[fd00::/8]:*"),
        ("[::1]:22", "[::1]:22"),
        ("127.0.0.1:80", "127.0.0.1:80"),
        ("*:443", "*:443"),
        (" * : * ", "*:*"),
        ("[db.internal]:1", "db.internal:1"),
    ],
)
def test_entries_and_their_canonical_form(text: str, canonical: str) -> None:
    assert str(parse_rule(text)) == canonical


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("db.internal", "expected HOST:PORT"),
        ("", "expected HOST:PORT"),
        ("::1:22", "IPv6 address goes in brackets"),
        ("db.internal:0", "expected a port 1-65535 or *"),
        ("db.internal:65536", "expected a port 1-65535 or *"),
        ("db.internal:http", "expected a port 1-65535 or *"),
        ("a*.corp:1", "a wildcard is * or a leading *. only"),
        ("*.*.corp:1", "a wildcard is * or a leading *. only"),
        ("*.10.0.0.1:1", "not an address"),
        ("10.0.0.1/8:*", "not a network"),
        ("10.0.0.0/33:*", "not a network"),
        ("a..b:1", "not a valid host name"),
        ("[::1:22", "expected HOST:PORT"),
    ],
)
def test_bad_entries_are_refused_naming_the_key(text: str, says: str) -> None:
    with pytest.raises(UsageError, match=r"^allow: ") as caught:
        parse_rule(text)
    assert says in caught.value.message


@pytest.mark.parametrize(
    ("host", "port", "allowed"),
    [
        ("db.internal", 5432, True),
        ("DB.internal.", 5432, True),
        ("db.internal", 5433, False),
        ("x.db.internal", 5432, False),
        ("a.corp.example", 443, True),
        ("a.b.corp.example", 443, True),
        ("corp.example", 443, False),  # the pattern is for names under it
        ("evilcorp.example", 443, False),
        ("a.corp.example", 80, False),
        ("10.200.0.7", 22, True),
        ("11.0.0.1", 22, False),
        ("::ffff:10.0.0.1", 1, True),  # IPv4-mapped: the IPv4 address
        ("fd00::1", 1, False),
        ("ten.internal", 22, False),  # a name never matches an address rule
        ("localhost", 5432, False),
    ],
)
def test_matching(host: str, port: int, allowed: bool) -> None:
    rules = parse_rules(["db.internal:5432", "*.corp.example:443", "10.0.0.0/8:*"])
    assert allows(rules, host, port) is allowed


def test_no_rules_allow_everything_and_star_any_host() -> None:
    assert allows((), "anything.example", 1)
    rules = parse_rules("*:443")
    assert allows(rules, "a.example", 443) and allows(rules, "::1", 443)
    assert not allows(rules, "a.example", 80)


def test_the_probe_target_is_one_concrete_entry() -> None:
    assert probe_target(parse_rules(["db.internal:5432"])) == ("db.internal", 5432)
    assert probe_target(parse_rules(["[::1]:22"])) == ("::1", 22)
    assert probe_target(parse_rules(["10.0.0.1/32:22"])) == ("10.0.0.1", 22)
    for many in (["db:1", "db:2"], ["db:*"], ["*.corp:1"], ["10.0.0.0/8:1"], ["*:1"], []):
        assert probe_target(parse_rules(many)) is None, many


@given(address=st.ip_addresses(), bits=st.integers(0, 128), port=st.integers(1, 65535))
def test_a_network_rule_allows_exactly_its_addresses(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, bits: int, port: int
) -> None:
    assume(getattr(address, "ipv4_mapped", None) is None)  # matched as the IPv4 address
    bits = min(bits, address.max_prefixlen)
    network = ipaddress.ip_network(f"{address}/{bits}", strict=False)
    rule = parse_rule(f"[{network}]:{port}" if network.version == 6 else f"{network}:{port}")
    assert allows((rule,), str(address), port)
    assert not allows((rule,), str(address), port % 65535 + 1)
    outside = int(network.network_address) - 1
    if outside >= 0:
        other = (
            ipaddress.ip_address(outside)
            if network.version == 4
            else ipaddress.IPv6Address(outside)
        )
        mapped = isinstance(other, ipaddress.IPv6Address) and other.ipv4_mapped is not None
        if not mapped:
            assert not allows((rule,), str(other), port)


@given(
    labels=st.lists(st.from_regex(r"[a-z0-9]{1,10}", fullmatch=True), min_size=1, max_size=4),
    extra=st.from_regex(r"[a-z0-9]{1,10}", fullmatch=True),
)
def test_a_name_rule_is_exact_and_a_pattern_is_for_names_under_it(
    labels: list[str], extra: str
) -> None:
    name = ".".join([*labels, "example"])
    assert allows(parse_rules(f"{name}:1"), name.upper(), 1)
    assert not allows(parse_rules(f"{name}:1"), f"{extra}.{name}", 1)
    assert not allows(parse_rules(f"{name}:1"), f"{extra}{name}", 1)
    assert allows(parse_rules(f"*.{name}:1"), f"{extra}.{name}", 1)
    assert not allows(parse_rules(f"*.{name}:1"), name, 1)
    assert not allows(parse_rules(f"*.{name}:1"), f"{extra}{name}", 1)
