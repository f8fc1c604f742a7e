"""Capped exponential backoff with jitter, for reconnect attempts."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delay before attempt N (1-based): initial * 2**(N-1), capped, then jittered.

    The jitter keeps half of the delay and randomises the other half, so many tunnels behind one
    restarted bastion do not all come back in the same instant, yet none waits less than half.
    """

    def __init__(
        self, initial: float, cap: float, rand: Callable[[], float] = random.random
    ) -> None:
        self.initial = initial
        self.cap = cap
        self._rand = rand

    def delay(self, attempt: int) -> float:
        base: float = min(self.cap, self.initial * 2.0 ** min(attempt - 1, 62))
        return base / 2 + base / 2 * self._rand()
