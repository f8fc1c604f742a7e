"""The one small interface every transport implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from tether.protocol import State
from tether.relay import Conduit, End
from tether.spec import Endpoint

PhaseCallback = Callable[[State], None]
LossCallback = Callable[[str], None]


class Transport(ABC):
    """Opens streams to targets on demand, over whatever path it stands for.

    ``connect`` sets up shared state (an SSH session, say) and ``open`` then makes one stream per
    local connection. Errors leave as tether's own: TransportUnreachableError, AuthenticationError,
    HostKeyError from ``connect``; TargetUnreachableError from ``open``.
    """

    #: Printable description of the path, never holding secrets: "direct" or "ssh://u@h:22".
    label: str = "direct"

    @abstractmethod
    async def connect(
        self, on_phase: PhaseCallback | None = None, on_lost: LossCallback | None = None
    ) -> None:
        """Establish what streams will share; return once streams can be opened.

        May be called again after a loss to reconnect. ``on_lost(reason)`` is called if the shared
        state dies later on its own (never for ``close``).
        """

    @abstractmethod
    async def open(self, target: Endpoint, end: End) -> Conduit:
        """Open one stream to ``target`` whose events go to ``end``; return its conduit."""

    @abstractmethod
    async def close(self) -> None:
        """Release everything; open streams are dropped."""
