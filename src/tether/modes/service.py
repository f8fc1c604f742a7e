"""A foreground tunnel under a service manager (systemd): the sockets it was given, and what it
tells the manager back (STATUS, READY, STOPPING, watchdog pings).

The watchdog is fed only while the tunnel is ready. A tunnel that stays reconnecting stops
feeding it, so a unit with WatchdogSec= gets restarted by its manager after that long; that is
intended. systemd arms the watchdog at READY=1, so no ping goes out before it either.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import MutableMapping
from dataclasses import dataclass

from tether.modes.activation import listen_sockets, refuse_passed_sockets
from tether.modes.notify import Notifier
from tether.states import DIRECT, State
from tether.record import TunnelInfo
from tether.spec import TunnelSpec
from tether.tunnel import Tunnel


@dataclass
class ServiceManager:
    """What the service manager gave this process; empty outside one."""

    notifier: Notifier | None = None
    sockets: list[socket.socket] | None = None

    @classmethod
    def from_environ(
        cls,
        *,
        foreground: bool,
        environ: MutableMapping[str, str] | None = None,
        pid: int | None = None,
    ) -> ServiceManager:
        """Take the notify socket and the passed sockets out of ``environ`` (os.environ).

        Only foreground mode talks to the manager: a background tunnel is not the process the
        manager started, and run mode's command inherits the environment untouched. Sockets
        passed to another mode are refused, since nothing would serve them.
        """
        environ = os.environ if environ is None else environ
        pid = os.getpid() if pid is None else pid
        if not foreground:
            refuse_passed_sockets(environ, pid)
            return cls()
        sockets = listen_sockets(environ, pid)
        return cls(Notifier.from_environ(environ, pid), sockets)


def status_of(state: State, spec: TunnelSpec, tunnel: Tunnel, *, activated: bool) -> str | None:
    """The STATUS= text of a phase, or None for a phase that says nothing new."""
    via = str(spec.via) if spec.via else None
    if state == "binding":
        return "taking the sockets passed in" if activated else "binding the local port"
    if state == "connecting":
        return f"connecting to {via or spec.reaches}"
    if state == "authenticating":
        return f"authenticating to {via}"
    if state == "probing":
        return f"probing {tunnel.probe_target}"
    if state == "reconnecting":
        if tunnel.reconnect_attempt == 0:
            return f"transport lost: {tunnel.last_error}; reconnecting"
        return f"reconnecting (attempt {tunnel.reconnect_attempt}): {tunnel.last_error}"
    return None


def ready_status(record: TunnelInfo) -> str:
    return f"ready on {record.address} -> {record.target} via {record.entry.via or DIRECT}"


class ServiceReport:
    """Tells the service manager what one foreground tunnel is doing; does nothing without a
    notifier."""

    def __init__(
        self, notifier: Notifier | None, spec: TunnelSpec, *, activated: bool = False
    ) -> None:
        self._notifier = notifier
        self._spec = spec
        self._activated = activated
        self._ready: str | None = None  # the ready STATUS, once READY=1 went out
        self._stopping = False
        self._tunnel: Tunnel | None = None
        self._timer: asyncio.TimerHandle | None = None

    def phase(self, state: State, tunnel: Tunnel) -> None:
        if self._notifier is None or self._stopping:
            return
        if state == "ready":
            # The first "ready" is the engine's; READY=1 waits for the mode (banner, pid file).
            # A later one is a reconnect: the watchdog is fed at once, the outage is over.
            if self._ready is not None:
                self._notifier.send(f"STATUS={self._ready}", "WATCHDOG=1")
            return
        text = status_of(state, self._spec, tunnel, activated=self._activated)
        if text is not None:
            self._notifier.send(f"STATUS={text}")

    def ready(self, record: TunnelInfo, tunnel: Tunnel) -> None:
        """READY=1: the port accepts, the transport is up, the target answered."""
        if self._notifier is None or self._stopping:
            return
        self._ready = ready_status(record)
        self._tunnel = tunnel
        self._notifier.send("READY=1", f"STATUS={self._ready}")
        if self._notifier.watchdog is not None:
            self._arm()

    def stopping(self, reason: str | None = None) -> None:
        """STOPPING=1, once, as closing begins; ``reason`` is the error that ends the tunnel."""
        if self._notifier is None or self._stopping:
            return
        self._stopping = True
        self._disarm()
        status = f"stopping: {reason}" if reason else "stopping"
        self._notifier.send("STOPPING=1", f"STATUS={status}")

    def close(self) -> None:
        self._disarm()
        if self._notifier is not None:
            self._notifier.close()

    def _arm(self) -> None:
        assert self._notifier is not None and self._notifier.watchdog is not None
        self._timer = asyncio.get_running_loop().call_later(self._notifier.watchdog, self._tick)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        assert self._notifier is not None and self._tunnel is not None
        if self._tunnel.state == "ready":
            self._notifier.send("WATCHDOG=1")
        self._arm()
