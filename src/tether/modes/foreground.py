"""Foreground mode: hold the tunnel open until a stop signal or `tether stop`, as systemd wants.

Three phases, as a server's: startup (start the tunnel, then announce it: pid and JSON files,
the reporter, the service manager), serve (until a stop signal, `tether stop`, a lifetime bound
or the loss of the transport), shutdown (drain as the mode's rule says, close, remove the
files). A background tunnel's child runs this same mode, detached (background.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator

from tether.errors import TetherError
from tether.modes.detached import Detached
from tether.modes.drain import Ending, bound_ending, drain_for
from tether.modes.hosted import HostedTunnel, serve_until_end, start_all
from tether.modes.pidfile import NO_FILES, PidFile, ReadyFiles
from tether.modes.report import Reporter
from tether.modes.service import ServiceManager, ServiceReport
from tether.modes.signals import StopRequest, capture_stop_signals
from tether.states import Mode, State
from tether.registry import Registry
from tether.spec import TunnelSpec

CONTROL_STOP = 0  # the "signal number" recorded when `tether stop` asks us to stop


class Foreground:
    """One tunnel, held in this process until it should end; ``run`` returns 0 then.

    ``service`` is what a service manager gave the process (a notify socket, listening
    sockets): the tunnel serves those sockets and reports its phases, readiness and end.
    """

    def __init__(
        self,
        spec: TunnelSpec,
        registry: Registry,
        reporter: Reporter,
        *,
        files: ReadyFiles = NO_FILES,
        service: ServiceManager | None = None,
        detached: Detached | None = None,
    ) -> None:
        self.spec = spec
        self.mode: Mode = "background" if detached is not None else "foreground"
        self.reporter = reporter
        self.files = files
        self.detached = detached
        self.stop = StopRequest()
        service = service if service is not None else ServiceManager()
        self.service = ServiceReport(service.notifier, spec, activated=bool(service.sockets))
        self.hosted = HostedTunnel(
            spec,
            registry,
            self.mode,
            on_stop=lambda: self.stop.set(CONTROL_STOP),
            on_phase=self._phase,
            entry_id=detached.entry_id if detached else None,
            log_file=str(detached.log_file) if detached else None,
            sockets=service.sockets,
        )
        self._written: list[PidFile] = []

    async def run(self) -> int:
        try:
            with capture_stop_signals(self.stop):
                await self.startup()
                ending: Ending = "lost"  # or any failure: nothing graceful to wait for
                try:
                    ending = await self.serve()
                except TetherError as exc:
                    self.service.stopping(exc.message)
                    raise
                finally:
                    await self.shutdown(ending)
        finally:
            self.service.close()
        return 0

    async def startup(self) -> None:
        """Start the tunnel (a stop signal meanwhile interrupts it), then announce it; a
        failure leaves nothing started."""
        try:
            with self._watching_parent():
                await start_all([self.hosted], self.stop)
        except TetherError as exc:
            self.service.stopping(exc.message)
            raise
        try:
            record = self.hosted.record()
            self._written = self.files.create([record])
            self.reporter.ready([record])
            self.service.ready(record, self.hosted.tunnel)
        except BaseException as exc:
            if isinstance(exc, TetherError):
                self.service.stopping(exc.message)
            await self.shutdown("lost")
            raise

    async def serve(self) -> Ending:
        """Serve until the tunnel should end; how it ended."""
        bound = await serve_until_end(self.hosted, self.stop)
        if bound is not None:
            return bound_ending(bound)
        return "stop" if self.stop.signum == CONTROL_STOP else "signal"

    async def shutdown(self, ending: Ending) -> None:
        """Drain as the mode's rule says for ``ending``, close, and remove the files."""
        self.service.stopping()  # before the drain, which may take a while
        try:
            await self.hosted.close(drain_for(self.spec, self.mode, ending))
        finally:
            for file in self._written:
                file.remove()
            self._written = []

    def _phase(self, state: State) -> None:
        self.reporter.phase(state)
        self.service.phase(state, self.hosted.tunnel)

    @contextlib.contextmanager
    def _watching_parent(self) -> Iterator[None]:
        """While starting, a detached child watches its ready pipe: epoll reports the write end
        of a pipe as readable (an error) once the reader (the parent) has closed it."""
        if self.detached is None:
            yield
            return
        loop = asyncio.get_running_loop()
        pipe = self.detached.pipe

        def parent_gone() -> None:
            loop.remove_reader(pipe)
            self.stop.set(signal.SIGHUP)

        loop.add_reader(pipe, parent_gone)
        try:
            yield
        finally:
            loop.remove_reader(pipe)
