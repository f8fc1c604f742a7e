"""Turning SIGINT, SIGTERM and SIGHUP into an awaitable stop request.

asyncio is imported where it is used: a start takes ``interrupting`` from here before it has
an event loop (a background start's parent never has one), and begins its SSH login sooner for
not loading asyncio first (prelogin.py).
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from tether.errors import Interrupted

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
BEFORE_READY = "interrupted before the tunnel was ready"


class StopRequest:
    """Set by the first stop signal; remembers which one for the exit status.

    A stop signal that comes after the request (a second Ctrl-C) sets ``hurry`` too: a drain
    then ends at once, and the tunnels close without waiting for their connections.

    ``forward``, when set, gets every signal, the first and any that follow (run mode passes
    them on to its command).
    """

    def __init__(self) -> None:
        import asyncio

        self.event = asyncio.Event()
        self.hurry = asyncio.Event()
        self.signum: int | None = None
        self.forward: Callable[[int], None] | None = None

    def signalled(self, signum: int) -> None:
        """A stop signal: the request, or, once there is one (a signal, `tether stop`), the
        hurry."""
        if self.signum is not None:
            self.hurry.set()
        self.set(signum)

    def set(self, signum: int) -> None:
        if self.signum is None:
            self.signum = signum
        self.event.set()
        if self.forward is not None:
            self.forward(signum)

    async def wait(self) -> int:
        await self.event.wait()
        assert self.signum is not None
        return self.signum


@contextmanager
def capture_stop_signals(request: StopRequest) -> Iterator[StopRequest]:
    """Route stop signals to ``request`` while the block runs; restore the defaults after."""
    import asyncio

    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, request.signalled, signum)
    try:
        yield request
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)


@contextmanager
def interrupting(message: str = BEFORE_READY) -> Iterator[None]:
    """While the block runs, a stop signal raises Interrupted(``message``), whose exit status is
    128+N: a start that has begun something (a child, an SSH login) undoes it on the way out,
    where the default action would end the process and leave it. An event loop's handlers
    (``capture_stop_signals``) take over within the block; the handlers before it come back
    after."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(message, signum=signum)

    previous = {signum: signal.signal(signum, interrupt) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
