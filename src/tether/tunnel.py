"""The engine: a local listener, a transport, and a relay per accepted connection."""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from dataclasses import dataclass
from typing import Any, Self

from tether.errors import PortInUseError, ReadinessTimeoutError, TetherError, UsageError
from tether.relay import Counters, Relay
from tether.spec import Endpoint, TunnelSpec
from tether.transports import Transport, transport_for
from tether.transports.base import PhaseCallback

LISTEN_BACKLOG = 512


@dataclass(frozen=True)
class TunnelStats:
    """A snapshot of a tunnel's state and counters."""

    state: str
    local: Endpoint | None
    target: Endpoint
    via: str
    active: int
    total: int
    bytes_to_target: int
    bytes_from_target: int
    uptime: float
    last_error: str | None


class Tunnel:
    """One local port forwarded to one target through one transport.

    ``start()`` returns once the tunnel is ready: listening, connected, and (unless the spec says
    ``probe=False``) a probe stream to the target was opened and closed. It has no signals, no
    printing and no CLI, so tests, the shell and library users drive it alike.
    """

    def __init__(
        self,
        spec: TunnelSpec,
        transport: Transport | None = None,
        *,
        on_phase: PhaseCallback | None = None,
    ) -> None:
        self.spec = spec
        self.transport = transport if transport is not None else transport_for(spec)
        self._on_phase = on_phase
        self.state = "new"
        self.last_error: str | None = None
        self.counters = Counters()
        self._listener: socket.socket | None = None
        self._server: asyncio.Server | None = None
        self._relays: set[Relay] = set()
        self._pending: set[asyncio.Task[None]] = set()
        self._started_at: float | None = None
        self._closed = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind, connect and probe, all within ``spec.timeout`` seconds."""
        try:
            async with asyncio.timeout(self.spec.timeout):
                self.bind()
                assert self._listener is not None
                self._server = await asyncio.get_running_loop().create_server(
                    self._accept, sock=self._listener, start_serving=False
                )
                self._phase("connecting")
                await self.transport.connect(self._phase)
                if self.spec.probe:
                    self._phase("probing")
                    await self._probe()
        except TimeoutError:
            phase = self.state
            await self.close()
            raise ReadinessTimeoutError(
                f"tunnel not ready after {self.spec.timeout:g}s (still {phase})",
                hint="raise --timeout or check that the server answers",
            ) from None
        except BaseException:
            await self.close()
            raise
        assert self._server is not None
        await self._server.start_serving()
        self._started_at = time.monotonic()
        self._phase("ready")

    async def close(self) -> None:
        """Stop accepting, drop open connections and release the transport; idempotent."""
        if self.state == "closed":
            await self._closed.wait()
            return
        self.state = "closed"
        if self._server is not None:
            self._server.close()
        elif self._listener is not None:
            self._listener.close()
        for task in list(self._pending):
            task.cancel()
        for relay in list(self._relays):
            relay.abort()
        try:
            await self.transport.close()
        finally:
            if self._server is not None:
                await self._server.wait_closed()
            self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- state ----------------------------------------------------------------------------------
    @property
    def address(self) -> Endpoint | None:
        """The address actually bound (the real port when the spec asked for port 0)."""
        if self._listener is None or self._listener.fileno() < 0:
            return None
        host, port = self._listener.getsockname()[:2]
        return Endpoint(host, port)

    def stats(self) -> TunnelStats:
        c = self.counters
        return TunnelStats(
            state=self.state,
            local=self.address,
            target=self.spec.target,
            via=self.transport.label,
            active=c.active,
            total=c.total,
            bytes_to_target=c.bytes_to_target,
            bytes_from_target=c.bytes_from_target,
            uptime=time.monotonic() - self._started_at if self._started_at else 0.0,
            last_error=self.last_error,
        )

    # -- internals ------------------------------------------------------------------------------
    def _phase(self, phase: str) -> None:
        self.state = phase
        if self._on_phase:
            self._on_phase(phase)

    def bind(self) -> None:
        """Bind the listening socket now, without accepting yet; ``start`` does it if needed.

        Synchronous on purpose: a caller can bind while holding a port reservation lock without
        letting other coroutines of this process run in between.
        """
        if self._listener is not None:
            return
        self._phase("binding")
        listen = self.spec.listen
        try:
            # One address only: "localhost" may resolve to ::1 and 127.0.0.1, and with port 0
            # each would get a different port.
            family, kind, proto, _, address = socket.getaddrinfo(
                listen.host, listen.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
            sock = socket.socket(family, kind, proto)
        except socket.gaierror as exc:
            raise UsageError(f"cannot listen on {listen}: {exc.strerror}") from None
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(
                    f"local address {listen} is in use by another program",
                    hint="pick another --port, or 0 for any free port",
                ) from None
            if exc.errno in (errno.EADDRNOTAVAIL, errno.EACCES):
                raise UsageError(f"cannot listen on {listen}: {exc.strerror}") from None
            raise TetherError(f"cannot listen on {listen}: {exc.strerror or exc}") from None
        self._listener = sock

    async def _probe(self) -> None:
        """Open one stream to the target and close it: proof that the target answers."""
        relay = Relay(Counters(), lambda _r: None)
        conduit = await self.transport.open(self.spec.target, relay.remote)
        conduit.close()

    def _accept(self) -> Any:
        relay = Relay(self.counters, self._relays.discard)
        self._relays.add(relay)
        task = asyncio.ensure_future(self._connect(relay))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return relay.local

    async def _connect(self, relay: Relay) -> None:
        try:
            await self.transport.open(self.spec.target, relay.remote)
        except TetherError as exc:
            self.last_error = exc.message
            relay.abort()
            return
        relay.link()
