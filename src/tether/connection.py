"""A local connection's life, on either data path, from the accepted socket to its end:

    accepted -> the SOCKS request (a SOCKS tunnel) -> the hold (the transport is up, or comes
    back within ``hold``) -> the target reached (relay: a stream opened; handoff: the socket
    passed to the transport's process) -> linked -> run to its end

``Life.run`` wraps all of it: whichever way the connection goes, it ends there, through one
ladder of errors, with its client told what it should hear. A client that may have taken an EOF
for an answer is reset instead (SO_LINGER 0); a SOCKS client hears why first, when it can:
"network unreachable" after the hold, the target's failure (and then a clean close) before
success.

When a SOCKS client hears success depends on the path. On the relay path the stream to the
target is opened first, so the client hears success or why not. On the handoff path success goes
out before the socket is handed over, as `ssh -D` sends it before it opens the channel: once the
transport's process holds the socket, the target's first bytes could reach the client ahead of a
reply sent later. A target that refuses then ends the connection with a reset, right after the
success.

``Connections`` holds a tunnel's open connections: it gives each accepted socket its life on the
one data path the tunnel's transport has, a slot (slots.py) and its share of the buffer budget,
and ends them all when the transport is lost or the tunnel closes. Both talk to the tunnel
through ``Host``, and never import tunnel.py.
"""

from __future__ import annotations

import asyncio
import socket
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from functools import partial
from typing import Protocol

from tether.errors import TetherError
from tether.handoff import Forward
from tether.relay import WRITE_HIGH_WATER, Relay, high_water_for
from tether.slots import Slots
from tether.socks import Reply
from tether.socksserve import SocksClient, SocksHost
from tether.spec import Endpoint
from tether.stats import Counters
from tether.tcp import linger_zero
from tether.transports.base import Forwarding, HandoffTransport, RelayingTransport, Transport


class Connection(Protocol):
    """What the tunnel holds of each open connection, on either path: relay.Relay (tether moves
    the bytes) and handoff.Forward (another process does)."""

    linked: bool  # the target is reached, and the bytes may flow

    def link(self) -> None: ...
    def close(self) -> None: ...
    def abort(self, *, reset_peers: bool = True) -> None: ...
    def sync(self) -> None: ...
    def limit(self, high: int) -> None: ...


class Host(SocksHost, Protocol):
    """What connections need of their tunnel (tunnel.Tunnel is the one)."""

    async def until_up(self) -> None:
        """Return once the transport is up; TimeoutError once it has been down for the hold."""

    def held_too_long(self) -> None:
        """Say that a connection waited out the hold (it is then reset)."""


class _Gone(ConnectionError):
    """The client left before it was linked: its reply could not be sent."""


class Life(ABC):
    """One accepted connection, from its socket to its end (see the module's docstring)."""

    connection: Connection

    def __init__(self, connections: Connections, sock: socket.socket) -> None:
        self.connections = connections
        self.host = host = connections.host
        self.sock = sock
        self.client = SocksClient(sock, host) if host.spec.socks else None
        self.answered = False  # the SOCKS client has heard success
        self.owns_sock = True  # the socket is not yet a transport's or a Forward's to close

    def start(self) -> asyncio.Task[None]:
        task = asyncio.ensure_future(self.run())
        # A task cancelled (by the tunnel's close) before it ran never reached run().
        task.add_done_callback(lambda done: self.sock.close() if done.cancelled() else None)
        return task

    async def run(self) -> None:
        """The whole life, and the one place that ends the connection, whatever happens."""
        try:
            target = await self._target()
            if target is None:  # a SOCKS client answered already, or not one at all
                self._close()
                return
            await self._before_hold()
            await self.host.until_up()
            await self._reach(target)
            self.connection.link()
            await self._run_to_end()
        except TimeoutError:  # the transport stayed down for the hold
            self.host.held_too_long()
            if self.client is not None and not self.answered:
                self.client.answer(Reply.NETWORK_UNREACHABLE)
            self._abort(reset=True)
        except TetherError as exc:  # the target cannot be reached
            self.host.failed("connect", exc.message)
            if self.client is not None and not self.answered:
                self.client.failed(exc)  # it hears why, then a clean close
                self._abort(reset=False)
            else:
                self._abort(reset=True)
        except OSError:  # the client left before it was linked
            self._abort(reset=True)
        except asyncio.CancelledError:  # the tunnel is closing (or, mid-handshake, needs room)
            self._abort(reset=False)
            raise

    async def _target(self) -> Endpoint | None:
        if self.client is None:
            assert self.host.spec.target is not None
            return self.host.spec.target
        return await self.connections.admit(self.client)

    def _succeeded(self, client: SocksClient) -> None:
        """Tell the SOCKS client that its target is (about to be) reached."""
        self.answered = True
        if not client.answer(Reply.SUCCEEDED):
            raise _Gone("the SOCKS client is gone")

    @abstractmethod
    async def _before_hold(self) -> None:
        """What the path does before it waits for the transport."""

    @abstractmethod
    async def _reach(self, target: Endpoint) -> None:
        """Reach ``target`` through the transport: TetherError if it cannot be."""

    @abstractmethod
    async def _run_to_end(self) -> None:
        """Once linked: wait for the connection's end, if the path has to."""

    def _close(self) -> None:
        """The quiet end: nothing was relayed."""
        if self.owns_sock:
            self.sock.close()
        self.connection.close()

    def _abort(self, *, reset: bool) -> None:
        """Drop the connection; ``reset`` sends the client (and the target) a reset."""
        if self.owns_sock:
            if reset:
                linger_zero(self.sock)
            self.sock.close()
        self.connection.abort(reset_peers=reset)


class Relaying(Life):
    """The relay path: tether pumps the bytes between the client and a stream it opens."""

    def __init__(
        self, transport: RelayingTransport, connections: Connections, sock: socket.socket
    ) -> None:
        super().__init__(connections, sock)
        self.transport = transport
        # A SOCKS tunnel holds the target's bytes too, until the client has heard success.
        hold = self.client is not None
        high = connections.high_water
        self.relay = Relay(connections.counters, connections.done, high, hold=hold)
        self.connection = self.relay

    async def _before_hold(self) -> None:
        if self.client is None:
            # Attached at once, so that a client that leaves while its connection waits for
            # the transport ends it (and frees its slot) then.
            await self._attach()

    async def _reach(self, target: Endpoint) -> None:
        await self.transport.open(target, self.relay.remote)
        if self.client is not None:
            # Success first, then the target's bytes: the relay holds them until linked.
            self._succeeded(self.client)
            await self._attach()

    async def _run_to_end(self) -> None:
        """Nothing to wait for: the relay's callbacks move the bytes, and end it."""

    async def _attach(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.connect_accepted_socket(lambda: self.relay.local, self.sock)
        self.owns_sock = False


class HandingOff(Life):
    """The handoff path: the transport's process moves the bytes until it ends the forward."""

    def __init__(
        self, transport: HandoffTransport, connections: Connections, sock: socket.socket
    ) -> None:
        super().__init__(connections, sock)
        self.transport = transport
        # Before a SOCKS client is answered, its bytes are the handshake's, not the target's.
        counting = self.client is None
        self.forward = Forward(connections.counters, connections.done, sock, counting=counting)
        self.connection = self.forward
        self.owns_sock = False  # the Forward closes it, last of every copy
        self.forwarding: Forwarding | None = None

    async def _before_hold(self) -> None:
        """Nothing: the socket is the Forward's already."""

    async def _reach(self, target: Endpoint) -> None:
        if self.client is not None:
            # Before the handoff: once the process holds the socket, the target may speak.
            self._succeeded(self.client)
            self.forward.count_from(self.client.read, self.client.written)
        self.forwarding = await self.transport.forward(target, self.sock)

    async def _run_to_end(self) -> None:
        assert self.forwarding is not None
        try:
            orderly = await self.forwarding.ended()
        finally:
            self.forwarding.close()
        if orderly:
            self.forward.close()
        else:
            self.forward.abort()  # cut off by the transport's death: a reset, never an EOF


def _life_for(transport: Transport) -> Callable[[Connections, socket.socket], Life]:
    """How each connection lives: on the one data path ``transport`` has."""
    if isinstance(transport, HandoffTransport):
        return partial(HandingOff, transport)
    if isinstance(transport, RelayingTransport):
        return partial(Relaying, transport)
    raise TypeError(f"{type(transport).__name__} has no data path")


class Connections:
    """A tunnel's open connections (see the module's docstring). ``on_full(full)`` hears whether
    every slot is taken, ``on_idle(idle)`` whether none is open, after each change."""

    def __init__(
        self,
        host: Host,
        transport: Transport,
        counters: Counters,
        *,
        on_full: Callable[[bool], None],
        on_idle: Callable[[bool], None],
    ) -> None:
        self.host = host
        self.counters = counters
        self.high_water = WRITE_HIGH_WATER  # each relayed connection's share of the budget
        self.drained = asyncio.Event()  # none is open
        self.drained.set()
        self.on_idle = on_idle
        self._life = _life_for(transport)
        self._slots = Slots(counters, host.spec.max_connections, on_full, name=host.spec.name)
        self._open: set[Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def __iter__(self) -> Iterator[Connection]:
        return iter(list(self._open))

    def accept(self, sock: socket.socket) -> None:
        """Serve a socket the listener accepted."""
        life = self._life(self, sock)
        self._open.add(life.connection)
        self.drained.clear()
        self.on_idle(False)
        self._rebalance()
        task = life.start()
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if life.client is not None:
            self._slots.handshaking(sock, task)
        self._slots.check()

    async def admit(self, client: SocksClient) -> Endpoint | None:
        """The target a SOCKS client asks for (``SocksClient.request``), once it holds a slot:
        it waits for one while max_connections are served."""
        return await self._slots.admit(client.sock, client.request())

    def done(self, connection: Connection) -> None:
        """``connection`` has ended."""
        self._open.discard(connection)
        self._rebalance()
        self._slots.check()
        if self.counters.connections_active == 0:
            self.drained.set()
            self.on_idle(True)

    def sync(self) -> None:
        """Bring the byte counters up to date (a handed-off connection's are read when asked)."""
        for connection in self._open:
            connection.sync()

    def cut(self) -> None:
        """The transport is lost: the linked connections cannot outlive it, and are reset."""
        for connection in list(self._open):
            if connection.linked:
                connection.abort()

    def end(self) -> None:
        """The tunnel is closing: every connection ends now, in order (no reset)."""
        for task in self._tasks:
            task.cancel()
        for connection in list(self._open):
            connection.abort(reset_peers=False)

    def _rebalance(self) -> None:
        """Share the tunnel's buffer budget among its open connections."""
        high = high_water_for(self.counters.connections_active)
        if high != self.high_water:
            self.high_water = high
            for connection in self._open:
                connection.limit(high)
