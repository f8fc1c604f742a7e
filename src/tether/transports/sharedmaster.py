"""One OpenSSH master shared by every tunnel of a user that reaches the same server the same way.

The key is a hash of what `ssh -G` prints for the master's own arguments: every setting of the
connection, resolved (host name, port, user, ProxyJump, ProxyCommand, keys, known_hosts,
keepalive, algorithms), with the ssh that runs it and the registry it belongs to. Tunnels share
a master only where ssh would make the very same connection; a different key file, known_hosts,
ssh_config line or keepalive is a different master.

Its life is OpenSSH's own ControlPersist. The master starts with ControlPersist=LINGER: it stays
while any control connection is open (channels.c counts each as a live channel), and exits
LINGER after the last closes. Each tunnel holds one control connection, its lease, for as long
as it uses the master. The kernel closes it when the tunnel's process ends, however it ends
(SIGKILL too), so no master outlives its last tunnel by more than the linger. With ControlPersist
and -N, ssh forks once it has logged in: the process tether started exits 0, and the master runs
on, a child of no tunnel's (so none of them takes it along when it dies).

Only its user reaches it: the directory is the user's, mode 0700, and ssh refuses a control
connection from another uid (mux.c checks the peer's uid). Its log (-E) is the only place its
words go once it has forked: the reasons for a failed start, a refused forward or its end are
read from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path

from tether.locks import LockWait
from tether.procs import Pinned, ProcessRef
from tether.transports import mux, prelogin
from tether.transports.base import LossCallback
from tether.transports.master import (
    HAVE_PROCFS,
    OPEN_FAILED,
    READY_POLL,
    REASON_WAIT,
    is_master_of,
    loss_reason,
    process_exiting,
)
from tether.transports.masterspawn import MasterPaths, open_lock, spawn_shared, still_the_lock
from tether.transports.peerwatch import PeerWatch

log = logging.getLogger("tether")

LOG_TAIL = 16384  # what is read of a master's log for a reason: its last lines
SHARED_STATUS = 255  # the exit status a lost shared master is said to have: not known here


class SharedMaster:
    """One tunnel's lease on a shared master: its control connection, held open. It is what
    the OpenSSH engine asks of a master (see master.Master): the control socket, whether it is
    exiting, why a forward was refused, and ``stop``, which lets go of it and ends nothing."""

    def __init__(
        self, paths_: MasterPaths, sock: socket.socket, pid: int, on_lost: LossCallback | None
    ) -> None:
        self.paths = paths_
        self.control = paths_.control
        self.pid = pid
        self.failure: int | None = None
        self._sock = sock
        self._on_lost = on_lost
        self._stopping = False
        self._unanswered: str | None = None
        self._read_from = _size(paths_.log)
        self._watch = asyncio.get_running_loop().create_task(self._watch_lease())

    @property
    def id(self) -> str:
        """How `tether list` names the master: the start of its key."""
        return self.paths.key[:12]

    async def _watch_lease(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError):
            while await loop.sock_recv(self._sock, 4096):
                pass  # the master says nothing more on it; EOF is its end
        self.failure = SHARED_STATUS
        if not self._stopping and self._on_lost is not None:
            said = _tail(self.paths.log, self._read_from)
            self._on_lost(loss_reason(said, None, self._unanswered))

    def exiting(self) -> bool:
        return self.failure is not None or process_exiting(self.pid)

    def unresponsive(self, reason: str) -> None:
        """A master that does not answer is lost for every tunnel on it: it is killed (only if
        it is this user's ssh with this very control socket), and each lease sees its end."""
        if self.failure is not None or self._stopping or self._unanswered is not None:
            return
        self._unanswered = reason
        ref = ProcessRef.of(self.pid)
        pinned = ref.pin() if ref is not None else None
        if pinned is None:
            return
        with pinned:
            if is_master_of(self.pid, self.control):
                log.debug("shared ssh master %d: %s; killing it", self.pid, reason)
                pinned.signal(signal.SIGKILL)

    async def open_failure(self, fallback: str) -> str:
        """Why the master refused a forward, from its log. Another tunnel's forward refused in
        the same moment could be read instead: the log does not say whose it was."""
        for _ in range(2):
            for line in reversed(_tail(self.paths.log, self._read_from)):
                found = OPEN_FAILED.search(line)
                if found:
                    self._read_from = _size(self.paths.log)
                    return found.group(1).strip()
            await asyncio.sleep(REASON_WAIT)
        return fallback

    async def stop(self) -> None:
        """Let go of the master: it lives on while other tunnels hold it, and for its linger."""
        self._stopping = True
        self._watch.cancel()  # first: its wait is on the socket's descriptor
        with contextlib.suppress(asyncio.CancelledError):
            await self._watch
        self._sock.close()


async def lease(
    paths_: MasterPaths,
    config_text: bytes,
    argv: list[str],
    on_heard: Callable[[], None] | None,
    on_lost: LossCallback | None,
) -> SharedMaster | str:
    """A lease on the master of ``paths_``, started with ``argv`` (its config written from
    ``config_text``) if none runs; or, if it could not start, what it said (its log). A start
    that this process began already (prelogin.py) is taken over, its lock held."""
    begun = prelogin.take(paths_.key)
    if begun is not None:
        try:
            said = await finish(paths_, begun.pid, on_heard)
            return said if said is not None else await _held_once_started(paths_, on_lost)
        finally:
            os.close(begun.lock)
    held = await _hold(paths_, on_lost)
    if held is not None:
        if on_heard is not None:
            on_heard()
        return held
    fd = await _locked(paths_.lock)
    try:
        held = await _hold(paths_, on_lost)  # started by another while this one waited
        if held is not None:
            if on_heard is not None:
                on_heard()
            return held
        said = await _start(paths_, config_text, argv, on_heard)
        if said is not None:
            return said
        return await _held_once_started(paths_, on_lost)
    finally:
        os.close(fd)


async def _held_once_started(
    paths_: MasterPaths, on_lost: LossCallback | None
) -> SharedMaster | str:
    held = await _hold(paths_, on_lost)
    if held is None:
        return "the shared ssh master did not answer once started"
    return held


async def _hold(paths_: MasterPaths, on_lost: LossCallback | None) -> SharedMaster | None:
    try:
        sock, pid = await mux.hold(str(paths_.control))
    except mux.Unanswered:
        log.debug("shared ssh master %s does not answer; starting another", paths_.key)
        return None
    except (OSError, mux.MuxError):
        return None
    return SharedMaster(paths_, sock, pid, on_lost)


async def _locked(path: Path) -> int:
    """A descriptor holding the flock of ``path`` (the file that is there now: one removed by
    `tether stop --all` meanwhile is opened again)."""
    while True:
        fd = open_lock(path)
        wait = LockWait(fd, "flock")
        await wait.wait_async()  # the descriptor is closed if this is cancelled
        if still_the_lock(fd, path):
            return fd
        os.close(fd)


async def _start(
    paths_: MasterPaths, config_text: bytes, argv: list[str], on_heard: Callable[[], None] | None
) -> str | None:
    """Start the master; None once it has logged in, else what it said."""
    return await finish(paths_, spawn_shared(paths_, config_text, argv), on_heard)


async def finish(paths_: MasterPaths, pid: int, on_heard: Callable[[], None] | None) -> str | None:
    """The end of the start of the master ``pid`` (spawned by this process): None once it has
    logged in (its first process exits 0 as it forks), else what it said."""
    process = Pinned.child(pid)
    try:
        status = await _exit_of(process, on_heard)
    except BaseException:  # given up on (a timeout): it must not log in and fork after all
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    finally:
        process.close()
    if status == 0:
        return None
    return "\n".join(_tail(paths_.log, 0)) or f"ssh exited with status {status}"


async def _exit_of(process: Pinned, on_heard: Callable[[], None] | None) -> int:
    """The exit status of the starting master's first process (reaped), telling ``on_heard``
    once its server has spoken."""
    loop = asyncio.get_running_loop()
    exited = asyncio.Event()
    loop.add_reader(process.fd, exited.set)
    watch = PeerWatch(process.pid) if on_heard is not None and HAVE_PROCFS else None
    try:
        while not exited.is_set():
            if on_heard is not None and (watch is None or watch.heard() is not False):
                on_heard()
                on_heard = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(exited.wait(), READY_POLL)
    finally:
        loop.remove_reader(process.fd)
        if watch is not None:
            watch.close()
    _, status = os.waitpid(process.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if on_heard is not None and code == 0:
        on_heard()  # logged in: it has heard the server, seen or not
    return code


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _tail(path: Path, start: int) -> list[str]:
    """The lines of the log from byte ``start`` on, the last LOG_TAIL bytes of them at most."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            handle.seek(max(start, size - LOG_TAIL) if start <= size else 0)
            data = handle.read(LOG_TAIL)
    except OSError:
        return []
    return [line.strip() for line in data.decode(errors="replace").splitlines() if line.strip()]


__all__ = ["SharedMaster", "finish", "lease"]
