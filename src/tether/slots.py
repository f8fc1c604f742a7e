"""Who holds one of a tunnel's ``max_connections`` slots, and who waits for one.

A connection takes a slot as it is accepted, except a SOCKS one: its handshake is bounded apart
(``HANDSHAKE_LIMIT`` at once, the oldest of the busiest peer dropped for a new one), so that
clients that never say a word cannot take the slots of those being served, and once its request is
known it waits for a slot. While every slot is taken the listener pauses: new clients wait in the
kernel's backlog until a connection ends.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable

from tether.socksserve import HANDSHAKE_LIMIT
from tether.spec import Endpoint
from tether.stats import Counters

log = logging.getLogger("tether")


class Slots:
    """The slots of one tunnel; ``on_full(full)`` hears whether they are all taken, after each
    change."""

    def __init__(
        self,
        counters: Counters,
        limit: int,
        on_full: Callable[[bool], None],
        *,
        name: str,
        handshake_limit: int = HANDSHAKE_LIMIT,
    ) -> None:
        self.counters = counters
        self.limit = limit
        self.on_full = on_full
        self.name = name
        self.handshake_limit = handshake_limit
        # SOCKS connections still in their handshake, oldest first.
        self._handshakes: dict[socket.socket, asyncio.Task[None]] = {}
        self._queued = 0  # handshakes done, waiting for a slot
        self._room = asyncio.Event()  # fewer than ``limit`` are served
        self._room.set()

    def served(self) -> int:
        """Connections that hold a slot: not those still in a handshake, nor those queued."""
        return self.counters.connections_active - len(self._handshakes) - self._queued

    def check(self) -> None:
        """Take note of a connection that came or went."""
        full = self.served() >= self.limit
        if full:
            self._room.clear()
        else:
            self._room.set()
        self.on_full(full)

    def handshaking(self, sock: socket.socket, task: asyncio.Task[None]) -> None:
        """A SOCKS connection (its socket, and the task that serves it) begins its handshake."""
        if len(self._handshakes) >= self.handshake_limit:
            self._evict()
        self._handshakes[sock] = task

    async def admit(
        self, sock: socket.socket, request: Awaitable[Endpoint | None]
    ) -> Endpoint | None:
        """The target of the handshake of ``sock`` (``request``: see SocksClient.request); once
        it is known, the connection takes a slot, waiting for one while all are taken."""
        try:
            target = await request
        finally:
            self._handshakes.pop(sock, None)
        if target is None:
            return None
        self._queued += 1
        try:
            while self.served() >= self.limit:
                # Cleared here too: a set event would return at once, and this loop would spin
                # without yielding until the count it waits for could never change.
                self._room.clear()
                await self._room.wait()
        finally:
            self._queued -= 1
        self.check()
        return target

    def _evict(self) -> None:
        """Make room for a new handshake: end the oldest one of the peer that has the most, so
        that a client cannot keep another's handshake from being heard by never finishing
        its own."""
        peers: dict[str, list[socket.socket]] = {}
        for sock in self._handshakes:
            peers.setdefault(_peer_host(sock), []).append(sock)
        oldest = max(peers.values(), key=len)[0]
        # Its task ends the connection as it unwinds (see connection.py), once the loop has let
        # go of the socket: closing it from here could close a descriptor the loop still watches.
        self._handshakes.pop(oldest).cancel()
        log.debug("%s: dropped a SOCKS handshake for a newer one", self.name)


def _peer_host(sock: socket.socket) -> str:
    try:
        return str(sock.getpeername()[0])
    except OSError:
        return ""
