"""Foreground mode: hold the tunnel open until a stop signal or `tether stop`, as systemd wants."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from tether.errors import TetherError
from tether.modes.drain import Ending, bound_ending, drain_for
from tether.modes.hosted import HostedTunnel, serve_until_end, start_all
from tether.modes.pidfile import NO_FILES, PidFile, ReadyFiles
from tether.modes.service import ServiceManager, ServiceReport
from tether.modes.signals import StopRequest, capture_stop_signals
from tether.protocol import Mode, State
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
    service: ServiceManager | None = None,
) -> int:
    """Run one tunnel until SIGINT, SIGTERM, SIGHUP or a control `stop`; that exits 0.

    ``parent_pipe`` is the write end of a pipe whose reader waits for readiness: if the reader
    goes away before then, nobody would ever learn of this tunnel, so it stops as on SIGHUP.
    ``service`` is what a service manager gave the process (a notify socket, listening
    sockets): the tunnel serves those sockets and reports its phases, readiness and end.
    """
    stop = StopRequest()
    loop = asyncio.get_running_loop()
    service = service if service is not None else ServiceManager()
    report = ServiceReport(service.notifier, spec, activated=bool(service.sockets))

    def phase(state: State) -> None:
        if on_phase is not None:
            on_phase(state)
        report.phase(state, hosted.tunnel)

    def parent_gone() -> None:
        assert parent_pipe is not None
        loop.remove_reader(parent_pipe)
        stop.set(signal.SIGHUP)

    if parent_pipe is not None:
        # epoll reports the write end of a pipe as readable (an error) once the reader closes.
        loop.add_reader(parent_pipe, parent_gone)
    try:
        with capture_stop_signals(stop):
            hosted = HostedTunnel(
                spec,
                registry,
                mode,
                on_stop=lambda: stop.set(CONTROL_STOP),
                on_phase=phase,
                entry_id=entry_id,
                log_file=log_file,
                sockets=service.sockets,
            )
            try:
                await start_all([hosted], stop)
            except TetherError as exc:
                report.stopping(exc.message)
                raise
            finally:
                if parent_pipe is not None:
                    loop.remove_reader(parent_pipe)
            drain = drain_for(spec, mode, "lost")  # or any failure: nothing graceful to wait for
            written: list[PidFile] = []
            try:
                record = hosted.record()
                written = files.create([record])
                on_ready(record)
                report.ready(record, hosted.tunnel)
                bound = await serve_until_end(hosted, stop)
                ending: Ending = (
                    bound_ending(bound)
                    if bound is not None
                    else "stop"
                    if stop.signum == CONTROL_STOP
                    else "signal"
                )
                drain = drain_for(spec, mode, ending)
            except TetherError as exc:
                report.stopping(exc.message)
                raise
            finally:
                report.stopping()  # before the drain, which may take a while
                await hosted.close(drain)
                for file in written:
                    file.remove()
    finally:
        report.close()
    return 0
