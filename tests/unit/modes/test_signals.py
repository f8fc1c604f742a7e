"""StopRequest: the first stop signal is the request, one after it is the hurry."""

from __future__ import annotations

import os
import signal

from tests.support.waiting import wait_until
from tether.modes.signals import StopRequest, capture_stop_signals


async def test_a_second_stop_signal_hurries() -> None:
    stop = StopRequest()
    with capture_stop_signals(stop):
        os.kill(os.getpid(), signal.SIGTERM)
        await wait_until(stop.event.is_set, "the stop request")
        assert not stop.hurry.is_set()
        os.kill(os.getpid(), signal.SIGINT)
        await wait_until(stop.hurry.is_set, "the hurry")
    assert stop.signum == signal.SIGTERM  # the exit status is the first signal's


async def test_a_signal_after_a_stop_request_hurries() -> None:
    stop = StopRequest()
    stop.set(0)  # `tether stop`, in foreground mode
    assert not stop.hurry.is_set()
    stop.signalled(signal.SIGTERM)
    assert stop.hurry.is_set() and stop.signum == 0
