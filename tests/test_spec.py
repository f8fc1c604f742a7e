"""Parsing of addresses, ports and jump hosts: every bad input is a UsageError, never a crash."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.errors import UsageError
from tether.spec import Endpoint, TunnelSpec, Via, parse_port

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
    assert spec.listen == Endpoint("127.0.0.1", 0)
    assert spec.name == "db:5432"
    assert spec.timeout == 30 and spec.probe and spec.via is None


def test_spec_refuses_non_positive_timeout() -> None:
    with pytest.raises(UsageError, match="timeout"):
        TunnelSpec(target=Endpoint("db", 5432), timeout=0)
