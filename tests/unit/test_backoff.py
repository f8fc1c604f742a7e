"""Reconnect backoff: exponential, capped, jittered within [half, full] of each step."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tether.backoff import Backoff


def test_steps_double_up_to_the_cap() -> None:
    full = Backoff(0.5, 30, rand=lambda: 1.0)
    assert [full.delay(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    half = Backoff(0.5, 30, rand=lambda: 0.0)
    assert [half.delay(n) for n in (1, 2, 7)] == [0.25, 0.5, 15]


@given(st.integers(min_value=1, max_value=10_000), st.floats(min_value=0, max_value=1))
def test_delay_stays_within_bounds(attempt: int, jitter: float) -> None:
    delay = Backoff(0.5, 30, rand=lambda: jitter).delay(attempt)
    assert 0.25 <= delay <= 30
