"""Waiting for a file lock without polling and without blocking an event loop.

The blocking lock call runs in a thread of its own. A wait that is given up (a deadline, a
cancellation) hands the descriptor to that thread: if it takes the lock after all, it lets go of
it at once and closes the descriptor, so nothing is held by a waiter nobody waits for.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable
from typing import Literal

Kind = Literal["flock", "lockf"]


class LockWait:
    """Takes an exclusive lock on ``fd`` (``flock`` or POSIX ``lockf``) in a thread.

    When the wait succeeds, the caller holds the lock on its descriptor as before. When it does
    not (a timeout, a cancellation, an error), the descriptor is no longer the caller's: it is
    closed, now or by the thread once its lock call returns.
    """

    def __init__(self, fd: int, kind: Kind) -> None:
        self.fd = fd
        self._kind = kind
        self._mutex = threading.Lock()
        self._state: Literal["waiting", "held", "failed", "given up"] = "waiting"
        self.error: OSError | None = None
        self.done = threading.Event()
        self._wake: Callable[[], None] | None = None
        threading.Thread(target=self._run, name="tether-lock", daemon=True).start()

    def _run(self) -> None:
        try:
            if self._kind == "flock":
                fcntl.flock(self.fd, fcntl.LOCK_EX)
            else:
                fcntl.lockf(self.fd, fcntl.LOCK_EX)
        except OSError as exc:
            self.error = exc
        with self._mutex:
            if self._state == "given up":
                os.close(self.fd)  # the lock with it, if it was taken
            else:
                self._state = "failed" if self.error is not None else "held"
            wake = self._wake
        self.done.set()
        if wake is not None:
            wake()

    @property
    def held(self) -> bool:
        return self._state == "held"

    def give_up(self) -> bool:
        """Stop waiting. True if the lock was taken first (the caller holds it after all);
        otherwise the descriptor now belongs to the waiting thread."""
        with self._mutex:
            if self._state in ("held", "failed"):
                return self._state == "held"
            self._state = "given up"
            return False

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; whether the lock is held (OSError if it failed)."""
        self.done.wait(max(timeout, 0.0))
        if self.give_up():
            return True
        self._failed()
        return False

    async def wait_async(self) -> None:
        """Wait until the lock is held (OSError if it failed); a cancellation gives it up."""
        import asyncio  # here: a start's first steps take locks before asyncio is loaded

        loop = asyncio.get_running_loop()
        woken = asyncio.Event()

        def wake() -> None:
            loop.call_soon_threadsafe(woken.set)

        with self._mutex:
            self._wake = wake
        if self.done.is_set():
            woken.set()
        try:
            await woken.wait()
        except BaseException:
            if self.give_up():
                os.close(self.fd)  # taken meanwhile: let go of it
            raise
        if not self.held:
            self._failed()

    def _failed(self) -> None:
        """After a wait that did not get the lock: an error is raised, its descriptor closed
        (one given up is the thread's to close)."""
        if self._state == "failed":
            os.close(self.fd)
            assert self.error is not None
            raise self.error


def try_lock(fd: int, kind: Kind) -> bool:
    """Take the lock at once if it is free; whether it was."""
    try:
        if kind == "flock":
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):  # lockf says EACCES or EAGAIN
        return False
    return True
