"""Rate-limited warnings, and background logs that carry timestamps and stay within their cap."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tether.logs import LimitedLog, TimestampedLog, rotated


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_flood_of_warnings_is_cut_to_a_burst(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    limited = LimitedLog(logging.getLogger("tether.test"), burst=3, interval=10, clock=clock)
    with caplog.at_level(logging.WARNING, "tether.test"):
        for number in range(1000):
            limited.warning("connect", "connection %d refused", number)
        limited.warning("other", "another kind")
        assert [r.getMessage() for r in caplog.records] == [
            "connection 0 refused",
            "connection 1 refused",
            "connection 2 refused",
            "another kind",
        ]
        caplog.clear()
        clock.now = 10.0
        limited.warning("connect", "connection %d refused", 1000)
        assert [r.getMessage() for r in caplog.records] == [
            "997 similar warning(s) suppressed in 10s",
            "connection 1000 refused",
        ]


@pytest.fixture
def log_fds(tmp_path: Path) -> Iterator[Path]:
    """Points fds 1 and 2 at a log file, as the background child has them, and back after."""
    path = tmp_path / "t.log"
    saved = os.dup(1), os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        yield path
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def test_every_line_is_stamped_and_the_file_rotates(log_fds: Path) -> None:
    stream = TimestampedLog(log_fds, cap=1000)
    for number in range(100):
        stream.write(f"line {number}\n")
    stream.write("partial")
    stream.flush()
    os.write(2, b"raw write after the last rotation\n")
    current, older = log_fds.read_text(), rotated(log_fds).read_text()
    assert len(current) <= 1000 and len(older) <= 1000
    stamped = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (line \d+|partial)$")
    lines = older.splitlines() + current.splitlines()
    assert lines[-1] == "raw write after the last rotation"
    assert all(stamped.match(line) for line in lines[:-1]), lines
    assert lines[-2].endswith("partial")
    assert stat_mode(log_fds) == stat_mode(rotated(log_fds)) == 0o600


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777
