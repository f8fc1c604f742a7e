"""Process identity on Linux: start times, lock holders and pidfds, so PID reuse fools nothing."""

from __future__ import annotations

import os
import select
import signal
import time
from pathlib import Path


def start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` in clock ticks; None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may hold spaces and parentheses; the fields after the last ')' are fixed.
    fields = stat.rpartition(")")[2].split()
    return int(fields[19])


def owner_uid(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def flock_holders(path: Path) -> set[int]:
    """Pids holding a flock on ``path``, read from /proc/locks."""
    try:
        st = os.stat(path)
        text = Path("/proc/locks").read_text()
    except OSError:
        return set()
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    holders = set()
    for line in text.splitlines():
        parts = line.split()
        if "->" in parts:  # a waiter, not a holder
            continue
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == dev:
            holders.add(int(parts[4]))
    return holders


def is_same_process(pid: int, started: int) -> bool:
    """True when ``pid`` is alive, ours, and the very process that started at ``started``."""
    return start_time(pid) == started and owner_uid(pid) == os.getuid()


def open_pidfd(pid: int, started: int) -> int | None:
    """A pidfd for exactly that process, or None: once open, PID reuse cannot redirect it."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    # Checked after opening: the fd now pins the process we verified.
    if not is_same_process(pid, started):
        os.close(fd)
        return None
    return fd


def wait_pidfds(fds: list[int], timeout: float) -> set[int]:
    """Wait for the processes behind ``fds`` to exit, all within ``timeout``; the fds of those
    that did."""
    deadline = time.monotonic() + timeout
    exited: set[int] = set()
    while len(exited) < len(fds):
        left = deadline - time.monotonic()
        ready, _, _ = select.select([fd for fd in fds if fd not in exited], [], [], max(left, 0))
        exited.update(ready)
        if not ready:
            break
    return exited


def is_running(pid: int) -> bool:
    """Whether ``pid`` names a live process (of any user), not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def signal_pidfd(fd: int, signum: int = signal.SIGTERM) -> None:
    try:
        signal.pidfd_send_signal(fd, signum)
    except ProcessLookupError:
        pass  # it has exited meanwhile: what the signal was for
