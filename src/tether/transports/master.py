"""A running OpenSSH master (`ssh -M -N`): its process, its stderr, its control socket, and its
end, whatever ssh did (one that forked away from tether is found by its socket and ended too).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

from tether.masters import names_control
from tether.procs import Pinned, ProcessRef
from tether.transports import mux
from tether.transports.base import LossCallback
from tether.transports.masterspawn import spawn_ssh
from tether.transports.peerwatch import PeerWatch

log = logging.getLogger("tether")

# How often a starting master is asked whether it is up (and, until then, whether its server
# has spoken). It has no event to wait on: the mux socket appears once it has logged in, and it
# may exit instead.
READY_POLL = 0.01
STOP_GRACE = 3.0
# A refused forward's reason is on the master's stderr, not in its reply; it comes at once.
REASON_WAIT = 0.2
STDERR_KEPT = 40
# A traced master (tether diagnose) says a hundred lines before it is up; its failure is read
# from all of them.
STDERR_KEPT_TRACED = 1000
PF_EXITING = 0x4  # include/linux/sched.h: the process is exiting
HAVE_PROCFS = os.path.exists("/proc/self/stat")
OPEN_FAILED = re.compile(r"channel \d+: open failed: (?:connect failed: )?(.*)")
# The master's words for a peer gone silent, said the way the asyncssh engine says it.
_SILENT = re.compile(r"Timeout, server .* not responding")


@functools.cache
def parent_death_wrapper() -> tuple[str, ...]:
    """The command that makes the master receive SIGTERM if tether dies without stopping it
    (SIGKILL, a crash), so that no ssh outlives its tunnel: util-linux's setpriv, where it
    knows --pdeathsig (2.33 and later). Nothing where it does not.

    Asked once a process, and a tuple, which no caller can change for the others: every ssh a
    tunnel starts (each reconnect's, its signer's) is wrapped, and the probe is a process run
    to its end, which would hold up the event loop of every tunnel of a process each time."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return ()
    wrapper = (setpriv, "--pdeathsig", "TERM", "--")
    try:
        done = subprocess.run(
            [*wrapper, "true"], capture_output=True, timeout=10, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return wrapper if done.returncode == 0 else ()


class Master:
    """A running `ssh -M`: its process, its stderr, and its control socket."""

    _unanswered: str | None = None  # why it was killed as unresponsive, if it was

    def __init__(
        self,
        argv: list[str],
        control: Path,
        on_lost: LossCallback | None,
        *,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        self.control = control
        self.failure: int | None = None  # its exit status, once it has exited
        self._on_lost = on_lost
        self._on_line = on_line
        self._kept = STDERR_KEPT if on_line is None else STDERR_KEPT_TRACED
        self._ready = False
        self._stopping = False
        self._stderr: list[str] = []
        self._partial = b""
        self._new_line = asyncio.Event()
        self._exited = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        read_end, write_end = os.pipe()
        try:
            pid = spawn_ssh(argv, (os.POSIX_SPAWN_DUP2, write_end, 2))
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        self.process = Pinned.child(pid)
        self._stderr_fd = read_end
        os.set_blocking(read_end, False)
        self._loop.add_reader(read_end, self._read_stderr)
        self._loop.add_reader(self.process.fd, self._on_exit)

    async def started(self, on_heard: Callable[[], None] | None = None) -> None:
        """Return once the master answers on its control socket, or has exited.

        ``on_heard`` is called once the SSH server has spoken to the master (its version line:
        the handshake and the login follow), and at the latest when the master answers. Until
        then a server that accepted the connection and hangs is still being connected to.
        """
        watch = PeerWatch(self.process.pid) if on_heard is not None and HAVE_PROCFS else None
        try:
            while not self._exited.is_set():
                with contextlib.suppress(OSError, mux.MuxError):
                    await mux.alive(str(self.control))
                    self._ready = True
                    # What it said while starting explains a failed start only; a later exit
                    # is explained by what comes after.
                    self._stderr = []
                    if on_heard is not None:
                        on_heard()  # logged in: it has heard the server, seen or not
                    return
                # Without a TCP socket of its own (a ProxyCommand or ProxyJump), the master
                # stays "connecting" until it answers; where the kernel cannot tell (None), it
                # is "authenticating" at once, as before there was a way to see it.
                if on_heard is not None and (watch is None or watch.heard() is not False):
                    on_heard()
                    on_heard = None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._exited.wait(), READY_POLL)
        finally:
            if watch is not None:
                watch.close()

    def unresponsive(self, reason: str) -> None:
        """Count a master that does not answer as lost: kill it (a stopped one too); its exit,
        seen as any other, reports the loss with ``reason``."""
        if self._exited.is_set() or self._stopping or self._unanswered is not None:
            return
        log.debug("ssh master %d: %s; killing it", self.process.pid, reason)
        self._unanswered = reason
        self.process.signal(signal.SIGKILL)

    def exiting(self) -> bool:
        """Whether the master is dying or dead (see ``process_exiting``)."""
        return self._exited.is_set() or process_exiting(self.process.pid)

    def stderr_text(self) -> str:
        """What it said, less the debug lines of a traced master: a failure reads the same
        with tracing or without."""
        return "\n".join(line for line in self._stderr if not line.startswith("debug"))

    async def open_failure(self, fallback: str) -> str:
        """Why the master refused a forward, as its stderr says ("connect failed: ...")."""
        for _ in range(2):
            for line in reversed(self._stderr):
                found = OPEN_FAILED.search(line)
                if found:
                    self._stderr.remove(line)
                    return found.group(1).strip()
            self._new_line.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_line.wait(), REASON_WAIT)
        return fallback

    def _read_stderr(self) -> None:
        try:
            chunk = os.read(self._stderr_fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._loop.remove_reader(self._stderr_fd)
            return
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        for raw in lines:
            line = raw.decode(errors="replace").strip()
            if line:
                log.debug("ssh: %s", line)
                self._stderr = [*self._stderr[-self._kept :], line]
                if self._on_line is not None:
                    self._on_line(line)
        self._new_line.set()

    def _on_exit(self) -> None:
        self._loop.remove_reader(self.process.fd)
        self._read_stderr()  # what is left in the pipe explains the exit
        _, status = os.waitpid(self.process.pid, 0)
        self.process.close()
        self.failure = os.waitstatus_to_exitcode(status)
        self._exited.set()
        if self._ready and not self._stopping and self._on_lost is not None:
            self._on_lost(self._loss_reason())

    def _loss_reason(self) -> str:
        return loss_reason(self._stderr, self.failure or 0, self._unanswered)

    async def stop(self) -> None:
        """End the master (its forwards go with it) and reap it."""
        self._stopping = True
        if not self._exited.is_set():
            self.process.signal(signal.SIGTERM)
            # A stopped master (SIGSTOP, a debugger) acts on SIGTERM only once it runs again.
            self.process.signal(signal.SIGCONT)
            try:
                await asyncio.wait_for(self._exited.wait(), STOP_GRACE)
            except TimeoutError:
                self.process.signal(signal.SIGKILL)
                await self._exited.wait()
        with contextlib.suppress(OSError):
            self._loop.remove_reader(self._stderr_fd)
            os.close(self._stderr_fd)
        await end_stray_master(self.control)


def process_exiting(pid: int) -> bool:
    """Whether master ``pid`` is dying or dead. It closes its descriptors (the forwards' control
    connections among them) before it becomes a zombie, so the kernel's PF_EXITING flag, set
    before either, is what tells a death from a forward that ended. Without /proc, only a death
    already seen counts."""
    if not HAVE_PROCFS:
        return False
    try:  # once per connection: os calls, not pathlib, keep it cheap
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
        try:
            stat = os.read(fd, 1024)
        finally:
            os.close(fd)
        flags = int(stat.rpartition(b")")[2].split()[6])
    except (OSError, ValueError, IndexError):
        return True
    return bool(flags & PF_EXITING)


def loss_reason(said: list[str], status: int | None, unanswered: str | None) -> str:
    """Why a master that was up has gone, from its last lines ``said`` and exit ``status``
    (negative: the signal; None: not known, a shared master is no child of tether's), or
    ``unanswered``, the reason tether killed it."""
    if unanswered is not None:
        return f"ssh master {unanswered}"
    if status is not None and status < 0:
        return f"ssh was killed by {signal.Signals(-status).name}"
    said = [
        line
        for line in said
        if not OPEN_FAILED.search(line) and not line.startswith("Authenticated to ")
    ]
    if not said:
        return (
            "the shared ssh master ended" if status is None else f"ssh exited with status {status}"
        )
    if _SILENT.search(said[-1]):
        return "Server not responding to keepalive"
    return said[-1]


async def end_stray_master(control: Path) -> None:
    """End the master that still serves ``control`` though tether's own child is gone: one
    that forked into the background (ForkAfterAuthentication, whatever made ssh do it) is
    adopted by init, and would run, logged in, for ever. It says its pid over the control
    socket; it is ended only if it is this user's ssh, started with this very socket."""
    try:
        if not stat.S_ISSOCK(os.lstat(control).st_mode):
            return
        pid = await asyncio.wait_for(mux.alive(str(control)), STOP_GRACE)
    except (OSError, mux.MuxError, TimeoutError):
        return  # nobody serves it: the usual case
    ref = ProcessRef.of(pid)
    pinned = ref.pin() if ref is not None else None
    if pinned is None:
        return
    with pinned:
        if not is_master_of(pid, control):
            return
        log.warning("ssh left a master running in the background (pid %d): ending it", pid)
        pinned.signal(signal.SIGTERM)
        if not await _exits(pinned, STOP_GRACE):
            pinned.signal(signal.SIGKILL)
            await _exits(pinned, STOP_GRACE)


def is_master_of(pid: int, control: Path) -> bool:
    """Whether process ``pid`` is an ssh whose command line names ``control`` (after -S)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv = handle.read().split(b"\0")
    except OSError:
        return False
    return names_control(argv, control)


async def _exits(pinned: Pinned, timeout: float) -> bool:
    """Whether the pinned process (not tether's child: nothing to reap) exits in time."""
    loop = asyncio.get_running_loop()
    gone: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not gone.done():
            gone.set_result(None)

    loop.add_reader(pinned.fd, readable)
    try:
        await asyncio.wait_for(gone, timeout)
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(pinned.fd)
    return True
