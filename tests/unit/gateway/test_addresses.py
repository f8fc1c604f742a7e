"""Relays as the addresses their names resolve to (addresses.py): in order, each once, a name
that does not resolve said why, and nothing but an address kept."""

from __future__ import annotations

import socket

from tether.gateway.addresses import MAX_ADDRESSES, RelayAddress, resolve, system_resolver
from tether.spec import Endpoint

RELAYS = [Endpoint("relays.example", 2222), Endpoint("10.0.0.9", 22), Endpoint("gone.example", 22)]


async def fake(host: str, port: int) -> list[str]:
    """relays.example has two addresses (one of them twice, as getaddrinfo may say); an
    address is itself; gone.example does not resolve."""
    if host == "relays.example":
        return ["10.0.0.1", "10.0.0.2", "10.0.0.1"]
    if host == "gone.example":
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return [host]


async def test_every_address_in_order_once_and_why_a_name_has_none() -> None:
    found = await resolve(RELAYS, fake)
    assert [a.address for a in found.addresses] == [
        Endpoint("10.0.0.1", 2222),
        Endpoint("10.0.0.2", 2222),
        Endpoint("10.0.0.9", 22),
    ]
    assert [str(a) for a in found.addresses] == [
        "relays.example:2222 (10.0.0.1)",
        "relays.example:2222 (10.0.0.2)",
        "10.0.0.9:22",
    ]
    assert found.failures == {Endpoint("gone.example", 22): "Name or service not known"}


async def test_two_names_of_one_address_make_one_relay() -> None:
    async def shared(host: str, port: int) -> list[str]:
        return ["10.0.0.1"]

    found = await resolve([Endpoint("a.example", 22), Endpoint("b.example", 22)], shared)
    assert found.addresses == [RelayAddress(Endpoint("a.example", 22), Endpoint("10.0.0.1", 22))]


async def test_only_addresses_are_kept_and_only_so_many() -> None:
    async def hostile(host: str, port: int) -> list[str]:
        bad = ["-oProxyCommand=sh", "10.0.0.1\nHost *", "a b", ""]
        return [*bad, *(f"10.0.1.{n}" for n in range(2 * MAX_ADDRESSES))]

    found = await resolve([Endpoint("many.example", 22)], hostile)
    assert len(found.addresses) == MAX_ADDRESSES
    assert found.addresses[0].address == Endpoint("10.0.1.0", 22)

    async def nothing(host: str, port: int) -> list[str]:
        return ["-x"]

    found = await resolve([Endpoint("none.example", 22)], nothing)
    assert found.addresses == []
    assert found.failures == {Endpoint("none.example", 22): "no address"}


async def test_the_system_resolver_answers_an_address_with_itself() -> None:
    assert await system_resolver("127.0.0.1", 22) == ["127.0.0.1"]
