"""Processes seen from outside: the umask read without changing it (os.umask can only read it by
setting it), and a forked child waited for with a deadline."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.support.waiting import wait_until_sync


def umask(pid: int | str = "self") -> int:
    """The umask of process ``pid``, as the kernel reports it in /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    raise AssertionError(f"no Umask line in /proc/{pid}/status")


def wait_for_exit(pid: int, deadline: float) -> int:
    """The exit status of child ``pid``; killed, and the test failed, if it takes longer."""
    statuses: list[int] = []

    def reaped() -> bool:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            statuses.append(os.waitstatus_to_exitcode(status))
        return bool(done)

    try:
        wait_until_sync(reaped, f"the forked child {pid} to exit", deadline)
    except AssertionError:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    return statuses[0]
