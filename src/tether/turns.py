"""Turns at something costly, shared by every event loop of the process (``Turns``).

The tunnels of one process may run on several loops: ``tether.open()`` gives each its own
helper thread and loop, ``open_async`` shares the caller's. A bound meant for the process (how
many reconnect attempts run at once) must hold across them, so an asyncio.Semaphore, which
belongs to one loop, does not do: the places here are counted under a thread lock, and a
waiter on any loop is woken on its own loop when a place is handed to it.

The number of places can narrow and widen with what the turns find (``narrow``, ``widen``): the
caller halves it when a turn shows the machine too busy for so many at once, and adds one back
after each turn that went well, up to the number it was made with.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]


class Turns:
    """``places`` turns at once at most; the others wait, first come, first served, on any
    loop."""

    def __init__(self, places: int) -> None:
        self._most = places
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._limit = self._most  # places now: from 1 to _most
        self._held = 0
        self._lock = threading.Lock()
        self._waiting: deque[Waiter] = deque()

    def _forked(self) -> None:
        """A child forked while turns were held starts with every place free: the turns and
        waiters it copied are its parent's, and never end here."""
        if os.getpid() != self._pid:
            self._reset()

    @property
    def busy(self) -> bool:
        """Whether a new turn would wait now."""
        self._forked()
        with self._lock:
            return self._held >= self._limit or bool(self._waiting)

    @property
    def places(self) -> int:
        self._forked()
        return self._limit

    def narrow(self) -> None:
        """Half as many places (one at least); the turns under way end as they would."""
        self._forked()
        with self._lock:
            self._limit = max(1, self._limit // 2)

    def widen(self) -> None:
        """One place more, up to the number the turns were made with."""
        self._forked()
        with self._lock:
            self._limit = min(self._most, self._limit + 1)
            self._hand_over()

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold a place for the block, once one is free."""
        await self._acquire()
        try:
            yield
        finally:
            self._release()

    async def _acquire(self) -> None:
        self._forked()
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._held < self._limit and not self._waiting:
                self._held += 1
                return
            waiter: Waiter = (loop, loop.create_future())
            self._waiting.append(waiter)
        try:
            await waiter[1]
        except asyncio.CancelledError:
            with self._lock:
                if waiter in self._waiting:  # never handed a place
                    self._waiting.remove(waiter)
                    raise
            if waiter[1].done() and not waiter[1].cancelled():
                self._release()  # handed one, and cancelled before it could be used
            # Else the hand-over is on its way, and gives the place back (_handed).
            raise

    def _release(self) -> None:
        with self._lock:
            self._held -= 1
            self._hand_over()

    def _hand_over(self) -> None:
        """Free places to the first waiters (the lock held): each is counted as held from
        here, and woken on its own loop."""
        while self._held < self._limit and self._waiting:
            loop, future = self._waiting.popleft()
            try:
                loop.call_soon_threadsafe(self._handed, future)
            except RuntimeError:  # its loop is closed: nobody waits there any more
                continue
            self._held += 1

    def _handed(self, future: asyncio.Future[None]) -> None:
        """On the waiter's loop: the place is its, unless it gave up meanwhile."""
        if future.cancelled():
            self._release()
        else:
            future.set_result(None)
