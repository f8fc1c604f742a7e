"""`tether start` after parsing: the mode that runs the tunnels, and `--reuse` before it.

The command line builds a ``Launch`` and a reporter and calls ``launch``; everything from here on
(signals, forks, the service manager, the registry) is the modes' business.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from tether import paths
from tether.modes.activation import refuse_passed_sockets
from tether.modes.pidfile import ReadyFiles
from tether.modes.report import Reporter
from tether.modes.signals import interrupting
from tether.states import State
from tether.record import TunnelInfo
from tether.registry import Registry
from tether.spec import TunnelSpec
from tether.transports.prelogin import logins_begun

if TYPE_CHECKING:
    from tether.modes.service import ServiceManager

StartMode = Literal["foreground", "background", "run"]


@dataclass(frozen=True)
class Launch:
    """A parsed `tether start`: what to open, and which mode runs it."""

    specs: tuple[TunnelSpec, ...]
    mode: StartMode
    command: str | tuple[str, ...] | None  # run mode's: a shell line, or an argv
    files: ReadyFiles
    reuse: bool


def launch(req: Launch, registry: Registry, reporter: Reporter) -> int:
    """Start in the mode asked (first, with ``reuse``, look for the tunnel running already);
    the exit status."""
    # What systemd passed (a notify socket, listening sockets), taken before anything starts;
    # sockets passed to a mode that would not serve them are refused (exit 2). Only foreground
    # mode loads the service manager's module (and asyncio with it) here: the others begin
    # their SSH logins first (prelogin.py).
    service = None
    if req.mode == "foreground":
        from tether.modes.service import ServiceManager

        service = ServiceManager.from_environ(foreground=True)
    else:
        refuse_passed_sockets(os.environ, os.getpid())
    if not req.reuse:
        return _start(req, registry, reporter, service)
    from tether.modes.reuse import ReuseLock, find_reusable

    # The lock is held until the started tunnel is ready, so that a concurrent --reuse finds it.
    with ReuseLock(registry, req.specs[0]) as lock:
        found = find_reusable(registry, req.specs[0])
        if found is not None:
            reporter.ready([found], reused=True)
            return 0
        releasing = _Releasing(reporter, lock.release)
        return _start(req, registry, releasing, service)


def _start(
    req: Launch, registry: Registry, reporter: Reporter, service: ServiceManager | None
) -> int:
    if req.mode == "background":
        from tether.modes.background import run_background

        logs = paths.log_directory()
        return run_background(req.specs[0], registry, reporter, logs, files=req.files)
    with interrupting(), logins_begun(req.specs, registry.directory):  # while the rest loads
        from tether.modes import runtime

        if req.mode == "run":
            from tether.modes.run import run_command

            assert req.command is not None
            run = run_command(req.specs, registry, req.command, reporter, files=req.files)
            return runtime.run(run)
        from tether.modes.foreground import Foreground

        foreground = Foreground(req.specs[0], registry, reporter, files=req.files, service=service)
        return runtime.run(foreground.run())


class _Releasing:
    """A reporter that also releases the --reuse lock once the tunnel is ready."""

    def __init__(self, reporter: Reporter, release: Callable[[], None]) -> None:
        self._reporter = reporter
        self._release = release

    def phase(self, state: State) -> None:
        self._reporter.phase(state)

    def ready(self, records: Sequence[TunnelInfo], *, reused: bool = False) -> None:
        self._reporter.ready(records, reused=reused)
        self._release()

    def failed(self, exc: BaseException) -> int:
        return self._reporter.failed(exc)

    def detached(self) -> Reporter:
        return self._reporter.detached()
