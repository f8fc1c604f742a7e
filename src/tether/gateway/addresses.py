"""Relays as the addresses their names resolve to: a team adds a relay by giving a name one more
address, without enrolling its sites again or changing its users' vias. Each distinct address
is a relay of its own to an agent (a link) and to a client (a signer to ask in turn).

Connecting by address is as safe as by name: tether's ssh checks a relay's host certificate
under the name it carries (HostKeyAlias tether-relay), never under the address.

The lookups run in the event loop's thread pool (getaddrinfo blocks): never in the loop.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from tether.errors import UsageError, describe
from tether.spec import Endpoint
from tether.values import parse_host

#: The addresses of (host, port), in the order to try them; OSError if it does not resolve.
Resolver = Callable[[str, int], Awaitable[list[str]]]
#: The most addresses kept, whatever the names resolve to: each is an ssh process of an agent's,
#: or a login a client may try before it gives up.
MAX_ADDRESSES = 16


async def system_resolver(host: str, port: int) -> list[str]:
    """getaddrinfo's addresses for ``host`` (in the order it prefers), off the event loop."""
    found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(sockaddr[0]) for *_, sockaddr in found]


@dataclass(frozen=True)
class RelayAddress:
    """One address of a relay as named: ``named`` (a name or an address, and its port), and
    ``address``, where to connect."""

    named: Endpoint
    address: Endpoint

    def __str__(self) -> str:
        if self.named.host == self.address.host:
            return str(self.address)
        return f"{self.named} ({self.address.host})"


@dataclass
class Resolved:
    """What a round of lookups found: every distinct address in order, and why each name that
    did not resolve did not (the resolver's words)."""

    addresses: list[RelayAddress] = field(default_factory=list)
    failures: dict[Endpoint, str] = field(default_factory=dict)


async def resolve(named: Sequence[Endpoint], resolver: Resolver = system_resolver) -> Resolved:
    """The addresses of every relay in ``named``, looked up at once: in the order named, then in
    each name's own order, each address once (two names may share one), at most
    MAX_ADDRESSES."""
    answers = await asyncio.gather(*(_lookup(relay, resolver) for relay in named))
    resolved = Resolved()
    seen: set[Endpoint] = set()
    for relay, (addresses, failure) in zip(named, answers, strict=True):
        if failure is not None:
            resolved.failures[relay] = failure
            continue
        for host in addresses:
            address = Endpoint(host, relay.port)
            if address not in seen and len(seen) < MAX_ADDRESSES:
                seen.add(address)
                resolved.addresses.append(RelayAddress(relay, address))
    return resolved


async def _lookup(relay: Endpoint, resolver: Resolver) -> tuple[list[str], str | None]:
    """The addresses of one relay, or why there are none. Each is checked as an address is
    where a user names one: it goes to ssh's command line and config."""
    try:
        found = await resolver(relay.host, relay.port)
    except (OSError, UnicodeError) as exc:
        return [], describe(exc)
    addresses = []
    for host in found:
        try:
            addresses.append(parse_host(host, what="address"))
        except UsageError:
            continue  # not an address: no resolver of ours says that
    if not addresses:
        return [], "no address"
    return addresses, None
