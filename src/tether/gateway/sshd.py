"""A gateway's sshd (a relay's or a site's), supervised by tether: checked by `sshd -t`,
started, ended with every session it serves; and whether sshd's StrictModes would accept files
under a directory (every directory above must be owned by root or the user and writable by no
one else)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import stat
from collections.abc import Callable
from pathlib import Path

from tether.errors import RelayError, describe, visible
from tether.limits import raise_nofile
from tether.procs import Pinned, halt_tree
from tether.spec import Endpoint
from tether.transports.master import parent_death_wrapper

log = logging.getLogger("tether")

SSHD = "/usr/sbin/sshd"
READY_TIMEOUT = 10.0
STOP_GRACE = 3.0


def strict_base() -> Path | None:
    """A directory sshd's StrictModes accepts files under, for a scratch gateway (the demo's,
    the tests'): the user's runtime directory, /run/user/UID or the home directory; None if
    none passes (/tmp never does: others may write to it)."""
    bases = [os.environ.get("XDG_RUNTIME_DIR"), f"/run/user/{os.getuid()}", str(Path.home())]
    return next((Path(b) for b in bases if b and strict_enough(Path(b)) is None), None)


def strict_enough(path: Path) -> str | None:
    """Why sshd's StrictModes would refuse a file under ``path``; None if it would not."""
    uid = os.getuid()
    for directory in [path, *path.parents]:
        try:
            st = os.stat(directory)
        except OSError as exc:
            return f"{directory}: {describe(exc)}"
        if st.st_uid not in (0, uid):
            return f"{directory} belongs to another user"
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return f"{directory} is writable by others"
    return None


class Sshd:
    """One supervised sshd with a generated config, listening on ``listen``: checked by
    `sshd -t`, started, and ended with every session it serves. ``name`` labels its log lines."""

    def __init__(
        self,
        name: str,
        config: Path,
        listen: Endpoint,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.listen = listen
        self.on_line = on_line  # each line sshd logs
        self._process: Pinned | None = None
        self.exited: asyncio.Future[int] | None = None

    async def check(self) -> None:
        """`sshd -t`: the config as sshd reads it, before it starts."""
        done = await asyncio.create_subprocess_exec(
            _sshd(),
            "-t",
            "-f",
            str(self.config),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, said = await done.communicate()
        if done.returncode != 0:
            words = " ".join(said.decode(errors="replace").split())
            raise RelayError(f"sshd refused the {self.name}'s config: {visible(words)}")

    async def start(self) -> None:
        """Run sshd, and return once it answers on its address."""
        argv = [*parent_death_wrapper(), _sshd(), "-D", "-e", "-f", str(self.config)]
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # Ctrl-C on tether's terminal is tether's to pass on
        )
        # Its sessions inherit the limit: an agent's link carries a socket per client session.
        raise_nofile(process.pid)
        self._process = Pinned.child(process.pid)
        self.exited = asyncio.ensure_future(self._log_until_exit(process))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT
        while not await asyncio.to_thread(_answers, self.listen):
            if self.exited.done():
                raise RelayError(
                    f"the {self.name}'s sshd exited with status {self.exited.result()}"
                )
            if loop.time() > deadline:
                await self.stop()
                raise RelayError(f"the {self.name}'s sshd did not answer within {READY_TIMEOUT:g}s")
            await asyncio.wait([self.exited], timeout=0.05)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def stop(self) -> None:
        """End sshd and every session it serves (the tree stopped whole first: a session that
        forks meanwhile cannot escape)."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            sessions = await asyncio.to_thread(halt_tree, process.pid)
            for pid in sessions:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            process.signal(signal.SIGTERM)
            process.signal(signal.SIGCONT)
            assert self.exited is not None
            done, _ = await asyncio.wait([self.exited], timeout=STOP_GRACE)
            if not done:
                process.signal(signal.SIGKILL)
                await self.exited
        finally:
            process.close()

    async def _log_until_exit(self, process: asyncio.subprocess.Process) -> int:
        assert process.stderr is not None
        async for raw in process.stderr:
            line = raw.decode(errors="replace").strip()
            if line:
                log.info("%s sshd: %s", self.name, visible(line))  # a peer's words are in it
                if self.on_line is not None:
                    self.on_line(line)
        return await process.wait()


def _sshd() -> str:
    return shutil.which("sshd") or SSHD


def _answers(listen: Endpoint) -> bool:
    try:
        with socket.create_connection((listen.host, listen.port), timeout=1) as sock:
            return sock.recv(4) == b"SSH-"
    except OSError:
        return False
