"""The SOCKS5 protocol module: greetings and requests parsed from bytes, replies encoded."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.socks import (
    FAILURE_REPLIES,
    MAX_GREETING,
    MAX_REQUEST,
    METHOD_ACCEPTED,
    Need,
    Reply,
    Request,
    SocksError,
    encode_request,
    parse_greeting,
    parse_request,
    reply,
)


def test_a_greeting_offering_no_authentication_is_accepted() -> None:
    assert parse_greeting(b"\x05\x01\x00") is None
    assert parse_greeting(b"\x05\x03\x02\x01\x00") is None
    assert METHOD_ACCEPTED == b"\x05\x00"


@pytest.mark.parametrize(
    ("data", "more"), [(b"", 2), (b"\x05", 1), (b"\x05\x02", 2), (b"\x05\x02\x02", 1)]
)
def test_an_incomplete_greeting_asks_for_exactly_what_is_missing(data: bytes, more: int) -> None:
    assert parse_greeting(data) == Need(more)


def test_a_greeting_without_the_no_authentication_method_gets_ff() -> None:
    with pytest.raises(SocksError) as caught:
        parse_greeting(b"\x05\x02\x01\x02")
    assert caught.value.answer == b"\x05\xff"
    with pytest.raises(SocksError) as caught:
        parse_greeting(b"\x05\x00")  # no methods at all
    assert caught.value.answer == b"\x05\xff"


@pytest.mark.parametrize("first", [b"\x04\x01\x00\x50", b"GET / HTTP/1.1\r\n", b"\x16\x03\x01"])
def test_other_protocols_are_closed_without_a_reply(first: bytes) -> None:
    with pytest.raises(SocksError) as caught:
        parse_greeting(first)
    assert caught.value.answer is None


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x05\x01\x00\x01\x7f\x00\x00\x01\x1f\x90", Request("127.0.0.1", 8080, False)),
        (
            b"\x05\x01\x00\x04" + bytes(15) + b"\x01\x00\x16",
            Request("::1", 22, False),
        ),
        (b"\x05\x01\x00\x03\x09localhost\x00\x50", Request("localhost", 80, True)),
        # An address sent as a name is an address (the allowlist matches it as one).
        (b"\x05\x01\x00\x03\x0810.1.2.3\x01\xbb", Request("10.1.2.3", 443, False)),
        # An IPv4-mapped IPv6 address is the IPv4 address.
        (
            b"\x05\x01\x00\x04" + bytes(10) + b"\xff\xff\x0a\x00\x00\x01\x00\x50",
            Request("10.0.0.1", 80, False),
        ),
    ],
)
def test_connect_requests(data: bytes, expected: Request) -> None:
    assert parse_request(data) == expected


def test_an_incomplete_request_asks_for_exactly_what_is_missing() -> None:
    whole = b"\x05\x01\x00\x03\x09localhost\x00\x50"
    assert parse_request(whole[:2]) == Need(2)
    assert parse_request(whole[:4]) == Need(1)  # the name's length
    assert parse_request(whole[:5]) == Need(9 + 2)
    assert parse_request(whole[:-1]) == Need(1)
    ipv4 = b"\x05\x01\x00\x01\x7f\x00\x00\x01\x1f\x90"
    assert parse_request(ipv4[:6]) == Need(4)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\x05\x02\x00\x01\x7f\x00\x00\x01\x1f\x90", Reply.COMMAND_NOT_SUPPORTED),  # BIND
        (b"\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00", Reply.COMMAND_NOT_SUPPORTED),  # UDP
        (b"\x05\x09\x00\x01\x00\x00\x00\x00\x00\x00", Reply.COMMAND_NOT_SUPPORTED),
        (b"\x05\x01\x00\x05\x00\x00", Reply.ADDRESS_TYPE_NOT_SUPPORTED),
        (b"\x04\x01\x00\x01\x00\x00\x00\x00\x00\x00", Reply.GENERAL_FAILURE),
        (b"\x05\x01\x01\x01\x00\x00\x00\x00\x00\x00", Reply.GENERAL_FAILURE),  # reserved byte
        (b"\x05\x01\x00\x03\x00\x00\x50", Reply.HOST_UNREACHABLE),  # an empty name
        (b"\x05\x01\x00\x03\x03a\x00b\x00\x50", Reply.HOST_UNREACHABLE),  # a NUL in it
        (b"\x05\x01\x00\x03\x03a b\x00\x50", Reply.HOST_UNREACHABLE),
        (b"\x05\x01\x00\x03\x04\xc3\xa9.x\x00\x50", Reply.HOST_UNREACHABLE),  # not ASCII
        (b"\x05\x01\x00\x03\x05[::1]\x00\x50", Reply.HOST_UNREACHABLE),
        (b"\x05\x01\x00\x03\x0afe80::1%lo\x00\x50", Reply.HOST_UNREACHABLE),
    ],
)
def test_refused_requests_get_their_reply(data: bytes, code: Reply) -> None:
    with pytest.raises(SocksError) as caught:
        parse_request(data)
    assert caught.value.answer == reply(code)


def test_a_name_too_long_for_dns_is_refused() -> None:
    name = b".".join([b"a" * 63] * 4)  # 255 characters: one byte holds it, DNS does not
    with pytest.raises(SocksError) as caught:
        parse_request(b"\x05\x01\x00\x03" + bytes((len(name),)) + name + b"\x00\x50")
    assert caught.value.answer == reply(Reply.HOST_UNREACHABLE)


def test_replies() -> None:
    assert reply(Reply.SUCCEEDED) == b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    assert reply(Reply.NOT_ALLOWED)[1] == 0x02
    assert FAILURE_REPLIES == {
        "refused": Reply.CONNECTION_REFUSED,
        "unreachable": Reply.HOST_UNREACHABLE,
        "prohibited": Reply.NOT_ALLOWED,
        "other": Reply.GENERAL_FAILURE,
    }


names = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z]{1,10}){0,3}", fullmatch=True)
addresses = st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str))


@given(host=st.one_of(names, addresses), port=st.integers(0, 65535))
def test_requests_round_trip(host: str, port: int) -> None:
    parsed = parse_request(encode_request(host, port))
    assert isinstance(parsed, Request)
    assert parsed.port == port
    if parsed.is_name:
        assert parsed.host == host
    else:  # the canonical text of the same address
        address = ipaddress.ip_address(host)
        mapped = getattr(address, "ipv4_mapped", None)
        assert ipaddress.ip_address(parsed.host) == (mapped or address)


@given(data=st.binary(max_size=MAX_REQUEST + 8))
def test_any_bytes_parse_or_fail_cleanly(data: bytes) -> None:
    """Whatever a client sends: a message, a need for more (never for nothing, never beyond the
    largest message), or a SocksError; nothing else is raised."""
    for parse, largest in ((parse_greeting, MAX_GREETING), (parse_request, MAX_REQUEST)):
        try:
            parsed = parse(data)
        except SocksError as exc:
            assert exc.answer is None or exc.answer[0] == 5
            continue
        if isinstance(parsed, Need):
            assert 1 <= parsed.more and len(data) + parsed.more <= largest


@given(host=names, port=st.integers(0, 65535))
def test_a_request_read_as_asked_is_never_overread(host: str, port: int) -> None:
    """Reading exactly what Need asks for ends exactly at the request's end: what follows is
    the target's."""
    stream = encode_request(host, port) + b"TARGET BYTES"
    taken = b""
    while isinstance(parsed := parse_request(taken), Need):
        taken += stream[len(taken) : len(taken) + parsed.more]
    assert stream[len(taken) :] == b"TARGET BYTES"
    assert parsed == Request(host, port, True)
    assert struct.unpack(">H", taken[-2:]) == (port,)
