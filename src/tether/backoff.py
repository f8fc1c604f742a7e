"""Capped exponential backoff with jitter, for reconnect attempts."""

from __future__ import annotations

import random
from collections.abc import Callable

#: The longest pause before the first attempt after the SSH server is seen to answer again
#: (see outage.py): short, so that the tunnel is back soon after its server, and random within
#: it, so that the tunnels behind one restarted bastion do not all log in at the same instant.
WAKE_STEP = 2.0


class Backoff:
    """Delay before attempt N (1-based): initial * 2**(N-1), capped, then jittered.

    The jitter keeps half of the delay and randomises the other half, so many tunnels behind one
    restarted bastion do not all come back in the same instant, yet none waits less than half.
    """

    def __init__(
        self,
        initial: float,
        cap: float,
        rand: Callable[[], float] = random.random,
        *,
        wake: float = WAKE_STEP,
    ) -> None:
        self.initial = initial
        self.cap = cap
        self.wake = wake
        self._rand = rand

    def delay(self, attempt: int) -> float:
        base: float = min(self.cap, self.initial * 2.0 ** min(attempt - 1, 62))
        return base / 2 + base / 2 * self._rand()

    def wake_delay(self, wakes: int) -> float:
        """The pause before the attempt that follows the server's ``wakes``-th return in one
        outage: anywhere within a bound of ``wake`` seconds that doubles with each return (the
        attempt after the last one failed anyway: a server that answers and then drops logins,
        as one swamped by a storm of them does) up to the cap.

        All of it is random, not half: the server is known to answer, and what the pause is for
        is to spread the tunnels that all saw it come back at once."""
        bound: float = min(self.cap, self.wake * 2.0 ** min(wakes - 1, 62))
        return bound * self._rand()
