"""Foreground mode: hold the tunnel open until a stop signal, as a systemd service would."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from tether.errors import Interrupted
from tether.modes.pidfile import remove_pid_file, write_pid_file
from tether.modes.signals import StopRequest, capture_stop_signals
from tether.spec import TunnelSpec
from tether.transports.base import PhaseCallback
from tether.tunnel import Tunnel


async def start_until_ready(tunnel: Tunnel, stop: StopRequest) -> None:
    """Start ``tunnel``; a stop signal before it is ready cancels the start and raises."""
    starting = asyncio.ensure_future(tunnel.start())
    stopping = asyncio.ensure_future(stop.event.wait())
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if not starting.done():
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await tunnel.close()
        raise Interrupted("interrupted before the tunnel was ready", signum=stop.signum or 2)
    starting.result()


async def run_foreground(
    spec: TunnelSpec,
    *,
    on_ready: Callable[[Tunnel], None],
    on_phase: PhaseCallback | None = None,
    pid_file: Path | None = None,
) -> int:
    """Run one tunnel until SIGINT, SIGTERM or SIGHUP; a graceful stop exits 0."""
    stop = StopRequest()
    with capture_stop_signals(stop):
        tunnel = Tunnel(spec, on_phase=on_phase)
        await start_until_ready(tunnel, stop)
        try:
            if pid_file is not None:
                write_pid_file(pid_file)
            on_ready(tunnel)
            await stop.wait()
        finally:
            await tunnel.close()
            if pid_file is not None:
                remove_pid_file(pid_file)
    return 0
