"""Run mode's command, in a process group of its own, so that ending it ends all of it.

`sh -c` (dash) does not exec the last command of a line, so a signal to the shell alone would
leave `sleep 300` running under pid 1. Every ending therefore signals the whole group, waits a
grace period, then kills what is left, and returns only once the group is gone. tether is a child
subreaper, so the members that outlive their parents become its children and are reaped here even
where pid 1 reaps nothing (containers).

On a terminal the group also becomes the terminal's foreground: Ctrl-C reaches the command at
once, an interactive command can read the terminal, and Ctrl-Z suspends tether with it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import signal
from collections.abc import Sequence

from tether.errors import CommandError, describe

log = logging.getLogger("tether")

KILL_GRACE = 5.0  # seconds between SIGTERM (or the signal tether got) and SIGKILL
KILL_WAIT = 5.0  # how long the group may take to vanish after SIGKILL before tether gives up
# A member whose parent is neither tether nor in the group dies without a SIGCHLD to tether;
# looking again this often catches it. Every other exit wakes the waiter at once.
RECHECK = 0.1
# Python ignores these; a command must start with the defaults, as subprocess gives them.
RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)
PR_SET_CHILD_SUBREAPER = 36


# A line is run with `exec` in front only when it is surely one simple command: none of these
# characters, and a first word that is neither a shell keyword, a builtin nor an assignment.
_COMPOUND = set(";&|(){}`\n")
_NOT_PROGRAMS = set(
    "! . : [[ alias bg break case cd command continue do done elif else esac eval exec exit "
    "export fg for function getopts hash if jobs local read readonly return select set shift "
    "then time times trap type typeset ulimit umask unalias unset until wait while {".split()
)


def shell_argv(line: str) -> list[str]:
    """How to run a --run line: through sh, and as the shell itself when it is one command.

    dash waits in a child for the last command of a line; when Ctrl-C reaches both, dash dies
    of it even if the command (psql, say) handles it and goes on, and the command would then be
    ended with the shell. `exec` makes the command the shell itself, as bash -c does.
    """
    if not _COMPOUND.intersection(line):
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            words = []
        if words and "=" not in words[0] and words[0] not in _NOT_PROGRAMS:
            return ["/bin/sh", "-c", f"exec {line}"]
    return ["/bin/sh", "-c", line]


def become_subreaper() -> None:
    """Adopt orphaned descendants, so that they can be waited for and reaped here."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        log.debug("cannot become a child subreaper: %s", os.strerror(ctypes.get_errno()))


class Command:
    """A started command: its group, its leader's status, and the terminal it may hold."""

    def __init__(self, pid: int, terminal: int | None) -> None:
        self.pid = pid  # the leader; its pid is the group's id
        self.returncode: int | None = None  # as subprocess reports it: -N if killed by signal N
        self._terminal = terminal
        self._exited = asyncio.Event()
        self._changed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._loop.add_signal_handler(signal.SIGCHLD, self._on_sigchld)
        if terminal is not None:
            self._give_terminal()
        self._reap()  # it may have exited before the handler was in place

    @classmethod
    def spawn(cls, command: str | Sequence[str], env: dict[str, str]) -> Command:
        """Start ``command`` (a shell line, or an argv run without a shell) in a new group."""
        argv = shell_argv(command) if isinstance(command, str) else list(command)
        become_subreaper()
        terminal = _foreground_terminal()
        try:
            pid = os.posix_spawnp(
                argv[0], argv, env, setpgroup=0, setsigdef=RESET_SIGNALS, setsigmask=()
            )
        except OSError as exc:
            if terminal is not None:
                os.close(terminal)
            program = command if isinstance(command, str) else command[0]
            raise CommandError(f"cannot run {program!r}: {describe(exc)}") from None
        return cls(pid, terminal)

    async def wait(self) -> int:
        """The leader's return code, once it has exited."""
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode

    def send(self, signum: int) -> None:
        """Send ``signum`` to every process of the group."""
        try:
            os.killpg(self.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass  # gone already (or only members that changed user remain)

    async def end(self, signum: int | None = signal.SIGTERM, grace: float = KILL_GRACE) -> None:
        """Make sure nothing of the command is left: send ``signum`` (None: it was sent
        already), wait up to ``grace`` seconds, then SIGKILL; return once the group is gone."""
        try:
            if await self._gone(0):
                return
            if signum is not None:
                self.send(signum)
            if await self._gone(grace):
                return
            log.warning("the command did not end within %gs of SIGTERM; killing it", grace)
            self.send(signal.SIGKILL)
            if not await self._gone(KILL_WAIT):
                log.warning("processes of the command (group %d) are still there", self.pid)
        finally:
            self._take_terminal_back()
            self._loop.remove_signal_handler(signal.SIGCHLD)

    # -- reaping ----------------------------------------------------------------------------------
    def _on_sigchld(self) -> None:
        self._reap()
        self._changed.set()

    def _reap(self) -> None:
        """Collect every exited (or stopped) child of ours in the group."""
        flags = os.WEXITED | os.WNOHANG | (os.WSTOPPED if self._terminal is not None else 0)
        while True:
            try:
                info = os.waitid(os.P_PGID, self.pid, flags)
            except ChildProcessError:
                return  # no child of ours left in the group
            if info is None:
                return
            if info.si_code == os.CLD_STOPPED:
                if info.si_status == signal.SIGTSTP and info.si_pid == self.pid:
                    self._suspend()
                elif info.si_status in (signal.SIGTTIN, signal.SIGTTOU):
                    self._give_terminal()  # it touched the terminal before it had it
                continue
            if info.si_pid == self.pid:
                code = info.si_status
                self.returncode = code if info.si_code == os.CLD_EXITED else -code
                self._take_terminal_back()
                self._exited.set()

    async def _gone(self, timeout: float) -> bool:
        """Whether the group is empty, waiting up to ``timeout`` seconds for it to become so."""
        deadline = self._loop.time() + timeout
        while True:
            self._reap()
            try:
                os.killpg(self.pid, 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                pass
            left = deadline - self._loop.time()
            if left <= 0:
                return False
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(left, RECHECK))
            except TimeoutError:
                pass

    # -- the terminal -----------------------------------------------------------------------------
    def _give_terminal(self) -> None:
        if self._terminal is None:
            return
        try:
            os.tcsetpgrp(self._terminal, self.pid)
        except OSError:
            return
        # Had it touched the terminal before it became the foreground, it was stopped for it.
        self.send(signal.SIGCONT)

    def _take_terminal_back(self) -> None:
        if self._terminal is None:
            return
        terminal, self._terminal = self._terminal, None
        _set_foreground(terminal, self.pid, os.getpgrp())
        os.close(terminal)

    def _suspend(self) -> None:
        """The command was stopped (Ctrl-Z): stop tether too, so that the user's shell gets the
        terminal back; once continued (fg), hand the terminal and the go-ahead on."""
        assert self._terminal is not None
        _set_foreground(self._terminal, self.pid, os.getpgrp())
        os.kill(os.getpid(), signal.SIGSTOP)
        # Continued.
        self._give_terminal()


def _set_foreground(terminal: int, expected: int, group: int) -> None:
    """Make ``group`` the terminal's foreground if ``expected`` still is; SIGTTOU is blocked
    meanwhile, as a process outside the foreground group may not otherwise do this."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTTOU})
    try:
        if os.tcgetpgrp(terminal) == expected:
            os.tcsetpgrp(terminal, group)
    except OSError:
        pass
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _foreground_terminal() -> int | None:
    """The controlling terminal, if tether is its foreground process group."""
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if os.tcgetpgrp(fd) == os.getpgrp():
            return fd
    except OSError:
        pass
    os.close(fd)
    return None
