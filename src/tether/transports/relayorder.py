"""The order in which a gateway tunnel asks its relays (``gw://R1,R2,...``): every address each
name resolves to, in the order named, and a relay that failed moved to the end, so that the
next connection (a reconnect) tries a healthy one first.

The names are looked up again before each connection: a relay added to a name is used from the
next one on, a relay taken out of it is no longer tried.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from tether.gateway.addresses import Resolver, resolve, system_resolver
from tether.spec import Endpoint, Via


@dataclass(frozen=True)
class Candidate:
    """One relay to ask: ``via``, the relay as the user named it (one of the via's relays), and
    ``address``, where to connect (one of its addresses; its name while ``unresolved`` says why
    it has none)."""

    via: Via
    address: Endpoint
    unresolved: str | None = None

    @property
    def label(self) -> str:
        """The relay as the user named it, with the address where a name stands for several."""
        if self.via.host == self.address.host:
            return str(self.via)
        return f"{self.via} ({self.address.host})"


class RelayOrder:
    """``via``'s relays in the order to ask them; ``failed`` moves one to the end."""

    def __init__(self, via: Via, resolver: Resolver = system_resolver) -> None:
        self.via = via
        self.resolver = resolver
        self._known = [Candidate(relay, _named(relay)) for relay in via.relays]
        self._failed: dict[Endpoint, int] = {}  # an address -> when it last failed (a count)
        self._clock = itertools.count(1)

    async def refresh(self) -> list[Candidate]:
        """Look the relays' names up again; every relay to ask, in order."""
        relays = self.via.relays
        resolved = await resolve([_named(relay) for relay in relays], self.resolver)
        known: list[Candidate] = []
        for relay in relays:
            named = _named(relay)
            why = resolved.failures.get(named)
            if why is not None:
                known.append(Candidate(relay, named, f"cannot resolve relay {relay}: {why}"))
                continue
            known += [Candidate(relay, a.address) for a in resolved.addresses if a.named == named]
        self._known = known
        addresses = {candidate.address for candidate in known}
        self._failed = {a: when for a, when in self._failed.items() if a in addresses}
        return self.ordered()

    def ordered(self) -> list[Candidate]:
        """The relays as last looked up: those that have not failed first, in the order named;
        then those that have, the one that failed longest ago first."""
        return sorted(self._known, key=lambda candidate: self._failed.get(candidate.address, 0))

    def failed(self, candidate: Candidate) -> None:
        """``candidate`` failed: it goes to the end of the order."""
        self._failed[candidate.address] = next(self._clock)


def _named(relay: Via) -> Endpoint:
    return Endpoint(relay.host, relay.port)
