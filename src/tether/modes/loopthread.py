"""An event loop in a helper thread, for callers whose own thread blocks elsewhere: the shell's
prompt, and the Python API's synchronous `open`.

A call into the loop can never hang: it is bounded, and refused at once where the thread cannot
answer, in a forked child (which has no such thread) and at interpreter shutdown (which freezes
daemon threads).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from tether.errors import TetherError
from tether.modes.runtime import new_event_loop
from tether.modes.signals import STOP_SIGNALS

T = TypeVar("T")
# How long an interrupted call may take to unwind: closing a tunnel that was starting is quick.
UNWIND_LIMIT = 30.0
# How long closing the loop waits for its thread to stop.
STOP_LIMIT = 10.0


class LoopUnavailable(TetherError):
    """The helper thread's loop cannot run a call: this process is a fork of the one that
    started it, the interpreter is shutting down, or the loop was closed."""


class LoopCallTimeout(TetherError):
    """A call into the helper thread's loop did not finish within its bound."""


class LoopThread:
    """Runs coroutines on a loop of its own in a daemon thread; ``close`` stops both."""

    def __init__(self, name: str) -> None:
        self.loop = new_event_loop()
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # Threads started from here (resolvers) inherit the mask; ssh is spawned with an empty one.
        # Signals belong to the caller's main thread. Delivered to the loop's thread instead, a
        # SIGHUP would wait, unnoticed, until the main thread next ran Python code.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        self.loop.run_forever()

    @property
    def inherited(self) -> bool:
        """Whether this is a forked child's copy: the thread, and so the loop, is the parent's."""
        return os.getpid() != self._pid

    def _unavailable(self) -> str | None:
        if self.inherited:
            return "it belongs to the process this one was forked from"
        if sys.is_finalizing():
            return "the interpreter is shutting down"
        if self.loop.is_closed() or not self._thread.is_alive():
            return "it was closed"
        return None

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result (or exception), at most ``timeout``
        seconds (then LoopCallTimeout); LoopUnavailable at once if the loop cannot run it.

        Interrupted (Ctrl-C in the caller's thread) or out of time, it cancels ``coro`` and
        waits until that has unwound, so that a start being cancelled closes what it opened
        before the caller goes on.
        """
        why = self._unavailable()
        if why is not None:
            coro.close()
            raise LoopUnavailable(f"tether's helper thread cannot run this: {why}")
        finished = threading.Event()

        async def run() -> T:
            try:
                return await coro
            finally:
                finished.set()

        future = asyncio.run_coroutine_threadsafe(run(), self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            if future.done():  # the coroutine's own TimeoutError, or done just as time ran out
                return future.result()
            future.cancel()
            finished.wait(UNWIND_LIMIT)
            raise LoopCallTimeout(
                f"tether's helper thread did not answer within {timeout} s"
            ) from None
        except BaseException:
            future.cancel()
            finished.wait(UNWIND_LIMIT)
            raise

    def close(self) -> None:
        """Stop the loop and its thread; idempotent. A forked child's copy is left alone: the
        loop's descriptors (its epoll set among them) are shared with the parent's."""
        if self._unavailable() is not None:
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(STOP_LIMIT)
        if not self._thread.is_alive():
            self.loop.close()
