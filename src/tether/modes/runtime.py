"""The process a tunnel runs in: its event loop and its limits.

Name resolution runs in threads that can never hold up an exit: asyncio.run() waits for its
default executor's threads, so one lookup stuck on a dead DNS server would otherwise keep a
stopped tunnel (and its signal or --timeout) waiting for as long as the resolver likes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import resource
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

# Two descriptors per connection, and a thousand connections by default: more than the usual
# soft limit of 1024. The hard limit is the user's to raise.
WANTED_OPEN_FILES = 65536


class DaemonExecutor(concurrent.futures.ThreadPoolExecutor):
    """Runs each job in a daemon thread of its own, and never waits for them on shutdown."""

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def work() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)

        threading.Thread(target=work, name="tether-resolver", daemon=True).start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        return None


def new_event_loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    loop.set_default_executor(DaemonExecutor())
    return loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run() for a tunnel process."""
    raise_open_file_limit()
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)


def raise_open_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = WANTED_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, WANTED_OPEN_FILES)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            pass  # keep the limit we have; the listener copes with running out
