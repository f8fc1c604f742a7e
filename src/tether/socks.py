"""SOCKS5 (RFC 1928) as a SOCKS tunnel speaks it: CONNECT without authentication, parsed from
bytes and answered with bytes; no I/O.

The parsers take what has arrived so far and return ``Need(n)`` while a message is incomplete,
``n`` being exactly the bytes still missing that are known to be part of it: a reader that asks
for no more never takes the client's first bytes for the target.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import IntEnum

from tether.allowlist import as_address
from tether.errors import TargetFailure, UsageError
from tether.values import MAX_HOST_NAME, parse_host

VERSION = 5
NO_AUTHENTICATION = 0x00
NO_ACCEPTABLE_METHOD = 0xFF
CONNECT, BIND, UDP_ASSOCIATE = 1, 2, 3
IPV4, DOMAIN, IPV6 = 1, 3, 4
#: The server's choice of method once a greeting offers no authentication.
METHOD_ACCEPTED = bytes((VERSION, NO_AUTHENTICATION))
#: The longest messages: a greeting with 255 methods, a request with a 255-byte name.
MAX_GREETING = 2 + 255
MAX_REQUEST = 4 + 1 + 255 + 2


class Reply(IntEnum):
    """The REP field of a reply."""

    SUCCEEDED = 0x00
    GENERAL_FAILURE = 0x01
    NOT_ALLOWED = 0x02
    NETWORK_UNREACHABLE = 0x03
    HOST_UNREACHABLE = 0x04
    CONNECTION_REFUSED = 0x05
    TTL_EXPIRED = 0x06
    COMMAND_NOT_SUPPORTED = 0x07
    ADDRESS_TYPE_NOT_SUPPORTED = 0x08


#: The reply for each way a transport says a target failed.
FAILURE_REPLIES: dict[TargetFailure, Reply] = {
    "refused": Reply.CONNECTION_REFUSED,
    "unreachable": Reply.HOST_UNREACHABLE,
    "prohibited": Reply.NOT_ALLOWED,
    "other": Reply.GENERAL_FAILURE,
}


def reply(code: Reply) -> bytes:
    """A reply to a request. BND.ADDR and BND.PORT say nothing (0.0.0.0:0): CONNECT clients
    ignore them, and behind an SSH server the address is not known here."""
    return bytes((VERSION, code, 0, IPV4, 0, 0, 0, 0, 0, 0))


class SocksError(Exception):
    """The client broke the protocol or asked for what is not served. ``answer`` is what to
    send before closing, or None to close without a word (it does not speak SOCKS5)."""

    def __init__(self, reason: str, answer: bytes | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.answer = answer


@dataclass(frozen=True)
class Need:
    """An incomplete message: ``more`` bytes (at least 1) are still missing."""

    more: int


@dataclass(frozen=True)
class Request:
    """A CONNECT request: ``host`` is an address in its text form, or a name as the client
    sent it (``is_name``), left for the transport to resolve."""

    host: str
    port: int
    is_name: bool


def parse_greeting(data: bytes) -> Need | None:
    """None once ``data`` is a whole greeting that offers no authentication."""
    if len(data) < 2:
        return Need(2 - len(data))
    if data[0] != VERSION:
        raise SocksError(f"not SOCKS5 (version byte {data[0]})", None)
    size = 2 + data[1]
    if len(data) < size:
        return Need(size - len(data))
    if NO_AUTHENTICATION not in data[2:size]:
        raise SocksError(
            "the client offers no method without authentication",
            bytes((VERSION, NO_ACCEPTABLE_METHOD)),
        )
    return None


def parse_request(data: bytes) -> Need | Request:
    """The CONNECT request in ``data``; SocksError with the reply for anything else."""
    if len(data) < 4:
        return Need(4 - len(data))
    version, command, reserved, kind = data[:4]
    if version != VERSION or reserved != 0:
        raise SocksError("malformed request header", reply(Reply.GENERAL_FAILURE))
    if kind == IPV4:
        size = 4 + 4 + 2
    elif kind == IPV6:
        size = 4 + 16 + 2
    elif kind == DOMAIN:
        if len(data) < 5:
            return Need(1)
        size = 5 + data[4] + 2
    else:
        raise SocksError(f"address type {kind}", reply(Reply.ADDRESS_TYPE_NOT_SUPPORTED))
    if len(data) < size:
        return Need(size - len(data))
    # The whole request is read before it is refused, so that closing never resets the
    # connection over unread bytes and loses the reply.
    if command != CONNECT:
        name = {BIND: "BIND", UDP_ASSOCIATE: "UDP ASSOCIATE"}.get(command, f"command {command}")
        raise SocksError(f"{name} is not supported", reply(Reply.COMMAND_NOT_SUPPORTED))
    (port,) = struct.unpack_from(">H", data, size - 2)
    if kind == IPV4:
        return Request(str(ipaddress.IPv4Address(data[4:8])), port, False)
    if kind == IPV6:
        return _address(str(ipaddress.IPv6Address(data[4:20])), port)
    return _named(data[5 : size - 2], port)


def _named(raw: bytes, port: int) -> Request:
    try:
        name = raw.decode("ascii")
        if not name or len(name) > MAX_HOST_NAME + 1:  # + the root's trailing dot
            raise ValueError("length")
        host = parse_host(name, what="name")
    except (ValueError, UnicodeError, UsageError):
        # Not a name any resolver would look up (nor one an SSH server may be handed).
        raise SocksError("not a valid host name", reply(Reply.HOST_UNREACHABLE)) from None
    if host != name:  # spaces or brackets around it
        raise SocksError("not a valid host name", reply(Reply.HOST_UNREACHABLE))
    if as_address(host) is not None:
        return _address(host, port)  # an address in the name's place, as some clients send it
    return Request(name, port, True)


def _address(text: str, port: int) -> Request:
    address = as_address(text)
    if address is None or (isinstance(address, ipaddress.IPv6Address) and address.scope_id):
        raise SocksError("not a valid address", reply(Reply.HOST_UNREACHABLE))
    return Request(str(address), port, False)


def encode_request(host: str, port: int) -> bytes:
    """A client's CONNECT request for ``host:port``: an address, or a name sent as one."""
    address = as_address(host)
    if isinstance(address, ipaddress.IPv4Address):
        target = bytes((IPV4,)) + address.packed
    elif isinstance(address, ipaddress.IPv6Address):
        target = bytes((IPV6,)) + address.packed
    else:
        name = host.encode("ascii")
        target = bytes((DOMAIN, len(name))) + name
    return bytes((VERSION, CONNECT, 0)) + target + struct.pack(">H", port)
