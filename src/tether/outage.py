"""One outage of a tunnel's transport: the reconnect attempts (``reconnect``), and the waits
between them, backoff cut short once the SSH server is seen to answer again (``Outage``).

An attempt costs the server a login (a process, a key exchange) and tether an ssh process, so
attempts back off, up to backoff_max. Watching costs neither: while the server is silent (it
refuses, it is unreachable, or it accepted and never spoke, as a frozen one does), a plain TCP
connection is tried once a second and, once accepted, held until the server sends its greeting.
When it does, the server is back, and the next attempt comes after a short random pause
(Backoff.wake_delay) instead of the rest of the step.

The tunnels of one process take turns at their attempts (``turn``): a few run at once, and an
attempt's time bound starts with its turn.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

from tether.backoff import Backoff
from tether.errors import AccessRefused, TetherError, TransportUnreachableError
from tether.spec import TunnelSpec
from tether.states import State
from tether.transports.base import LossCallback, Transport
from tether.turns import Turns

log = logging.getLogger("tether")

#: How often the watch tries a new connection while none has been accepted. Older ones stay
#: pending meanwhile: a SYN lost to a link that was down is sent again only seconds later.
WATCH_INTERVAL = 1.0
PENDING = 4  # connections tried at once at most; the oldest is dropped for a new one
RESOLVE_MAX = 30.0  # the longest wait between lookups of a server name that does not resolve
# What getaddrinfo gives for one address: family, type, protocol and the address itself.
Address = tuple[int, int, int, tuple[Any, ...]]

#: Reconnect attempts under way at once in one process (over all its event loops); the others
#: wait their turn. Hundreds of tunnels that lose one relay together would otherwise each start a
#: login at once, share the CPU (and the server's) among them, all run out of their time bound,
#: and start over together (100 tunnels moved in 56 s on a 2-core machine; 19 s with turns).
#: Eight at once keeps a far server busy (a login is mostly round trips) without a herd. An
#: attempt that runs out of time while this machine is overloaded (``overloaded``) halves the
#: number (down to one), so that its CPU is not spent on logins thrown away at their bound; each
#: attempt that connects gives one place back. A server that is slow on its own (an idle machine
#: here) narrows nothing: its attempts would otherwise hold up the other tunnels' to other servers.
ATTEMPTS_AT_ONCE = 8
ATTEMPTS = Turns(ATTEMPTS_AT_ONCE)
#: The longest an attempt's bound grows to, unless --connect-timeout sets it: an attempt that ran
#: out of time gets twice as long at the next, so that logins slowed by load (a swamped client
#: or server, not a silent one: the watch waits for its greeting first) end instead of all
#: starting over. With 1,000 tunnels on one 2-core machine a login took more than 10 s.
SLOW_BOUND_MAX = 60.0


def overloaded() -> bool:
    """Whether more tasks run or wait to run here, over the last minute, than the CPUs this
    process may use (the load average: host-wide, which is what a login competes with)."""
    try:
        return os.getloadavg()[0] > len(os.sched_getaffinity(0))
    except OSError:  # no load average to read: never narrow
        return False


@asynccontextmanager
async def turn(name: str) -> AsyncIterator[None]:
    """Hold one of the process's places for a reconnect attempt, waiting for one first if all
    are taken (first come, first served)."""
    if ATTEMPTS.busy:
        log.debug("%s: waiting for other tunnels' reconnect attempts to end", name)
    async with ATTEMPTS.turn():
        yield


async def greeting(host: str, port: int, interval: float = WATCH_INTERVAL) -> None:
    """Return once the server at ``host``:``port`` sends its first bytes on a new connection.

    Nothing is sent; every connection is closed on the way out. A server that accepts and then
    closes without a word (sshd past MaxStartups, or on its way down) is tried again."""
    loop = asyncio.get_running_loop()
    addresses = await _resolved(host, port, interval)
    while True:
        sock = await _accepted(addresses, interval)
        try:
            spoke = bool(await loop.sock_recv(sock, 1))
        except OSError:
            spoke = False
        finally:
            sock.close()
        if spoke:
            return
        await asyncio.sleep(interval)


async def _resolved(host: str, port: int, interval: float) -> list[Address]:
    """The server's addresses: a name that does not resolve (its DNS server may be down too) is
    looked up again, less and less often."""
    loop = asyncio.get_running_loop()
    wait = interval
    while True:
        try:
            found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            found = []
        if found:
            return [(family, kind, proto, address) for family, kind, proto, _, address in found]
        await asyncio.sleep(wait)
        wait = min(RESOLVE_MAX, wait * 2)


async def _accepted(addresses: list[Address], interval: float) -> socket.socket:
    """A connection to the server that it (or its kernel) accepted: a new one tried every
    ``interval`` (to each address in turn) until then."""
    pending: list[asyncio.Task[socket.socket]] = []
    try:
        for turn in itertools.count():
            pending.append(asyncio.ensure_future(_connect(addresses[turn % len(addresses)])))
            if len(pending) > PENDING:
                _drop(pending.pop(0))
            tick = asyncio.ensure_future(asyncio.sleep(interval))
            try:
                while not tick.done():
                    await asyncio.wait([tick, *pending], return_when=asyncio.FIRST_COMPLETED)
                    for task in [t for t in pending if t.done()]:
                        pending.remove(task)
                        if not task.cancelled() and task.exception() is None:
                            return task.result()
            finally:
                tick.cancel()
        raise AssertionError("unreachable")
    finally:
        for task in pending:
            _drop(task)


def _drop(task: asyncio.Task[socket.socket]) -> None:
    """Give up a connection being tried: its socket is closed, whenever it connects."""
    task.cancel()
    task.add_done_callback(_close_connected)


def _close_connected(task: asyncio.Task[socket.socket]) -> None:
    if not task.cancelled() and task.exception() is None:
        task.result().close()


async def _connect(target: Address) -> socket.socket:
    family, kind, proto, address = target
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return sock


class Outage:
    """The pauses between the reconnect attempts of one outage.

    ``address`` is where the SSH server can be reached by TCP (None behind a jump host or a
    ProxyCommand: then only the backoff applies). The watch starts with the outage, since a
    loss means the server stopped answering, and again after each attempt that failed before
    the server said a word; an attempt that heard it (a refused login, a changed host key)
    stops it, and the backoff alone paces the next.
    """

    def __init__(self, backoff: Backoff, address: tuple[str, int] | None, name: str) -> None:
        self.backoff = backoff
        self.address = address
        self.name = name
        self.wakes = 0  # times the server was seen to answer again in this outage
        self.timed_out = False  # the last attempt ran out of time
        self._watch: asyncio.Task[None] | None = None
        self._back = False  # the server answered again since the last attempt began
        self._start_watch()

    def failed(self, *, silent: bool) -> None:
        """An attempt failed: ``silent`` if the server never spoke in it."""
        if silent:
            self._start_watch()
        else:
            self._stop_watch()
            self._back = False

    async def pause(self, attempt: int) -> None:
        """Wait before ``attempt``: its backoff step, or less once the server answers again."""
        loop = asyncio.get_running_loop()
        end = loop.time() + self.backoff.delay(attempt)
        watch = self._watch
        if not self._back and watch is not None:
            await asyncio.wait([watch], timeout=end - loop.time())
            if watch.done():
                self._watched(watch)
        if self._back:
            self._back = False
            wake = self.backoff.wake_delay(self.wakes + 1)
            if wake < end - loop.time():  # else the step, shorter, is pause enough
                self.wakes += 1
                log.warning(
                    "%s: the SSH server answers again; reconnecting in %.1fs", self.name, wake
                )
                end = loop.time() + wake
        await asyncio.sleep(max(0.0, end - loop.time()))

    async def attempt(
        self, transport: Transport, on_lost: LossCallback, bound: float
    ) -> str | None:
        """Connect ``transport`` again within ``bound`` seconds: None if it is back, else why
        not. Whether the server spoke in it decides whether the watch resumes."""
        heard: list[State] = []  # any phase past "connecting": the server has spoken
        died: list[str] = []
        self.timed_out = False

        def lost(reason: str) -> None:
            died.append(reason)
            on_lost(reason)

        try:
            async with asyncio.timeout(bound):
                await transport.connect(heard.append, lost)
        except TransportUnreachableError as exc:
            self.failed(silent=not heard)
            return exc.message
        except AccessRefused:  # a gateway's access has ended: no attempt can mend it
            raise
        except TetherError as exc:  # it answered and refused: a login, a host key, a config
            self.failed(silent=False)
            return exc.message
        except TimeoutError:
            self.failed(silent=not heard)
            self.timed_out = True
            return f"reconnect timed out after {bound:g}s"
        if died:  # connected, and lost again before it was counted as back
            self.failed(silent=False)
            return died[-1]
        return None

    def close(self) -> None:
        self._stop_watch()

    def _start_watch(self) -> None:
        if self.address is None or self._back or self._watch is not None:
            return
        self._watch = asyncio.ensure_future(greeting(*self.address))
        self._watch.add_done_callback(self._watched)

    def _stop_watch(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()

    def _watched(self, watch: asyncio.Task[None]) -> None:
        if watch is not self._watch:
            return  # stopped
        self._watch = None
        if watch.cancelled():
            return
        if watch.exception() is not None:
            # Not expected (its errors are connection errors, each a reason to try again), and
            # never fatal: the backoff alone paces the attempts, as without an address.
            log.debug("%s: watching the SSH server failed: %r", self.name, watch.exception())
            return
        self._back = True


class Attempts(Protocol):
    """What a tunnel hears of its reconnect attempts (tunnel.Tunnel is the one)."""

    def attempting(self, attempt: int) -> None:
        """Attempt number ``attempt`` (from 1) is about to wait for its pause and its turn."""

    def attempt_failed(self, attempt: int, reason: str) -> None: ...


async def reconnect(
    spec: TunnelSpec, transport: Transport, on_lost: LossCallback, hear: Attempts
) -> int | None:
    """Get ``transport`` back after a loss: attempts bounded by ``spec.reconnect_timeout`` (twice
    as long after one that ran out of time, up to SLOW_BOUND_MAX, unless connect_timeout sets
    it), each after its pause (``Outage.pause``) and in its turn (``turn``), until one connects
    or ``max_retries`` have failed.

    Returns the attempts it took, or None once it gives up (at once if reconnecting is off).
    ``on_lost`` goes to each connect, as the callback of the transport's next loss.
    """
    if not spec.reconnect:
        return None
    address = await transport.server_address()
    outage = Outage(Backoff(spec.backoff_initial, spec.backoff_max), address, spec.name)
    bound = spec.reconnect_timeout
    try:
        attempt = 0
        while spec.max_retries is None or attempt < spec.max_retries:
            attempt += 1
            hear.attempting(attempt)
            await outage.pause(attempt)
            async with turn(spec.name):
                reason = await outage.attempt(transport, on_lost, bound)
            if reason is None:
                ATTEMPTS.widen()
                return attempt
            hear.attempt_failed(attempt, reason)
            if outage.timed_out:
                if overloaded():
                    ATTEMPTS.narrow()
                if spec.ssh.connect_timeout is None:
                    bound = max(bound, min(bound * 2, SLOW_BOUND_MAX))
        return None
    finally:
        outage.close()
