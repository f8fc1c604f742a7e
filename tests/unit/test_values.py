"""The text forms of single values: every bad one is a UsageError, never a crash."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.errors import UsageError
from tether.spec import Endpoint
from tether.paths import SSH_CONFIG_ENV, ssh_config
from tether.values import (
    MAX_LABEL,
    label,
    parse_duration,
    parse_host,
    parse_int,
    parse_port,
    path,
    paths,
)


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


@pytest.mark.parametrize(
    "host", ["fe80::1%eth0", "fe80::1%2", "fe80::1%en0.100", "fe80::1%wlp0s20f3_x"]
)
def test_a_zone_names_an_interface(host: str) -> None:
    assert parse_host(host) == host
    assert parse_host(f"[{host}]") == host


@pytest.mark.parametrize(
    "zone",
    [
        "x\n[Service]\nExecStartPre=+touch pwned\n[Unit]\nX=x",
        "eth0\nx",
        "eth[0",
        "a=b",
        "+eth0",
        "eth0\x1b[2J",
        "eth 0",
        "eth0%1",
        "e/0",
        "",
        "a" * 16,
    ],
    ids=repr,
)
def test_a_zone_that_is_no_interface_is_refused(zone: str) -> None:
    with pytest.raises(UsageError, match="not a valid host name or address") as caught:
        parse_host(f"fe80::1%{zone}")
    assert "\n" not in caught.value.message and "\x1b" not in caught.value.message


def test_a_zone_is_for_ipv6_only() -> None:
    with pytest.raises(UsageError):
        parse_host("10.0.0.1%eth0")


@pytest.mark.parametrize(
    "host", ["-oProxyCommand", "-x.example", "db\u200b.example", "db\u202e.x", "db\n.example"]
)
def test_hosts_ssh_would_read_as_options_or_that_hide_characters(host: str) -> None:
    with pytest.raises(UsageError, match="not a valid host name or address"):
        parse_host(host)


@pytest.mark.parametrize("name", ["db", "prod db (eu)", "dév", "x" * MAX_LABEL])
def test_printable_names(name: str) -> None:
    assert label(name) == name


@pytest.mark.parametrize(
    "name", ["\x1b[2J", "a\nb", "a\rb", "a\x7f", "a\x9bb", "a\u2028b", "a\u202eb", "x" * 201, 5]
)
def test_names_that_would_not_print_as_themselves_are_refused(name: object) -> None:
    with pytest.raises(UsageError, match="name: ") as caught:
        label(name)
    assert caught.value.message.isprintable()


def test_a_relative_path_is_made_absolute_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert path("ssh/config") == str(tmp_path / "ssh" / "config")
    assert paths(["a", "/b"]) == (str(tmp_path / "a"), "/b")
    assert path("~/x") == str(Path.home() / "x")
    monkeypatch.setenv(SSH_CONFIG_ENV, "rel_config")
    assert ssh_config() == str(tmp_path / "rel_config")
    monkeypatch.delenv(SSH_CONFIG_ENV)
    assert ssh_config() == "~/.ssh/config"  # ssh finds it in the passwd home


def test_a_path_with_a_nul_is_refused() -> None:
    with pytest.raises(UsageError, match="expected a path"):
        path("a\0b")


@pytest.mark.parametrize("name", ["a\nb", "a\rb", "kh\x1b[2J", "a\x7f", "a\u2028b"], ids=repr)
def test_a_path_with_a_control_character_is_refused(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(UsageError, match="no control characters") as caught:
        path(name)
    assert caught.value.message.isprintable()
    monkeypatch.setenv(SSH_CONFIG_ENV, name)
    with pytest.raises(UsageError, match=r"^\$TETHER_SSH_CONFIG: ") as caught:
        ssh_config()
    assert caught.value.message.isprintable()
