"""Logging for tunnel processes: warnings a flood cannot multiply, and background log files that
carry a timestamp on every line and never grow past a cap."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

log = logging.getLogger("tether")

# Any local user can connect in a loop; per-connection warnings must not grow a log without bound.
BURST = 5
INTERVAL = 10.0


class LimitedLog:
    """Passes at most ``burst`` warnings per key and ``interval`` seconds; counts the rest and
    says how many were dropped when the next window opens."""

    def __init__(
        self,
        logger: logging.Logger = log,
        *,
        burst: int = BURST,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._burst = burst
        self._interval = interval
        self._clock = clock
        self._windows: dict[str, list[float]] = {}  # key -> [window start, passed, dropped]

    def warning(self, key: str, message: str, *args: object) -> None:
        now = self._clock()
        window = self._windows.get(key)
        if window is None or now - window[0] >= self._interval:
            if window is not None and window[2]:
                self._logger.warning(
                    "%d similar warning(s) suppressed in %gs", int(window[2]), self._interval
                )
            window = self._windows[key] = [now, 0, 0]
        if window[1] < self._burst:
            window[1] += 1
            self._logger.warning(message, *args)
        else:
            window[2] += 1


# A background tunnel's log: the current file plus one older one, each at most this big.
LOG_CAP = 1024 * 1024
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"


def rotated(path: Path) -> Path:
    return path.with_name(path.name + ".1")


class TimestampedLog:
    """A text stream for a background tunnel's stdout and stderr: every line gets a UTC
    timestamp, and past ``cap`` bytes the file is renamed to ``NAME.1`` and started afresh.

    It writes to file descriptors 1 and 2 themselves and points both at the new file on rotation,
    so that whatever writes there (logging, click, a fatal error of the interpreter) lands in the
    current file.
    """

    def __init__(self, path: Path, cap: int = LOG_CAP) -> None:
        self.path = path
        self.cap = cap
        self._partial = ""
        try:
            self._size = os.fstat(2).st_size
        except OSError:
            self._size = 0

    # -- the parts of TextIO that print(), logging and click use ----------------------------------
    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._emit(line)
        return len(text)

    def flush(self) -> None:
        if self._partial:
            line, self._partial = self._partial, ""
            self._emit(line)

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return 2

    @property
    def encoding(self) -> str:
        return "utf-8"

    def writable(self) -> bool:
        return True

    # -- the file itself --------------------------------------------------------------------------
    def _emit(self, line: str) -> None:
        stamp = time.strftime(TIME_FORMAT, time.gmtime())
        data = f"{stamp}Z {line}\n".encode(errors="replace")
        if self._size + len(data) > self.cap and self._size > 0:
            self._rotate()
        try:
            os.write(2, data)
        except OSError:
            return  # nowhere left to report it
        self._size += len(data)

    def _rotate(self) -> None:
        try:
            os.replace(self.path, rotated(self.path))
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except OSError:
            return  # keep writing to the old file rather than lose the line
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        self._size = 0


def as_text_stream(stream: TimestampedLog) -> TextIO:
    """The stream typed as what sys.stdout and sys.stderr are declared to be."""
    return stream  # type: ignore[return-value]
