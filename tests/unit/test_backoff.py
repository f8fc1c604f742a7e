"""Reconnect backoff: exponential, capped, jittered within [half, full] of each step; and the
pause after the server answers again, random within a bound of its own."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tether.backoff import WAKE_STEP, Backoff


def test_steps_double_up_to_the_cap() -> None:
    full = Backoff(0.5, 30, rand=lambda: 1.0)
    assert [full.delay(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    half = Backoff(0.5, 30, rand=lambda: 0.0)
    assert [half.delay(n) for n in (1, 2, 7)] == [0.25, 0.5, 15]


@given(st.integers(min_value=1, max_value=10_000), st.floats(min_value=0, max_value=1))
def test_delay_stays_within_bounds(attempt: int, jitter: float) -> None:
    delay = Backoff(0.5, 30, rand=lambda: jitter).delay(attempt)
    assert 0.25 <= delay <= 30


def test_a_wake_is_random_within_a_bound_that_doubles_up_to_the_cap() -> None:
    full = Backoff(0.5, 30, rand=lambda: 1.0)
    assert [full.wake_delay(n) for n in range(1, 8)] == [2, 4, 8, 16, 30, 30, 30]
    assert Backoff(0.5, 30, rand=lambda: 0.0).wake_delay(1) == 0  # all of it random
    assert Backoff(0.5, 1, rand=lambda: 1.0).wake_delay(1) == 1  # never past backoff_max


@given(st.integers(min_value=1, max_value=10_000), st.floats(min_value=0, max_value=1))
def test_wake_delay_stays_within_bounds(wakes: int, jitter: float) -> None:
    delay = Backoff(0.5, 30, rand=lambda: jitter).wake_delay(wakes)
    assert 0 <= delay <= min(30, WAKE_STEP * 2 ** min(wakes - 1, 62))
