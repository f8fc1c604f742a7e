"""Turns shared by every event loop of the process (turns.py)."""

from __future__ import annotations

import asyncio
import threading

from tether.turns import Turns

HOLD = 0.05  # how long each turn lasts here


class Count:
    """Turns under way now, and the most at once, over every thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0
        self.done = 0

    async def take(self, turns: Turns) -> None:
        async with turns.turn():
            with self.lock:
                self.now += 1
                self.most = max(self.most, self.now)
            await asyncio.sleep(HOLD)
            with self.lock:
                self.now -= 1
                self.done += 1


def test_the_bound_holds_over_loops_in_several_threads() -> None:
    """Three threads, each with its own loop (as tether.open gives each tunnel), ten turns
    each, three places in all."""
    turns, count = Turns(3), Count()

    async def many() -> None:
        await asyncio.gather(*(count.take(turns) for _ in range(10)))

    threads = [threading.Thread(target=asyncio.run, args=(many(),)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert count.done == 30 and count.now == 0
    assert count.most == 3
    assert not turns.busy


async def test_a_waiter_that_gives_up_takes_no_place() -> None:
    turns, count = Turns(1), Count()
    async with turns.turn():
        waiter = asyncio.ensure_future(count.take(turns))
        await asyncio.sleep(0)  # the waiter runs up to its wait
        assert not waiter.done() and turns.busy
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
    # The place came back: a new turn starts at once, and none is left taken after.
    await asyncio.wait_for(count.take(turns), 10)
    assert count.done == 1 and not turns.busy


async def test_a_place_handed_to_a_waiter_that_gave_up_comes_back() -> None:
    """The holder ends its turn, the place is handed to the waiter, and the waiter is cancelled
    before it runs again: the place is not lost."""
    turns = Turns(1)
    held = turns.turn()
    await held.__aenter__()
    waiter = asyncio.ensure_future(Count().take(turns))
    await asyncio.sleep(0)  # the waiter queues
    assert turns.busy
    await held.__aexit__(None, None, None)  # the hand-over is scheduled on this loop
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    await asyncio.sleep(0)
    assert not turns.busy
    await asyncio.wait_for(Count().take(turns), 10)


async def test_places_narrow_by_half_and_widen_by_one() -> None:
    """Four places: halved twice to one (never none), then widened back to four at most. A
    turn that waits gets the place a widening adds, and turns held past a narrowing end as
    they would, without handing their places on."""
    turns = Turns(4)
    held = [turns.turn() for _ in range(4)]
    for turn in held:
        await turn.__aenter__()
    turns.narrow()
    turns.narrow()
    turns.narrow()
    assert turns.places == 1
    for turn in held[:3]:
        await turn.__aexit__(None, None, None)
    waiter = asyncio.ensure_future(Count().take(turns))
    await asyncio.sleep(0)  # the waiter runs up to its wait
    assert not waiter.done() and turns.busy  # one held, one place
    turns.widen()
    await asyncio.wait_for(waiter, 10)  # the new place was handed to it
    await held[3].__aexit__(None, None, None)
    for _ in range(5):
        turns.widen()
    assert turns.places == 4 and not turns.busy
