"""How a mode tells whoever started it what happens: each phase, readiness, and a failure.

The command line shows them on the terminal (a spinner, the banner or the JSON record, a
one-line error); the Python API and the shell say nothing (``Quiet``); a background tunnel's
child tells its parent through the ready pipe (background.py), and its log through the reporter
that ``detached`` gives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from tether.errors import TetherError
from tether.states import State
from tether.record import TunnelInfo


class Reporter(Protocol):
    """What a mode says while it starts, once it is ready, and when it fails."""

    def phase(self, state: State) -> None:
        """A tunnel moved on: binding, connecting, authenticating, probing, ..."""

    def ready(self, records: Sequence[TunnelInfo], *, reused: bool = False) -> None:
        """Every tunnel is ready (or, ``reused``, was already running: `--reuse`); raising here
        (stdout is gone, say) undoes the start."""

    def failed(self, exc: BaseException) -> int:
        """Say why the start failed (where nobody else will: a detached child's log); return
        the exit status it means."""

    def detached(self) -> Reporter:
        """What a background tunnel's child reports with, into its log."""


def exit_status(exc: BaseException) -> int:
    """The exit status a failure means: tether's own carry theirs; anything else is a bug."""
    return exc.exit_code if isinstance(exc, TetherError) else 1


class Quiet:
    """Reports nothing: the Python API, the shell, tests."""

    def phase(self, state: State) -> None:
        pass

    def ready(self, records: Sequence[TunnelInfo], *, reused: bool = False) -> None:
        pass

    def failed(self, exc: BaseException) -> int:
        return exit_status(exc)

    def detached(self) -> Reporter:
        return self


QUIET: Reporter = Quiet()
