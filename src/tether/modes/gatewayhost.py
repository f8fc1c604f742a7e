"""A gateway's relay, signer or agent, run as tether runs a tunnel: a registry entry (`tether
list` shows it with its live state), a control socket (`tether stop` ends it), readiness told to a
service manager (systemd's Type=notify), and, in the background, to the process that started
it (background.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from tether.control import ControlServer
from tether.entry import TunnelIdentity
from tether.modes.detached import Detached
from tether.modes.notify import Notifier
from tether.modes.report import Reporter
from tether.modes.signals import StopRequest, capture_stop_signals
from tether.protocol import Status
from tether.record import TunnelInfo
from tether.registry import Registration, Registry
from tether.spec import Endpoint
from tether.states import Mode

CONTROL_STOP = 0  # the "signal" recorded when `tether stop` asks


class Service(Protocol):
    """What a relay and an agent offer their host."""

    def status(self) -> Status: ...

    async def run(self, on_ready: Callable[[], None], stop: StopRequest) -> int: ...


@dataclass(frozen=True)
class Described:
    """How a service shows in the registry: its kind, its name, where it listens, what it
    serves (the gateway's directory, or the agent's site) and through what."""

    kind: str
    name: str
    listen: Endpoint
    serves: str
    via: str | None = None


class HostedService:
    """``service`` registered and controllable while it runs."""

    def __init__(
        self,
        service: Service,
        described: Described,
        registry: Registry,
        mode: Mode,
        reporter: Reporter,
        *,
        entry_id: str | None = None,
        log_file: str | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.service = service
        self.described = described
        self.registry = registry
        self.mode = mode
        self.reporter = reporter
        self.entry_id = entry_id
        self.log_file = log_file
        self.notifier = notifier
        self.stop = StopRequest()
        self._registration: Registration | None = None
        self._ready_at: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def run(self) -> int:
        """Register, serve control, run the service until a stop signal or `tether stop`;
        whatever happens, the entry and the control socket go with it."""
        with capture_stop_signals(self.stop):
            await self._register()
            assert self._registration is not None
            control = ControlServer(
                self.registry.paths(self._registration.entry.id)["sock"],
                self.status,
                lambda: self.stop.set(CONTROL_STOP),
            )
            try:
                await control.start()
                return await self.service.run(self._ready, self.stop)
            except BaseException as exc:
                self._notify(f"STATUS={exc}")
                raise
            finally:
                if self._timer is not None:
                    self._timer.cancel()
                self._notify("STOPPING=1", "STATUS=stopping")
                await control.close()
                self._registration.remove()
                if self.notifier is not None:
                    self.notifier.close()

    async def _register(self) -> None:
        d = self.described
        identity = TunnelIdentity(
            name=d.name,
            target_host=d.serves,
            target_port=0,
            socks=False,
            allow=(),
            via=d.via,
            engine="openssh",
        )
        async with self.registry.reserving([d.listen.host], d.listen.port):
            self._registration = self.registry.register(
                identity,
                mode=self.mode,
                addresses=[d.listen.host],
                local_port=d.listen.port,
                log_file=self.log_file,
                entry_id=self.entry_id,
                kind=d.kind,
            )

    def status(self) -> Status:
        status = self.service.status()
        uptime = None if self._ready_at is None else round(time.monotonic() - self._ready_at, 3)
        return replace(status, uptime=uptime)

    def record(self) -> TunnelInfo:
        assert self._registration is not None
        return TunnelInfo(self._registration.entry, self.status())

    def _ready(self) -> None:
        self._ready_at = time.monotonic()
        record = self.record()
        self._notify("READY=1", f"STATUS={self.described.kind} {record.name} ready")
        self._tick()
        self.reporter.ready([record])

    def _tick(self) -> None:
        """Feed the service manager's watchdog while the service serves: ready, or an agent
        reconnecting some relays while others are linked (an agent whose links are all down
        does not serve: it gets restarted after WatchdogSec)."""
        if self.notifier is None or self.notifier.watchdog is None:
            return
        status = self.service.status()
        if status.state == "ready" or (
            status.state == "reconnecting" and status.connections_active
        ):
            self._notify("WATCHDOG=1")
        self._timer = asyncio.get_running_loop().call_later(self.notifier.watchdog, self._tick)

    def _notify(self, *fields: str) -> None:
        if self.notifier is not None:
            self.notifier.send(*fields)


def launch_service(
    service: Service,
    described: Described,
    reporter: Reporter,
    *,
    background: bool,
    timeout: float,
) -> int:
    """Run ``service`` here until it should end (foreground: a service manager's notify
    socket is used), or detached, returning once it is ready (background)."""
    from tether import paths
    from tether.modes import runtime

    registry = Registry.default()
    if background:
        from tether.modes.background import detach

        def body(place: Detached, child: Reporter) -> int:
            hosted = HostedService(
                service,
                described,
                registry,
                "background",
                child,
                entry_id=place.entry_id,
                log_file=str(place.log_file),
            )
            return runtime.run(hosted.run())

        return detach(body, registry, reporter, paths.log_directory(), timeout)
    hosted = HostedService(
        service, described, registry, "foreground", reporter, notifier=Notifier.from_environ()
    )
    return runtime.run(hosted.run())
