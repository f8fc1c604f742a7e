"""Foreground mode: hold the tunnel open until a stop signal or `tether stop`, as systemd wants."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tether.errors import Interrupted
from tether.modes.hosted import HostedTunnel
from tether.modes.pidfile import PidFile
from tether.modes.signals import StopRequest, capture_stop_signals
from tether.registry import Registry
from tether.spec import TunnelSpec
from tether.transports.base import PhaseCallback

CONTROL_STOP = 0  # the "signal number" recorded when `tether stop` asks us to stop


async def start_all(tunnels: Sequence[HostedTunnel], stop: StopRequest) -> None:
    """Start every tunnel; all must get ready, or none is left open.

    A stop signal before then cancels the starts and raises Interrupted; otherwise the first
    failure (in the order given) is raised.
    """
    starting: asyncio.Future[Any] = asyncio.gather(
        *(t.start() for t in tunnels), return_exceptions=True
    )
    stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.event.wait())
    try:
        await asyncio.wait([starting, stopping], return_when=asyncio.FIRST_COMPLETED)
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


async def run_foreground(
    spec: TunnelSpec,
    registry: Registry,
    *,
    on_ready: Callable[[HostedTunnel], None],
    on_phase: PhaseCallback | None = None,
    pid_file: Path | None = None,
    mode: str = "foreground",
    entry_id: str | None = None,
    log_file: str | None = None,
    parent_pipe: int | None = None,
) -> int:
    """Run one tunnel until SIGINT, SIGTERM, SIGHUP or a control `stop`; that exits 0.

    ``parent_pipe`` is the write end of a pipe whose reader waits for readiness: if the reader
    goes away before then, nobody would ever learn of this tunnel, so it stops as on SIGHUP.
    """
    stop = StopRequest()
    loop = asyncio.get_running_loop()

    def parent_gone() -> None:
        assert parent_pipe is not None
        loop.remove_reader(parent_pipe)
        stop.set(signal.SIGHUP)

    if parent_pipe is not None:
        # epoll reports the write end of a pipe as readable (an error) once the reader closes.
        loop.add_reader(parent_pipe, parent_gone)
    with capture_stop_signals(stop):
        hosted = HostedTunnel(
            spec,
            registry,
            mode,
            on_stop=lambda: stop.set(CONTROL_STOP),
            on_phase=on_phase,
            entry_id=entry_id,
            log_file=log_file,
        )
        try:
            await start_all([hosted], stop)
        finally:
            if parent_pipe is not None:
                loop.remove_reader(parent_pipe)
        drain = 0.0
        written: PidFile | None = None
        try:
            if pid_file is not None:
                written = PidFile.create(pid_file)
            on_ready(hosted)
            await serve_until_end(hosted, stop)
            drain = spec.drain
        finally:
            await hosted.close(drain)
            if written is not None:
                written.remove()
    return 0


async def serve_until_end(hosted: HostedTunnel, stop: StopRequest) -> None:
    """Serve until a stop request or a lifetime bound; raises TunnelLostError if the tunnel is
    lost for good."""
    ended = asyncio.ensure_future(hosted.tunnel.wait_ended())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([ended, stopping], return_when=asyncio.FIRST_COMPLETED)
    finally:
        ended.cancel()
        stopping.cancel()
    if ended.done() and not ended.cancelled():
        ended.result()
