"""Foreground mode: hold the tunnel open until a stop signal or `tether stop`, as systemd wants."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from tether.modes.hosted import HostedTunnel, serve_until_end, start_all
from tether.modes.pidfile import NO_FILES, PidFile, ReadyFiles
from tether.modes.signals import StopRequest, capture_stop_signals
from tether.protocol import Mode
from tether.record import TunnelInfo
from tether.registry import Registry
from tether.spec import TunnelSpec
from tether.transports.base import PhaseCallback

CONTROL_STOP = 0  # the "signal number" recorded when `tether stop` asks us to stop


async def run_foreground(
    spec: TunnelSpec,
    registry: Registry,
    *,
    on_ready: Callable[[TunnelInfo], None],
    on_phase: PhaseCallback | None = None,
    files: ReadyFiles = NO_FILES,
    mode: Mode = "foreground",
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
        written: list[PidFile] = []
        try:
            record = hosted.record()
            written = files.create([record])
            on_ready(record)
            await serve_until_end(hosted, stop)
            drain = spec.drain
        finally:
            await hosted.close(drain)
            for file in written:
                file.remove()
    return 0
