"""A tunnel's lifetime bounds: ``ttl`` (from ready) and ``idle_timeout`` (while no connection
is open), each a timer that ends the tunnel when it fires and, meanwhile, says how long is left."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

#: The option behind each bound, named in the log line when it fires.
OPTIONS = {"ttl": "ttl", "idle": "idle_timeout"}


class Bounds:
    """The armed bounds of one tunnel; ``on_expire(bound)`` hears the one that fires."""

    def __init__(self, on_expire: Callable[[str], None]) -> None:
        self.on_expire = on_expire
        self._timers: dict[str, tuple[asyncio.TimerHandle, float]] = {}  # bound -> (timer, end)

    def arm(self, bound: str, seconds: float) -> None:
        """(Re)start ``bound``: it fires ``seconds`` from now, unless disarmed first."""
        loop = asyncio.get_running_loop()
        self.disarm(bound)
        handle = loop.call_later(seconds, self.on_expire, bound)
        self._timers[bound] = (handle, loop.time() + seconds)

    def disarm(self, bound: str) -> None:
        timer = self._timers.pop(bound, None)
        if timer is not None:
            timer[0].cancel()

    def left(self, bound: str) -> float | None:
        """Seconds until ``bound`` fires; None if it is not armed."""
        timer = self._timers.get(bound)
        if timer is None or timer[0].cancelled():
            return None
        return max(0.0, timer[1] - asyncio.get_running_loop().time())

    def cancel(self) -> None:
        """Stop every timer: the tunnel is closing. ``left`` says None from now on."""
        for handle, _ in self._timers.values():
            handle.cancel()
