"""The waits of an outage: the watch on a silent server, and the pause it cuts short."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from dataclasses import replace

import pytest

from tether import outage as outage_module
from tether.backoff import Backoff
from tether.outage import Outage, greeting, reconnect
from tether.spec import Endpoint, TunnelSpec
from tether.transports.base import LossCallback, PhaseCallback
from tether.transports.direct import DirectTransport
from tether.turns import Turns

GREETING = b"SSH-2.0-OpenSSH_9.2\r\n"
INTERVAL = 0.05  # the watch's, here: a new connection tried every 50 ms
QUIET = 0.3  # six intervals: long enough for a watch that should not act to show it would


@pytest.fixture
def server() -> Iterator[socket.socket]:
    """A listener that accepts only when a test asks it to, as a frozen sshd's kernel does."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        sock.setblocking(False)
        yield sock


def port_of(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


async def accept(server: socket.socket) -> socket.socket:
    conn, _ = await asyncio.wait_for(asyncio.get_running_loop().sock_accept(server), 10)
    return conn


async def closed_by_peer(conn: socket.socket) -> bool:
    """Whether the other end closed ``conn`` (an EOF or a reset) within a deadline."""
    try:
        data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(conn, 1), 10)
    except ConnectionResetError:
        return True
    return data == b""


def nothing_queued(server: socket.socket) -> bool:
    """Whether no other connection waits in the listener's queue."""
    try:
        conn, _ = server.accept()
    except BlockingIOError:
        return True
    conn.close()
    return False


async def test_a_silent_server_is_held_until_it_speaks(server: socket.socket) -> None:
    watch = asyncio.ensure_future(greeting("127.0.0.1", port_of(server), INTERVAL))
    with await accept(server) as conn:
        # Accepted and silent, like a frozen sshd: the watch keeps this one connection and
        # tries no other.
        done, _ = await asyncio.wait([watch], timeout=QUIET)
        assert not done and nothing_queued(server)
        conn.sendall(GREETING)
        await asyncio.wait_for(watch, 10)
        assert await closed_by_peer(conn)  # it sent nothing, and closed its connection


async def test_a_refusing_port_is_tried_until_it_answers() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))  # bound, not listening: every connection is refused
        watch = asyncio.ensure_future(greeting("127.0.0.1", port_of(holder), INTERVAL))
        done, _ = await asyncio.wait([watch], timeout=QUIET)
        assert not done
        holder.listen()
        holder.setblocking(False)
        with await accept(holder) as conn:
            conn.sendall(GREETING)
            await asyncio.wait_for(watch, 10)


async def test_a_server_that_closes_without_a_word_is_tried_again(server: socket.socket) -> None:
    """sshd past MaxStartups, or going down: accepted, then closed before its greeting."""
    watch = asyncio.ensure_future(greeting("127.0.0.1", port_of(server), INTERVAL))
    (await accept(server)).close()
    with await accept(server) as again:
        assert not watch.done()
        again.sendall(GREETING)
        await asyncio.wait_for(watch, 10)


async def test_a_cancelled_watch_closes_its_connection(server: socket.socket) -> None:
    watch = asyncio.ensure_future(greeting("127.0.0.1", port_of(server), INTERVAL))
    with await accept(server) as conn:
        watch.cancel()
        assert await closed_by_peer(conn)


async def test_a_server_that_answers_again_cuts_the_pause_short(server: socket.socket) -> None:
    outage = Outage(Backoff(60, 60, rand=lambda: 0.0), ("127.0.0.1", port_of(server)), "t")
    try:
        pause = asyncio.ensure_future(outage.pause(1))  # a step of 30 s
        with await accept(server) as conn:
            done, _ = await asyncio.wait([pause], timeout=QUIET)
            assert not done
            conn.sendall(GREETING)
            await asyncio.wait_for(pause, 10)  # not the 30 s of the step
        assert outage.wakes == 1
    finally:
        outage.close()


async def test_after_the_return_the_pause_is_the_wake_delay(server: socket.socket) -> None:
    # Half of the wake bound: 0.5 x 2 s, then 0.5 x 4 s after a second return.
    outage = Outage(Backoff(60, 60, rand=lambda: 0.5), ("127.0.0.1", port_of(server)), "t")
    loop = asyncio.get_running_loop()
    try:
        for wakes, delay in ((1, 1.0), (2, 2.0)):
            pause = asyncio.ensure_future(outage.pause(wakes))
            with await accept(server) as conn:
                conn.sendall(GREETING)
                heard = loop.time()
                await asyncio.wait_for(pause, 10)
            assert delay <= loop.time() - heard < 30
            assert outage.wakes == wakes
            outage.failed(silent=True)  # the attempt after it failed before the server spoke
    finally:
        outage.close()


async def test_a_server_that_spoke_is_not_watched(server: socket.socket) -> None:
    """After an attempt that heard the server (a refused login), the backoff alone paces."""
    outage = Outage(Backoff(0.2, 0.2, rand=lambda: 1.0), ("127.0.0.1", port_of(server)), "t")
    loop = asyncio.get_running_loop()
    try:
        with await accept(server) as conn:  # the watch the loss started
            outage.failed(silent=False)
            assert await closed_by_peer(conn)
        began = loop.time()
        await asyncio.wait_for(outage.pause(1), 10)
        assert loop.time() - began >= 0.2  # the whole step
        assert nothing_queued(server) and outage.wakes == 0
    finally:
        outage.close()


async def test_without_an_address_the_backoff_alone_paces() -> None:
    """Behind a jump host or a ProxyCommand there is no server address to watch."""
    outage = Outage(Backoff(0.2, 0.2, rand=lambda: 1.0), None, "t")
    loop = asyncio.get_running_loop()
    began = loop.time()
    await asyncio.wait_for(outage.pause(1), 10)
    assert loop.time() - began >= 0.2 and outage.wakes == 0
    outage.close()


class SlowLogin(DirectTransport):
    """A transport whose every connect takes ``LOGIN`` seconds, counting how many run at once."""

    def __init__(self, running: list[int]) -> None:
        self.running = running  # [now, most]: shared by every tunnel of the test

    async def server_address(self) -> tuple[str, int] | None:
        return None  # no watch: the backoff alone paces

    async def connect(
        self, on_phase: PhaseCallback | None = None, on_lost: LossCallback | None = None
    ) -> None:
        self.running[0] += 1
        self.running[1] = max(self.running)
        try:
            await asyncio.sleep(LOGIN)
        finally:
            self.running[0] -= 1


class Heard:
    """outage.Attempts for a test: the reasons of the attempts that failed."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def attempting(self, attempt: int) -> None:
        pass

    def attempt_failed(self, attempt: int, reason: str) -> None:
        self.failures.append(reason)


LOGIN = 0.2


async def test_tunnels_of_one_process_take_turns_at_reconnecting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A few attempts run at once, and each one's bound starts with its turn: twelve tunnels
    whose logins take 0.2 s, three at a time, are all back at their first attempt although the
    last one's turn comes 0.6 s after the loss, past the 0.5 s bound."""
    monkeypatch.setattr("tether.outage.ATTEMPTS", Turns(3))
    spec = TunnelSpec(target=Endpoint("127.0.0.1", 9), timeout=10)
    spec = spec.with_changes(backoff_initial=0.01, ssh=replace(spec.ssh, connect_timeout=0.5))
    assert spec.reconnect_timeout == 0.5
    running = [0, 0]
    heard = Heard()
    loop = asyncio.get_running_loop()
    began = loop.time()
    taken = await asyncio.wait_for(
        asyncio.gather(*(reconnect(spec, SlowLogin(running), noop, heard) for _ in range(12))),
        30,
    )
    assert taken == [1] * 12 and heard.failures == []
    assert running == [0, 3]  # never more than three at once, and three did run together
    assert loop.time() - began >= 4 * LOGIN  # four turns of three


def noop(reason: str) -> None:
    pass


class Slower(SlowLogin):
    """Every connect takes 0.3 s."""

    async def connect(
        self, on_phase: PhaseCallback | None = None, on_lost: LossCallback | None = None
    ) -> None:
        await asyncio.sleep(0.3)


@pytest.mark.parametrize("set_by_user", [False, True])
async def test_an_attempt_that_ran_out_of_time_gets_twice_as_long(set_by_user: bool) -> None:
    """A login slowed by load (0.3 s here) against a 0.2 s bound: the next attempt has 0.4 s and
    connects. A bound the user set (--connect-timeout) stays as set."""
    spec = TunnelSpec(target=Endpoint("127.0.0.1", 9), timeout=0.2)
    connect_timeout = 0.2 if set_by_user else None
    spec = spec.with_changes(
        backoff_initial=0.01, max_retries=3, ssh=replace(spec.ssh, connect_timeout=connect_timeout)
    )
    assert spec.reconnect_timeout == 0.2
    heard = Heard()
    taken = await asyncio.wait_for(reconnect(spec, Slower([0, 0]), noop, heard), 30)
    if set_by_user:
        assert taken is None and heard.failures == ["reconnect timed out after 0.2s"] * 3
    else:
        assert taken == 2 and heard.failures == ["reconnect timed out after 0.2s"]


@pytest.mark.parametrize("load", [0.0, 64.0])
async def test_attempts_that_run_out_of_time_narrow_the_turns_of_a_busy_machine(
    load: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a load average above the CPUs, each attempt that runs out of time halves the places
    of the process (8, 4, 2); the one that connects gives one back (3). On an idle machine the
    server alone is slow: the places stay as they were."""
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    spec = TunnelSpec(target=Endpoint("127.0.0.1", 9), timeout=0.1)
    spec = spec.with_changes(backoff_initial=0.01)
    heard = Heard()
    assert outage_module.ATTEMPTS.places == 8
    # Logins of 0.3 s: out of time at 0.1 and 0.2 s, in time at 0.4 s.
    taken = await asyncio.wait_for(reconnect(spec, Slower([0, 0]), noop, heard), 30)
    assert taken == 3 and len(heard.failures) == 2
    assert outage_module.ATTEMPTS.places == (3 if load else 8)
