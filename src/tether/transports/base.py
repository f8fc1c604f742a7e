"""The small interfaces every transport implements: what all share (``Transport``), and one of
two data paths, each a type of its own (``RelayingTransport``, ``HandoffTransport``)."""

from __future__ import annotations

from pathlib import Path
from abc import ABC, abstractmethod
from collections.abc import Callable
from socket import socket, socketpair
from typing import Protocol

from tether.relay import Conduit, End, Relay
from tether.spec import Endpoint
from tether.states import DIRECT, State
from tether.stats import Counters

PhaseCallback = Callable[[State], None]
LossCallback = Callable[[str], None]


class Forwarding(Protocol):
    """A connection another process forwards; it lasts until ``ended`` returns: True if the
    forward ended by itself, False if the process that moved it died."""

    async def ended(self) -> bool: ...
    def close(self) -> None: ...


class Transport(ABC):
    """Carries each local connection to a target, over whatever path it stands for.

    ``connect`` sets up shared state (an SSH session, an OpenSSH master); then each local
    connection takes the one data path the transport has, by its type:

    - ``RelayingTransport.open`` makes a stream whose bytes tether's relay pumps;
    - ``HandoffTransport.forward`` passes the accepted socket itself to a process that moves its
      bytes, and tether only counts and ends it.

    Errors leave as tether's own: TransportUnreachableError, AuthenticationError, HostKeyError
    from ``connect``; TargetUnreachableError from ``open``, ``forward`` and ``probe``.
    """

    #: Printable description of the path, never holding secrets: "direct" or "ssh://u@h:22".
    label: str = DIRECT
    #: Which SSH implementation moves the bytes; None for direct TCP.
    engine: str | None = None
    #: The registry directory of the tunnel: the tunnels of one may share a connection (the
    #: OpenSSH engine's master). None: the user's default one.
    runtime: Path | None = None

    @abstractmethod
    async def connect(
        self, on_phase: PhaseCallback | None = None, on_lost: LossCallback | None = None
    ) -> None:
        """Establish what streams will share; return once streams can be opened.

        May be called again after a loss to reconnect. ``on_lost(reason)`` is called if the shared
        state dies later on its own (never for ``close``).
        """

    @property
    def shared_master(self) -> str | None:
        """The id of the SSH connection the transport shares with other tunnels, if it does."""
        return None

    async def server_address(self) -> tuple[str, int] | None:
        """Where the server behind the shared state can be reached by plain TCP, as the
        transport's config leads to it: the host and port that tether may watch while it
        reconnects (see outage.py). None when there is no such server (direct TCP), or no
        direct way to it (a jump host, a ProxyCommand). Never raises."""
        return None

    @abstractmethod
    async def probe(self, target: Endpoint) -> None:
        """Open one connection to ``target`` and close it: proof that the target answers."""

    @abstractmethod
    async def close(self) -> None:
        """Release everything; open streams are dropped."""


class RelayingTransport(Transport):
    """The relay path: each connection's bytes move through tether (relay.py)."""

    @abstractmethod
    async def open(self, target: Endpoint, end: End) -> Conduit:
        """Open one stream to ``target`` whose events go to ``end``."""

    async def probe(self, target: Endpoint) -> None:
        relay = Relay(Counters(), lambda _relay: None)
        conduit = await self.open(target, relay.remote)
        conduit.close()


class HandoffTransport(Transport):
    """The handoff path: each accepted socket goes to a process that moves its bytes."""

    @abstractmethod
    async def forward(self, target: Endpoint, sock: socket) -> Forwarding:
        """Have ``sock`` forwarded to ``target``; return once the target has accepted."""

    async def probe(self, target: Endpoint) -> None:
        here, there = socketpair()
        try:
            forwarding = await self.forward(target, there)
            forwarding.close()
        finally:
            here.close()
            there.close()
