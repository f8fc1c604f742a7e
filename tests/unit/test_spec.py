"""Parsing of addresses, ports and jump hosts: every bad input is a UsageError, never a crash."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.errors import UsageError
from tether.spec import Endpoint, SshOptions, TunnelSpec, Via

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
    ("timeout", "connect_timeout", "bound"), [(30, None, 10), (5, None, 5), (30, 2, 2), (5, 20, 20)]
)
def test_a_reconnect_attempt_is_bounded_by_connect_timeout_else_10s(
    timeout: float, connect_timeout: float | None, bound: float
) -> None:
    options = SshOptions(connect_timeout=connect_timeout)
    spec = TunnelSpec(target=Endpoint("db", 5432), timeout=timeout, ssh=options)
    assert spec.reconnect_timeout == bound


def test_the_hold_is_a_few_seconds_and_never_negative() -> None:
    assert TunnelSpec(target=Endpoint("db", 5432)).hold == 3
    assert TunnelSpec(target=Endpoint("db", 5432), hold=0).hold == 0
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(UsageError, match="hold"):
            TunnelSpec(target=Endpoint("db", 5432), hold=bad)


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
    ("user", "shown"),
    [
        ("a$(id)", "$ ( )"),
        ("a%24%28id%29", "$ ( )"),
        ("a`id`", "`"),
        ("a;b", ";"),
        ("a%7Cb", "|"),
        ("a&b", "&"),
        ("a%3Cb%3E", "< >"),
        ("a%22b", '"'),
        ("a'b", "'"),
        ("a{b}", "{ }"),
    ],
)
def test_user_names_with_shell_metacharacters_are_refused(user: str, shown: str) -> None:
    # The one parse both engines share: OpenSSH's ssh would refuse them (exit 4 before), and
    # asyncssh would offer them to the server (exit 5): a usage error, before anything starts.
    with pytest.raises(UsageError, match="which ssh refuses") as caught:
        Via.parse(f"ssh://{user}@bastion")
    assert f"holds {shown}," in caught.value.message


@pytest.mark.parametrize("user", ["-l", "-oProxyCommand=x", "%2Dl", "a%5C"])
def test_user_names_ssh_would_read_as_options_are_refused(user: str) -> None:
    with pytest.raises(UsageError, match="cannot start with '-' or end with"):
        Via.parse(f"ssh://{user}@bastion")


@pytest.mark.parametrize("user", ["ops", "ops.admin", "o_p-s", "dom%5Cops", "ops%40corp", "dév"])
def test_ordinary_user_names_pass(user: str) -> None:
    assert Via.parse(f"ssh://{user}@bastion").user


@pytest.mark.parametrize("name", ["\x1b[2Jdb", "db\n[x]", "db\u2028x"])
def test_a_spec_name_from_the_python_api_is_printable(name: str) -> None:
    with pytest.raises(UsageError, match="name: holds control or invisible characters"):
        TunnelSpec(target=Endpoint("db", 5432), name=name)


# -- a gateway's targets -----------------------------------------------------------------------
def test_a_gateway_target_is_site_slash_name() -> None:
    target = Endpoint.parse_target("lab/db")
    assert target == Endpoint("lab/db", 0) and target.behind_gateway
    assert str(target) == "lab/db"
    assert Endpoint.parse_target("db.internal:5432") == Endpoint("db.internal", 5432)
    spec = TunnelSpec(target=target, via=Via.parse("gw://ops@relay.example:2222"))
    assert spec.name == "lab/db" and spec.reaches == "lab/db"
    assert str(spec.via) == "gw://ops@relay.example:2222"


@pytest.mark.parametrize(
    "text", ["lab/", "/db", "lab/db/x", "Lab/db", "lab/d b", "lab/db\n[x]", "a/" + "b" * 40]
)
def test_a_malformed_gateway_target_is_refused(text: str) -> None:
    with pytest.raises(UsageError):
        Endpoint.parse_target(text)


def test_gateway_targets_and_gateway_vias_go_together() -> None:
    gw = Via.parse("gw://relay")
    with pytest.raises(UsageError, match="needs via gw://RELAY"):
        TunnelSpec(target=Endpoint("lab/db", 0))
    with pytest.raises(UsageError, match="needs via gw://RELAY"):
        TunnelSpec(target=Endpoint("lab/db", 0), via=Via.parse("ssh://bastion"))
    with pytest.raises(UsageError, match="one SITE/TARGET"):
        TunnelSpec(target=Endpoint("db", 5432), via=gw)
    with pytest.raises(UsageError, match="one SITE/TARGET"):
        TunnelSpec(socks=True, via=gw)
    with pytest.raises(UsageError, match="openssh engine"):
        TunnelSpec(target=Endpoint("lab/db", 0), via=gw, ssh=SshOptions(engine="asyncssh"))


# -- a gateway's several relays ----------------------------------------------------------------
def test_a_gateway_via_names_several_relays_and_prints_as_given() -> None:
    via = Via.parse("gw://ops@relay1.example,relay2.example:2222,[::1]:2200")
    assert (via.host, via.port, via.user) == ("relay1.example", 22, "ops")
    assert [(r.host, r.port, r.user) for r in via.relays] == [
        ("relay1.example", 22, "ops"),
        ("relay2.example", 2222, "ops"),
        ("::1", 2200, "ops"),
    ]
    assert str(via) == "gw://ops@relay1.example,relay2.example:2222,[::1]:2200"
    assert Via.parse(str(via)) == via
    assert [str(r) for r in via.relays][1] == "gw://ops@relay2.example:2222"
    assert Via.parse("gw://relay").relays == (Via.parse("gw://relay"),)
    spec = TunnelSpec(target=Endpoint("lab/db", 0), via=via)
    assert str(spec.via) == str(via)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ssh://a,b", r"only a gateway's via \(gw://\) names several servers"),
        ("gw://a,b,a:22", "relay a:22 named twice"),
        ("gw://a:2,A:2", "relay A:2 named twice"),
        ("gw://a,,b", "an empty server in the list"),
        ("gw://a,", "an empty server in the list"),
        ("gw://a,me@b", "one USER@ for every relay, before the first"),
        ("gw://" + ",".join(f"r{i}" for i in range(9)), "at most 8 relays, got 9"),
        ("gw://a,b\n[Service]", "not a valid host"),
        ("gw://a,-oProxyCommand=sh", "not a valid host"),
    ],
)
def test_a_bad_relay_list_is_refused_in_one_line(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as refused:
        Via.parse(text)
    assert "\n" not in refused.value.message
