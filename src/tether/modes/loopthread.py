"""An event loop in a helper thread, for callers whose own thread blocks elsewhere: the shell's
prompt, and the Python API's synchronous `open`."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from tether.modes.runtime import new_event_loop

T = TypeVar("T")
# Signals belong to the caller's main thread. Delivered to the loop's thread instead, a SIGHUP
# would wait, unnoticed, until the main thread next ran Python code.
CALLER_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
# How long an interrupted call may take to unwind: closing a tunnel that was starting is quick.
UNWIND_LIMIT = 30.0


class LoopThread:
    """Runs coroutines on a loop of its own in a daemon thread; ``close`` stops both."""

    def __init__(self, name: str) -> None:
        self.loop = new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # Threads started from here (resolvers) inherit the mask; ssh is spawned with an empty one.
        signal.pthread_sigmask(signal.SIG_BLOCK, CALLER_SIGNALS)
        self.loop.run_forever()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its result (or exception).

        Interrupted (Ctrl-C in the caller's thread), it cancels ``coro`` and waits until that
        has unwound, so that a start being cancelled closes what it opened before the caller
        goes on.
        """
        finished = threading.Event()

        async def run() -> T:
            try:
                return await coro
            finally:
                finished.set()

        future = asyncio.run_coroutine_threadsafe(run(), self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            finished.wait(UNWIND_LIMIT)
            raise

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
