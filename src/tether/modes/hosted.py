"""A tunnel as every mode runs it: reserved and registered, with a control endpoint."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

from tether.control import ControlServer
from tether.registry import Registration, Registry
from tether.spec import TunnelSpec
from tether.transports.base import PhaseCallback
from tether.tunnel import Tunnel, not_ready


class HostedTunnel:
    """Tunnel + registry entry + control socket, started and closed together.

    The port is checked against other tether tunnels and bound under the registry lock, so of
    several concurrent starts on one port exactly one wins.
    """

    def __init__(
        self,
        spec: TunnelSpec,
        registry: Registry,
        mode: str,
        *,
        on_stop: Callable[[], Awaitable[None] | None],
        on_phase: PhaseCallback | None = None,
        entry_id: str | None = None,
        log_file: str | None = None,
    ) -> None:
        self.spec = spec
        self.registry = registry
        self.mode = mode
        self.tunnel = Tunnel(spec, on_phase=on_phase)
        self._on_stop = on_stop
        self._entry_id = entry_id
        self._log_file = log_file
        self.registration: Registration | None = None
        self._control: ControlServer | None = None

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
                async with self.registry.reserving(addresses, spec.listen.port):
                    self.tunnel.bind()
                    address = self.tunnel.address
                    assert address is not None
                    self.registration = self.registry.register(
                        entry_id=self._entry_id,
                        name=spec.name,
                        mode=self.mode,
                        addresses=self.tunnel.addresses,
                        local_port=address.port,
                        target_host=spec.target.host,
                        target_port=spec.target.port,
                        via=str(spec.via) if spec.via else None,
                        log_file=self._log_file,
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

    def ready_record(self) -> dict[str, Any]:
        """The stable, machine-readable description of a ready tunnel (`start --json`)."""
        address = self.tunnel.address
        assert address is not None
        via = self.spec.via
        return {
            "id": self.id,
            "name": self.spec.name,
            "local_host": address.host,
            "local_port": address.port,
            "target": str(self.spec.target),
            "via": str(via) if via else None,
            "pid": os.getpid(),
        }

    def status(self) -> dict[str, Any]:
        stats = self.tunnel.stats()
        return {
            "state": stats.state,
            "uptime": round(stats.uptime, 3) if self.tunnel.ready_once else None,
            "reconnect_attempt": stats.reconnect_attempt,
            "reconnects": stats.reconnects,
            "ttl_left": _rounded(stats.ttl_left),
            "idle_left": _rounded(stats.idle_left),
            "connections_active": stats.active,
            "connections_total": stats.total,
            "bytes_in": stats.bytes_from_target,
            "bytes_out": stats.bytes_to_target,
            "last_error": stats.last_error,
        }

    async def close(self, drain: float = 0.0) -> None:
        """Close the tunnel (draining up to ``drain`` s), then drop the control socket and the
        entry; idempotent."""
        try:
            await self.tunnel.close(drain)
        finally:
            if self._control is not None:
                await self._control.close()
            if self.registration is not None:
                self.registration.remove()


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)
