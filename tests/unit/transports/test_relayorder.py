"""The order a gateway tunnel asks its relays in (relayorder.py): as named, each address of a
name a relay of its own, and one that failed at the end."""

from __future__ import annotations

import socket

from tether.spec import Endpoint, Via
from tether.transports.relayorder import Candidate, RelayOrder


async def names(host: str, port: int) -> list[str]:
    if host == "relays.example":
        return ["10.0.0.1", "10.0.0.2"]
    if host == "gone.example":
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return [host]


def shown(candidates: list[Candidate]) -> list[str]:
    return [c.label for c in candidates]


async def test_the_relays_as_named_each_address_a_relay() -> None:
    order = RelayOrder(Via.parse("gw://ops@relays.example:2222,10.0.0.9,gone.example"), names)
    # Before any lookup: the relays as named.
    assert [c.address for c in order.ordered()] == [
        Endpoint("relays.example", 2222),
        Endpoint("10.0.0.9", 22),
        Endpoint("gone.example", 22),
    ]
    relays = await order.refresh()
    assert shown(relays) == [
        "gw://ops@relays.example:2222 (10.0.0.1)",
        "gw://ops@relays.example:2222 (10.0.0.2)",
        "gw://ops@10.0.0.9",
        "gw://ops@gone.example",
    ]
    assert [c.unresolved for c in relays][-2:] == [
        None,
        "cannot resolve relay gw://ops@gone.example: Name or service not known",
    ]


async def test_a_relay_that_failed_goes_to_the_end_and_stays_there() -> None:
    order = RelayOrder(Via.parse("gw://a.example,b.example,c.example"), names)
    a, b, c = await order.refresh()
    order.failed(a)
    assert order.ordered() == [b, c, a]
    order.failed(b)
    assert order.ordered() == [c, a, b]  # the one that failed longest ago first
    assert await order.refresh() == [c, a, b]  # a new lookup keeps what it knows
    order.failed(a)
    assert order.ordered() == [c, b, a]
