"""A tunnel as every mode runs it: reserved and registered, with a control endpoint; and the
starting and serving of such tunnels that every mode shares."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Sequence

from tether.control import ControlServer
from tether.errors import Interrupted
from tether.modes.signals import StopRequest
from tether.protocol import Status
from tether.states import Mode
from tether.record import TunnelInfo
from tether.entry import TunnelIdentity
from tether.registry import Registration, Registry
from tether.spec import TunnelSpec
from tether.transports.base import PhaseCallback
from tether.tunnel import Tunnel, not_ready


class HostedTunnel:
    """Tunnel + registry entry + control socket, started and closed together.

    The port is checked against other tether tunnels and bound under the registry lock, so of
    several concurrent starts on one port exactly one wins. ``sockets`` are listening sockets
    bound by a service manager, served instead of binding (socket activation).
    """

    def __init__(
        self,
        spec: TunnelSpec,
        registry: Registry,
        mode: Mode,
        *,
        on_stop: Callable[[], Awaitable[None] | None],
        on_phase: PhaseCallback | None = None,
        entry_id: str | None = None,
        log_file: str | None = None,
        sockets: Sequence[socket.socket] | None = None,
    ) -> None:
        self.spec = spec
        self.registry = registry
        self.mode = mode
        self.tunnel = Tunnel(spec, on_phase=on_phase, sockets=sockets)
        self.tunnel.transport.runtime = registry.directory
        self._activated = bool(sockets)
        self._on_stop = on_stop
        self._entry_id = entry_id
        self._log_file = log_file
        self.registration: Registration | None = None
        self._control: ControlServer | None = None
        # Set by a second stop signal (start_all wires it to the StopRequest): a drain then
        # ends at once.
        self.hurry: asyncio.Event | None = None

    @property
    def id(self) -> str:
        assert self.registration is not None
        return self.registration.entry.id

    async def start(self) -> None:
        """Resolve, reserve, bind, register, serve control, then connect and probe: all within
        the spec's timeout, which covers waiting for the registry lock too."""
        spec = self.spec
        deadline = asyncio.get_running_loop().time() + spec.timeout
        try:
            async with asyncio.timeout_at(deadline):
                await self.tunnel.resolve()
                addresses = self.tunnel.listen_addresses
                # Sockets passed in are bound already, by their owner (systemd): there is no port
                # left to reserve, only an entry to write under the lock.
                port = 0 if self._activated else spec.listen.port
                async with self.registry.reserving(addresses, port):
                    self.tunnel.bind()
                    address = self.tunnel.address
                    assert address is not None
                    self.registration = self.registry.register(
                        TunnelIdentity.of(spec, self.tunnel.transport.engine),
                        mode=self.mode,
                        addresses=self.tunnel.addresses,
                        local_port=address.port,
                        log_file=self._log_file,
                        entry_id=self._entry_id,
                    )
                self._control = ControlServer(
                    self.registry.paths(self.id)["sock"], self.status, self._on_stop
                )
                await self._control.start()
        except TimeoutError:
            phase = self.tunnel.state
            await self.close()
            raise not_ready(spec, phase) from None
        except BaseException:
            await self.close()
            raise
        try:
            await self.tunnel.start(deadline)
        except BaseException:
            await self.close()
            raise

    def record(self) -> TunnelInfo:
        """The tunnel's public record, as `list --json` shows it (`start --json`)."""
        assert self.registration is not None
        return TunnelInfo(self.registration.entry, self.status())

    def status(self) -> Status:
        return Status.of(self.tunnel.stats(), ready_once=self.tunnel.ready_once)

    async def close(self, drain: float = 0.0) -> None:
        """Close the tunnel (draining up to ``drain`` s, or until ``hurry``), then drop the
        control socket and the entry; idempotent."""
        try:
            await self.tunnel.close(drain, self.hurry)
        finally:
            if self._control is not None:
                await self._control.close()
            if self.registration is not None:
                self.registration.remove()


async def start_all(tunnels: Sequence[HostedTunnel], stop: StopRequest) -> None:
    """Start every tunnel; all must get ready, or none is left open.

    A stop signal before then cancels the starts and raises Interrupted; otherwise the first
    failure (in the order given) is raised. From now on a second stop signal (``stop.hurry``)
    cuts the tunnels' drain short.
    """
    for hosted in tunnels:
        hosted.hurry = stop.hurry
    starting: asyncio.Future[list[BaseException | None]] = asyncio.gather(
        *(t.start() for t in tunnels), return_exceptions=True
    )
    stopping: asyncio.Future[bool] = asyncio.ensure_future(stop.event.wait())
    try:
        # Two futures of different result types, which asyncio.wait's stub cannot join.
        await asyncio.wait([starting, stopping], return_when=asyncio.FIRST_COMPLETED)  # type: ignore[type-var]
    finally:
        stopping.cancel()
    if not starting.done():
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await asyncio.gather(*(t.close() for t in tunnels))
        raise Interrupted("interrupted before the tunnel was ready", signum=stop.signum or 2)
    failures = [r for r in starting.result() if isinstance(r, BaseException)]
    if failures:
        await asyncio.gather(*(t.close() for t in tunnels))
        raise failures[0]


async def serve_until_end(hosted: HostedTunnel, stop: StopRequest) -> str | None:
    """Serve until a stop request or a lifetime bound; returns the bound that fired ("ttl",
    "idle"), None on a stop request; raises TunnelLostError if the tunnel is lost for good."""
    ended = asyncio.ensure_future(hosted.tunnel.wait_ended())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([ended, stopping], return_when=asyncio.FIRST_COMPLETED)
    finally:
        ended.cancel()
        stopping.cancel()
    if ended.done() and not ended.cancelled():
        return ended.result()
    return None
