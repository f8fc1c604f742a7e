"""The helper thread's loop: a call into it is bounded, and refused at once where it cannot run."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from tests.support.process_state import wait_for_exit
from tether.modes.loopthread import LoopCallTimeout, LoopThread, LoopUnavailable


async def answer(value: int) -> int:
    await asyncio.sleep(0)
    return value


def test_a_call_that_overruns_its_bound_is_cancelled_and_raises() -> None:
    thread = LoopThread("test")
    cancelled = False

    async def forever() -> None:
        nonlocal cancelled
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled = True
            raise

    try:
        started = time.monotonic()
        with pytest.raises(LoopCallTimeout, match=r"within 0\.2 s"):
            thread.call(forever(), timeout=0.2)
        assert time.monotonic() - started < 10
        assert cancelled  # unwound before the caller went on
        assert thread.call(answer(7), timeout=10) == 7  # the loop goes on serving
    finally:
        thread.close()


def test_the_coroutines_own_timeout_is_its_own() -> None:
    async def times_out() -> None:
        raise TimeoutError("the coroutine's")

    thread = LoopThread("test")
    try:
        with pytest.raises(TimeoutError, match="the coroutine's"):
            thread.call(times_out(), timeout=10)
    finally:
        thread.close()


# Forking with the helper thread running is the very case under test; Python 3.12+ warns of it.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_refused_at_once_once_closed_and_in_a_forked_child() -> None:
    thread = LoopThread("test")
    child = os.fork()
    if child == 0:
        try:  # the child has no helper thread: asking it must not wait
            thread.call(answer(1))
        except LoopUnavailable:
            thread.close()  # and closing leaves the parent's loop alone
            os._exit(0)
        except BaseException:
            pass
        os._exit(3)
    assert wait_for_exit(child, deadline=30) == 0
    assert thread.call(answer(2), timeout=10) == 2  # the parent's loop is untouched
    thread.close()
    thread.close()  # idempotent
    with pytest.raises(LoopUnavailable, match="it was closed"):
        thread.call(answer(3))
