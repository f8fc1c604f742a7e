"""The one small interface every transport implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from socket import socket
from typing import Protocol

from tether.states import State
from tether.relay import Conduit, End, Relay
from tether.spec import Endpoint
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

    ``connect`` sets up shared state (an SSH session, an OpenSSH master) and then each local
    connection takes one of two data paths:

    - relay (``handoff`` False): ``open`` makes a stream whose bytes tether's relay pumps;
    - handoff (``handoff`` True): ``forward`` passes the accepted socket itself to a process
      that moves its bytes, and tether only counts and ends it.

    Errors leave as tether's own: TransportUnreachableError, AuthenticationError, HostKeyError
    from ``connect``; TargetUnreachableError from ``open``, ``forward`` and ``probe``.
    """

    #: Printable description of the path, never holding secrets: "direct" or "ssh://u@h:22".
    label: str = "direct"
    #: Which SSH implementation moves the bytes; None for direct TCP.
    engine: str | None = None
    handoff: bool = False

    @abstractmethod
    async def connect(
        self, on_phase: PhaseCallback | None = None, on_lost: LossCallback | None = None
    ) -> None:
        """Establish what streams will share; return once streams can be opened.

        May be called again after a loss to reconnect. ``on_lost(reason)`` is called if the shared
        state dies later on its own (never for ``close``).
        """

    async def open(self, target: Endpoint, end: End) -> Conduit:
        """Relay path: open one stream to ``target`` whose events go to ``end``."""
        raise NotImplementedError

    async def forward(self, target: Endpoint, sock: socket) -> Forwarding:
        """Handoff path: have ``sock`` forwarded to ``target``; return once the target has
        accepted."""
        raise NotImplementedError

    async def server_address(self) -> tuple[str, int] | None:
        """Where the server behind the shared state can be reached by plain TCP, as the
        transport's config leads to it: the host and port that tether may watch while it
        reconnects (see outage.py). None when there is no such server (direct TCP), or no
        direct way to it (a jump host, a ProxyCommand). Never raises."""
        return None

    async def probe(self, target: Endpoint) -> None:
        """Open one connection to ``target`` and close it: proof that the target answers."""
        relay = Relay(Counters(), lambda _relay: None)
        conduit = await self.open(target, relay.remote)
        conduit.close()

    @abstractmethod
    async def close(self) -> None:
        """Release everything; open streams are dropped."""
