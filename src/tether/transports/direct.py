"""Plain TCP from this host to the target."""

from __future__ import annotations

import asyncio
import socket

from tether.errors import TargetUnreachableError, describe
from tether.relay import Conduit, End
from tether.spec import Endpoint
from tether.transports.base import LossCallback, PhaseCallback, Transport


class DirectTransport(Transport):
    """Each stream is a new TCP connection straight to the target."""

    label = "direct"

    async def connect(
        self, on_phase: PhaseCallback | None = None, on_lost: LossCallback | None = None
    ) -> None:
        return None  # nothing shared, so nothing to lose

    async def open(self, target: Endpoint, end: End) -> Conduit:
        loop = asyncio.get_running_loop()
        try:
            conduit, _ = await loop.create_connection(lambda: end, target.host, target.port)
        except socket.gaierror as exc:
            raise TargetUnreachableError(f"cannot resolve {target.host}: {describe(exc)}") from exc
        except (OSError, UnicodeError) as exc:
            raise TargetUnreachableError(f"cannot connect to {target}: {describe(exc)}") from exc
        return conduit

    async def close(self) -> None:
        return None
