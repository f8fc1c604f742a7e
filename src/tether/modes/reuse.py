"""`--reuse`: find a healthy tunnel that already does what a start asks, under a lock that makes
concurrent starts of one tunnel end with exactly one.

The lock is a POSIX record lock on a file named after the tunnel's key. Such locks belong to the
process, so a background child forked while the lock is held does not hold it too, and it ends
when the starting process gets its tunnel ready (or fails, or dies). The file is removed by the
holder; a waiter that locked a removed file notices and tries the new one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from types import TracebackType

from tether.client import list_tunnels
from tether.errors import ReadinessTimeoutError, RegistryError, map_exceptions
from tether.listener import resolve_listen
from tether.locks import LockWait, try_lock
from tether.record import TunnelInfo
from tether.entry import Entry, TunnelIdentity
from tether.registry import Registry
from tether.spec import TunnelSpec


def wanted(spec: TunnelSpec) -> TunnelIdentity:
    """The tunnel a `--reuse` start of ``spec`` looks for: the same one, with the engine it
    names (any, if it names none)."""
    return TunnelIdentity.of(spec, spec.ssh.engine)


def matches(entry: Entry, spec: TunnelSpec, addresses: list[str]) -> bool:
    """Whether ``entry`` is the tunnel ``spec`` asks for, bound on ``addresses``."""
    return (
        entry.kind == "tunnel"
        and wanted(spec).covers(entry.identity)
        and (spec.listen.port == 0 or entry.local_port == spec.listen.port)
        and set(addresses) <= set(entry.local_addresses)
    )


def find_reusable(registry: Registry, spec: TunnelSpec) -> TunnelInfo | None:
    """A ready tunnel of this user that does what ``spec`` asks, if there is one."""
    required = [a for a, needed in asyncio.run(resolve_listen(spec.listen.host)) if needed]
    for info in list_tunnels(registry):
        if info.status.state == "ready" and matches(info.entry, spec, required):
            return info
    return None


class ReuseLock:
    """Held from looking for a reusable tunnel until the one started instead is ready."""

    def __init__(self, registry: Registry, spec: TunnelSpec) -> None:
        # Named after what the start looks for and where it listens.
        key = [asdict(wanted(spec)), [spec.listen.host, spec.listen.port]]
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode())
        self.path: Path = registry.directory / f".reuse-{digest.hexdigest()[:16]}.lock"
        self._timeout = spec.timeout
        self._fd: int | None = None

    def acquire(self) -> None:
        deadline = time.monotonic() + self._timeout
        while True:
            fd = self._open()
            if not try_lock(fd, "lockf"):
                with map_exceptions({OSError: RegistryError}, f"cannot lock {self.path}"):
                    taken = LockWait(fd, "lockf").wait(deadline - time.monotonic())
                if not taken:  # the descriptor went with the wait
                    raise ReadinessTimeoutError(
                        f"another `tether start --reuse` of this tunnel did not finish "
                        f"within {self._timeout:g}s",
                        options=("timeout",),
                    )
            if self._is_current(fd):
                self._fd = fd
                return
            os.close(fd)  # its holder removed it after we opened it: take the new one

    def _open(self) -> int:
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        with map_exceptions({OSError: RegistryError}, f"cannot open {self.path}"):
            return os.open(self.path, flags, 0o600)

    def _is_current(self, fd: int) -> bool:
        try:
            held, current = os.fstat(fd), os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return (held.st_dev, held.st_ino) == (current.st_dev, current.st_ino)

    def release(self) -> None:
        """Remove the file, then unlock; idempotent."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ReuseLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
