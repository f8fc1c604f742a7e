"""Parsing of addresses, ports and jump hosts: every bad input is a UsageError, never a crash."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.errors import UsageError
from tether.spec import Endpoint, TunnelSpec, Via, parse_duration, parse_int, parse_port

hostnames = st.from_regex(r"[a-z][a-z0-9\-]{0,20}(\.[a-z][a-z0-9\-]{0,20}){0,3}", fullmatch=True)
ports = st.integers(min_value=1, max_value=65535)


@given(hostnames, ports)
def test_endpoint_round_trips(host: str, port: int) -> None:
    assert Endpoint.parse(str(Endpoint(host, port))) == Endpoint(host, port)


@given(st.integers(min_value=1, max_value=65535))
def test_ipv6_endpoint_round_trips(port: int) -> None:
    assert Endpoint.parse(f"[::1]:{port}") == Endpoint("::1", port)
    assert str(Endpoint("::1", port)) == f"[::1]:{port}"


@given(st.text())
def test_endpoint_parse_never_crashes(text: str) -> None:
    try:
        endpoint = Endpoint.parse(text)
    except UsageError:
        return
    assert 1 <= endpoint.port <= 65535 and endpoint.host


@given(st.integers().filter(lambda n: not 0 <= n <= 65535))
def test_out_of_range_ports_are_refused(port: int) -> None:
    with pytest.raises(UsageError, match="expected an integer 0-65535"):
        parse_port(str(port))


@pytest.mark.parametrize("text", ["", "abc", "12a", "-1", "65536", "1e3", " ", "٣"])
def test_bad_port_text(text: str) -> None:
    with pytest.raises(UsageError):
        parse_port(text)


def test_port_zero_only_where_allowed() -> None:
    assert parse_port("0") == 0
    with pytest.raises(UsageError, match="1-65535"):
        parse_port("0", allow_zero=False)


@pytest.mark.parametrize(
    "text",
    ["db", "db:", ":5432", "db:abc", "db:70000", "a b:1", "[::1]5432", "::1:5432", "db:5432:1"],
)
def test_malformed_endpoints(text: str) -> None:
    with pytest.raises(UsageError):
        Endpoint.parse(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ssh://bastion", Via("ssh", "bastion", 22)),
        ("ssh://me@bastion:2222", Via("ssh", "bastion", 2222, "me")),
        ("SSH://me@10.0.0.1", Via("ssh", "10.0.0.1", 22, "me")),
        ("ssh://[::1]:2200", Via("ssh", "::1", 2200)),
        ("ssh://[::1]", Via("ssh", "::1", 22)),
        ("ssh://u@::1", Via("ssh", "::1", 22, "u")),
    ],
)
def test_via_parses(text: str, expected: Via) -> None:
    assert Via.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bastion", "expected ssh://"),
        ("http://bastion", "unsupported scheme 'http'"),
        ("ssh://me:secret@bastion", "passwords are not accepted"),
        ("ssh://@bastion", "empty user"),
        ("ssh://bastion:99999", "65535"),
        ("ssh://bastion/path", "expected ssh://"),
        ("ssh://", "not a valid host"),
    ],
)
def test_via_refuses(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        Via.parse(text)


def test_via_never_prints_more_than_scheme_user_host() -> None:
    assert str(Via.parse("ssh://me@bastion:2222")) == "ssh://me@bastion:2222"


@given(st.text())
def test_via_parse_never_crashes(text: str) -> None:
    try:
        Via.parse(text)
    except UsageError:
        pass


def test_spec_defaults() -> None:
    spec = TunnelSpec(target=Endpoint("db", 5432))
    assert spec.listen == Endpoint("localhost", 0)  # both loopbacks, as ssh -L binds them
    assert spec.name == "db:5432"
    assert spec.timeout == 30 and spec.probe and spec.via is None


def test_spec_refuses_non_positive_timeout() -> None:
    with pytest.raises(UsageError, match="timeout"):
        TunnelSpec(target=Endpoint("db", 5432), timeout=0)


@pytest.mark.parametrize(
    "host",
    ["a..b", ".", "..", "a.", f"{'a' * 64}.example", "a" * 254, "a b", "a/b", "a\x00b", "\ud800"],
)
def test_host_names_the_resolver_would_choke_on_are_refused(host: str) -> None:
    if host == "a.":  # a fully qualified name: fine
        assert Endpoint.parse(f"{host}:1").host == host
        return
    with pytest.raises(UsageError, match="not a valid host name or address"):
        Endpoint.parse(f"{host}:1")


@pytest.mark.parametrize(
    "host", ["db.internal", "a" * 63 + ".example", "bücher.example", "fe80::1%lo", "10.0.0.1"]
)
def test_valid_host_names_and_addresses(host: str) -> None:
    shown = f"[{host}]:5432" if ":" in host else f"{host}:5432"
    assert Endpoint.parse(shown).host == host


@given(st.text(max_size=300))
def test_any_host_text_is_valid_or_a_usage_error(text: str) -> None:
    try:
        host = Endpoint.parse(f"[{text}]:1" if ":" in text else f"{text}:1").host
    except UsageError:
        return
    # What the resolver will do with it must not raise either.
    if ":" not in host:
        host.encode("idna")


@pytest.mark.parametrize(
    ("user", "expected"),
    [("ops", "ops"), ("ops%40corp", "ops@corp"), ("d%C3%A9v", "dév")],
)
def test_user_names_are_decoded(user: str, expected: str) -> None:
    assert Via.parse(f"ssh://{user}@h").user == expected


@pytest.mark.parametrize("user", ["a%0Ab", "%00", "a%20b", "%ff", "a%3Ab", "x" * 300])
def test_user_names_that_are_not_names_are_refused(user: str) -> None:
    with pytest.raises(UsageError):
        Via.parse(f"ssh://{user}@h")


@pytest.mark.parametrize(
    "text", ["nan", "inf", "-1", "0", "1e10", "366d", "1" * 400, "٣", "5 m s", "1.2.3"]
)
def test_durations_outside_the_range_are_refused(text: str) -> None:
    with pytest.raises(UsageError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e10, 10**400, 0, -5, True])
def test_duration_numbers_from_toml_are_checked(value: float) -> None:
    with pytest.raises(UsageError, match="duration"):
        parse_duration(value)


@pytest.mark.parametrize(
    "text", ["\u00b2", "\uff11\uff12", "\u0663", "1" * 30, "-1", "+1", " ", "0x10"]
)
def test_only_ascii_digits_make_integers(text: str) -> None:
    with pytest.raises(UsageError, match="expected an integer"):
        parse_int(text, what="n", low=0, high=10**20)
