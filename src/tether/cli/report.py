"""What `tether start` shows on the terminal while its mode runs: the reporter of modes/report.py
that the command line implements, once for every mode."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Self

from tether.cli.render import Spinner, print_ready, show_error
from tether.modes.launch import Launch
from tether.modes.report import Reporter
from tether.states import State
from tether.record import TunnelInfo


class TerminalReporter:
    """A spinner while the tunnels start (on a terminal only), the banner or the JSON record
    once they are ready, and one line for a failure.

    The spinner's drawing thread starts with the first phase, never before: a background start
    forks first, and a fork must not copy a running thread.
    """

    def __init__(
        self,
        label: str,
        timeout: float,
        *,
        as_json: bool,
        hint: bool = True,
        json_to_stderr: bool = False,
        debug: bool = False,
    ) -> None:
        self._spinner = Spinner(label, timeout)  # it counts the seconds from now
        self._spinning = False
        self.as_json = as_json
        self.hint = hint
        self.json_to_stderr = json_to_stderr
        self.debug = debug

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._spinner.stop()

    def phase(self, state: State) -> None:
        if not self._spinning:
            self._spinning = True
            self._spinner.__enter__()
        self._spinner.phase(state)

    def ready(self, records: Sequence[TunnelInfo], *, reused: bool = False) -> None:
        self._spinner.stop()
        for record in records:
            print_ready(
                record,
                as_json=self.as_json,
                hint=self.hint and not reused,
                json_to_stderr=self.json_to_stderr,
                reused=reused,
            )

    def failed(self, exc: BaseException) -> int:
        return show_error(exc, debug=self.debug)

    def detached(self) -> Reporter:
        return LogReporter(debug=self.debug)


class LogReporter:
    """A background tunnel's log: its banner once ready, and why it failed."""

    def __init__(self, *, debug: bool) -> None:
        self.debug = debug

    def phase(self, state: State) -> None:
        pass

    def ready(self, records: Sequence[TunnelInfo], *, reused: bool = False) -> None:
        for record in records:
            print_ready(record, as_json=False, hint=False)

    def failed(self, exc: BaseException) -> int:
        return show_error(exc, debug=self.debug)

    def detached(self) -> Reporter:
        return self


def reporter_for(req: Launch, *, as_json: bool, debug: bool) -> TerminalReporter:
    """The terminal's view of ``req``: one spinner for all its tunnels; run mode's records go to
    stderr (the command's stdout is its own), and only a foreground tunnel says how to stop."""
    label = ", ".join(spec.name for spec in req.specs)
    timeout = max(spec.timeout for spec in req.specs)
    return TerminalReporter(
        label,
        timeout,
        as_json=as_json,
        hint=req.mode == "foreground",
        json_to_stderr=req.mode == "run",
        debug=debug,
    )
