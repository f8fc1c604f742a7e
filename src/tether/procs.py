"""Process identity on Linux: a process is its pid and its start time, so PID reuse fools nothing,
and a pidfd pins it for signals and waits."""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may hold spaces and parentheses; the fields after the last ')' are fixed.
    return stat.rpartition(")")[2].split()


@dataclass(frozen=True)
class ProcessRef:
    """One process: its pid, and its start time in clock ticks since boot."""

    pid: int
    start: int

    @classmethod
    def current(cls) -> ProcessRef:
        ref = cls.of(os.getpid())
        assert ref is not None
        return ref

    @classmethod
    def of(cls, pid: int) -> ProcessRef | None:
        """The process that has ``pid`` now; None if none does (or only a zombie)."""
        found = _stat_fields(pid)
        if found is None or found[0] in ("Z", "X"):
            return None
        return cls(pid, int(found[19]))

    def is_running(self) -> bool:
        """Still alive, and still this very process (not a successor with its pid)."""
        return ProcessRef.of(self.pid) == self

    def is_stopped(self) -> bool:
        """Stopped by a signal (SIGSTOP, SIGTSTP) or a tracer: it acts on nothing until resumed."""
        found = _stat_fields(self.pid)
        return found is not None and found[0] in ("T", "t") and self.is_running()

    def is_ours(self) -> bool:
        """Running and owned by this user."""
        try:
            owner = os.stat(f"/proc/{self.pid}").st_uid
        except OSError:
            return False
        return owner == os.getuid() and self.is_running()

    def holds_lock(self, path: Path) -> bool:
        """Whether this process holds a flock on ``path`` (per /proc/locks)."""
        return self.pid in flock_holders(path)

    def has_open(self, path: Path) -> bool:
        """Whether this process holds a descriptor opened through the name ``path``: of two hard
        links to one file, /proc names the one each descriptor was opened by."""
        wanted = str(path.resolve())
        try:
            descriptors = os.listdir(f"/proc/{self.pid}/fd")
        except OSError:
            return False
        for fd in descriptors:
            try:
                if os.readlink(f"/proc/{self.pid}/fd/{fd}") == wanted:
                    return True
            except OSError:
                continue  # closed meanwhile
        return False

    def pin(self) -> Pinned | None:
        """A pidfd for exactly this process, or None if it is gone or not ours."""
        try:
            fd = os.pidfd_open(self.pid)
        except OSError:
            return None
        # Checked after opening: from now on the fd names the process that was verified.
        if not self.is_ours():
            os.close(fd)
            return None
        return Pinned(self.pid, fd)


class Pinned:
    """A pidfd: a process that PID reuse cannot replace under a signal or a wait."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid = pid
        self.fd = fd

    @classmethod
    def child(cls, pid: int) -> Pinned:
        """Our own child, which cannot be replaced while we have not reaped it. One that has
        exited and been reaped already (asyncio's child watcher is quick) comes back closed:
        signals to it are no-ops and it counts as exited."""
        try:
            return cls(pid, os.pidfd_open(pid))
        except ProcessLookupError:
            return cls(pid, -1)

    def signal(self, signum: int = signal.SIGTERM) -> None:
        if self.fd < 0:
            return  # closed: the process was reaped
        try:
            signal.pidfd_send_signal(self.fd, signum)
        except ProcessLookupError:
            pass  # it has exited meanwhile: what the signal was for

    def wait(self, timeout: float) -> bool:
        """Whether the process exited within ``timeout`` seconds."""
        return self in wait_exited([self], timeout)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Pinned:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def wait_exited(pinned: Sequence[Pinned], timeout: float) -> set[Pinned]:
    """Wait for the processes to exit, all within ``timeout``; the ones that did."""
    deadline = time.monotonic() + timeout
    exited: set[Pinned] = {p for p in pinned if p.fd < 0}  # closed: reaped already
    while len(exited) < len(pinned):
        left = deadline - time.monotonic()
        waiting = {p.fd: p for p in pinned if p not in exited}
        ready, _, _ = select.select(list(waiting), [], [], max(left, 0))
        exited.update(waiting[fd] for fd in ready)
        if not ready:
            break
    return exited


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


def descendants(root: int) -> list[int]:
    """The processes below ``root``, found by their parent in /proc (a process-group signal
    would miss sshd's sessions, which call setsid)."""
    # Children by parent, in one pass over /proc: a relay's sshd under a thousand sessions has
    # thousands of processes below it, and a scan per parent made each pass take seconds.
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        fields = _stat_fields(int(name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(name))
    found: list[int] = []
    frontier = [root]
    while frontier:
        below = children.get(frontier.pop(), [])
        found += below
        frontier += below
    return found


def halt_tree(root: int, timeout: float = 5.0) -> list[int]:
    """SIGSTOP ``root`` and every process below it until no new one appears; every process
    it stopped but ``root``.

    A stopped process forks no more (a fork under way when the signal came has finished by the
    time it shows as stopped), so once every one shows stopped and a pass finds nothing new, no
    process of the tree can escape a signal sent to them all next. Those it stopped are all
    returned, not only the tree's last pass: one whose parent died meanwhile (a session's
    sshd ending on its own) is below ``root`` no more, and left out it would stay stopped for
    good. Synchronous and brief: call it from a thread in an event loop.
    """
    stopped: set[int] = set()
    deadline = time.monotonic() + timeout
    while True:
        found = [root, *descendants(root)]
        new = [pid for pid in found if pid not in stopped]
        below = [*found[1:], *(pid for pid in stopped - set(found) if pid != root)]
        if not new and all(halted(pid) for pid in found):
            return below
        if time.monotonic() > deadline:
            return below  # the caller's next signal reaches those it can
        for pid in new:
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                pass
            stopped.add(pid)
        time.sleep(0.001)


def halted(pid: int) -> bool:
    """Stopped, a zombie, or gone."""
    fields = _stat_fields(pid)
    return fields is None or fields[0] in ("T", "t", "Z", "X")
