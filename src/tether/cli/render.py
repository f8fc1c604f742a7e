"""Rendering for people (banner, spinner, tables) and for programs (JSON).

rich is imported only for the spinner, and only on a terminal, so `tether list` starts fast.
"""

from __future__ import annotations

import errno
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TextIO

from tether.errors import OutputError, StopFailedError, TetherError, describe, visible
from tether.record import TunnelInfo
from tether.states import DIRECT
from tether.values import host_port

if TYPE_CHECKING:
    from tether.client import StopResult
    from tether.entry import Entry

PHASE_TEXT = {
    "binding": "binding the local port",
    "connecting": "connecting",
    "authenticating": "authenticating",
    "probing": "probing the target",
    "ready": "ready",
}


def on_terminal(stream: TextIO | None) -> bool:
    """Whether ``stream`` is a terminal; a standard stream that was closed at start is None."""
    return stream is not None and stream.isatty()


def echo(text: str, *, err: bool = False, end: str = "\n") -> None:
    """Print a line to stdout (or stderr) and flush it; a closed or broken stream is an
    OutputError, so that the caller can undo what the output was meant to announce."""
    name = "stderr" if err else "stdout"
    stream = sys.stderr if err else sys.stdout
    try:
        if stream is None:  # the descriptor was closed when tether started
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        stream.write(text + end)
        stream.flush()
    except (OSError, ValueError) as exc:
        if not err:
            # What is still buffered would fail again, noisily, when the interpreter exits.
            sys.stdout = open(os.devnull, "w")
        raise OutputError(f"cannot write to {name}: {describe(exc)}") from None


# Keys that are not tunnel options but flags of a command.
COMMAND_FLAGS = {"all": "--all"}


def flag_of(key: str) -> str:
    """The command line's flag for a tunnel option (or a command's own) named by its key."""
    from tether.config import OPTIONS  # here: only an error or a warning needs it

    flags = {opt.key: opt.cli_flag for opt in OPTIONS if opt.cli_flag}
    return flags.get(key) or COMMAND_FLAGS.get(key) or key


def with_flags(text: str, keys: tuple[str, ...]) -> str:
    """``text`` with the option keys it names shown as flags ("timeout" -> "--timeout")."""
    for key in keys:
        text = re.sub(rf"(?<![\w-]){re.escape(key)}(?![\w-])", flag_of(key), text)
    return text


def show_error(exc: BaseException, *, debug: bool) -> int:
    """Print one line for a failure (and the traceback with --debug); return its exit code.

    tether's own errors carry their code, Ctrl-C is 130, and anything else is a bug, reported
    as exit 1.
    """
    if debug:
        import traceback

        traceback.print_exception(exc)
    if isinstance(exc, KeyboardInterrupt):
        line, code = "tether: interrupted", 130
    elif isinstance(exc, TetherError):
        hint = exc.hint and with_flags(exc.hint, exc.options)
        line = f"tether: error: {exc.message}" + (f" ({hint})" if hint else "")
        code = exc.exit_code
    else:
        hint = "" if debug else " (run with --debug for details)"
        line, code = f"tether: error: internal error: {describe(exc)}{hint}", 1
    try:
        echo(visible(line), err=True)  # a value quoted in a message stays on its line
    except OutputError:
        pass  # stderr is gone too: the exit code is all that is left
    return code


def print_ready(
    record: TunnelInfo,
    *,
    as_json: bool,
    hint: bool = True,
    json_to_stderr: bool = False,
    reused: bool = False,
) -> None:
    """Announce readiness: the JSON record on stdout (stderr if asked), or a banner on stderr
    (which says so when an existing tunnel is ``reused``)."""
    if as_json:
        echo(json.dumps(record.to_json()), err=json_to_stderr)
        return
    entry = record.entry
    state = "already running" if reused else "ready"
    # A reused tunnel's record comes from another process's registry entry: whatever it holds,
    # no escape sequence or newline of it reaches the terminal.
    echo(
        visible(
            f"tether: {record.name} {state} on {host_port(entry.local_host, entry.local_port)}"
            f" -> {record.target}"
            + (
                ""
                if entry.kind != "tunnel" and entry.via is None
                else f" via {entry.via or DIRECT}"
            )
            + f" (id {record.id}, pid {record.pid})"
            + (f" with {entry.engine}" if entry.engine else "")
        ),
        err=True,
    )
    if hint and on_terminal(sys.stderr):
        echo("tether: press Ctrl-C to stop", err=True)


def human_bytes(count: int | None) -> str:
    if count is None:
        return "-"
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return f"{size:.1f}TiB"


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain aligned table: quick to print, and easy to read back with awk. A cell's control
    characters are shown escaped: a value cannot clear the screen or forge a row."""
    rows = [[visible(str(c)) for c in row] for row in rows]
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=False)]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip()
        for row in (headers, *rows)
    ]
    return "\n".join(lines)


class Spinner(AbstractContextManager["Spinner"]):
    """Shows the current startup phase on a terminal, and the seconds since the start against
    ``timeout`` (--timeout) when it is given; silent when stderr is not a TTY."""

    def __init__(
        self,
        label: str,
        timeout: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.timeout = timeout
        self._clock = clock
        self._started = clock()
        self._phase = "starting"
        self._status: Any = None

    def __enter__(self) -> Self:
        if on_terminal(sys.stderr):
            from rich.console import Console

            # rich redraws the line about 12 times a second, asking for its text each time
            # (__rich__): the count goes on between phases, at the cost of a format call.
            self._status = Console(stderr=True).status(self)
            self._status.start()
        return self

    def phase(self, phase: str) -> None:
        self._phase = PHASE_TEXT.get(phase, phase)

    def text(self) -> str:
        """The status line: "db: connecting (3s of 30s)", one line whatever the label holds."""
        line = f"{self.label}: {self._phase}"
        if self.timeout is not None:
            line += f" ({int(self._clock() - self._started)}s of {self.timeout:g}s)"
        return visible(line)

    def __rich__(self) -> Any:
        from rich.text import Text  # plain text: a '[' of the label is no markup of rich's

        return Text(self.text())

    def stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def announce_stopped(entry: Entry) -> None:
    echo(visible(f"tether: stopped {entry.id} ({entry.name}, pid {entry.pid})"), err=True)


def report_stopped(result: StopResult) -> None:
    """Name every tunnel that stopped; then fail (exit 9) naming those that did not."""
    for entry in result.stopped:
        announce_stopped(entry)
    if result.failures:
        shown = result.failures[:3]
        more = len(result.failures) - len(shown)
        raise StopFailedError("; ".join(shown) + (f" (and {more} more)" if more else ""))
