"""The per-user registry of running tunnels: entries, lock-based liveness, port reservation.

Layout of the registry directory (mode 0700, owned by the user):
    .lock           held while a port is checked and reserved, so two starts cannot both win
    <id>.json       the entry, replaced atomically
    <id>.lock       flock-held by the owning process for its whole life: free means dead; a
                    hard link to another entry's lock is a forgery, removed like a dead entry
    <id>.sock       the tunnel's control socket (see control.py)

Anything else in the directory (dotfiles, other names, directories) is not an entry and is left
alone; an entry file that is not a regular file, or does not parse, is removed.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from tether.entry import Entry, TunnelIdentity
from tether.procs import ProcessRef
from tether.states import Mode
from tether.errors import PortInUseError, RegistryError, describe, map_exceptions
from tether.files import ensure_private_directory, write_private
from tether.paths import RUNTIME_ENV, runtime_directory

log = logging.getLogger("tether")

MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with the terminating NUL
ENTRY_NAME = re.compile(r"^[0-9a-f]{8}\.json$")
ENTRY_LIMIT = 64 * 1024


def new_id() -> str:
    return os.urandom(4).hex()


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _file_id(st: os.stat_result) -> str:
    return f"{st.st_dev}:{st.st_ino}"


class Registration:
    """A live entry owned by this process; its lock is held until ``remove``."""

    def __init__(self, registry: Registry, entry: Entry, lock_fd: int) -> None:
        self.registry = registry
        self.entry = entry
        self._lock_fd: int | None = lock_fd

    def remove(self) -> None:
        """Delete the entry, its socket and its lock file; idempotent."""
        if self._lock_fd is None:
            return
        paths = self.registry.paths(self.entry.id)
        for path in (paths["json"], paths["sock"], paths["lock"]):
            path.unlink(missing_ok=True)
        os.close(self._lock_fd)
        self._lock_fd = None


class Registry:
    """Every running tunnel of this user, visible from any process."""

    def __init__(self, directory: Path) -> None:
        self.directory = ensure_private_directory(
            directory,
            what="registry directory",
            fix=f"remove it or set {RUNTIME_ENV} to a private directory",
            error=RegistryError,
        )
        if len(str(self.paths("0" * 8)["sock"])) > MAX_SOCKET_PATH:
            raise RegistryError(
                f"registry directory path is too long for a UNIX socket: {directory}",
                hint=f"set {RUNTIME_ENV} to a shorter path",
            )

    @classmethod
    def default(cls) -> Registry:
        return cls(runtime_directory())

    def paths(self, entry_id: str) -> dict[str, Path]:
        return {ext: self.directory / f"{entry_id}.{ext}" for ext in ("json", "lock", "sock")}

    # -- reading --------------------------------------------------------------------------------
    def entries(self) -> list[Entry]:
        """Live entries, oldest first. Stale and corrupt entries are removed on the way."""
        live = []
        with map_exceptions({OSError: RegistryError}, f"cannot read registry {self.directory}"):
            names = sorted(os.listdir(self.directory))
        for name in names:
            if not ENTRY_NAME.match(name):
                continue
            entry = self._read(name)
            if entry is None:
                continue
            liveness = self.liveness(entry)
            if liveness == "alive":
                live.append(entry)
            elif liveness == "forged":
                self._remove_forged(entry.id)
            else:
                self.discard(entry.id)
        return sorted(live, key=lambda e: (e.started, e.id))

    def _read(self, name: str) -> Entry | None:
        """The entry in file ``name``, or None after removing what is not a readable entry."""
        path = self.directory / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return None  # removed meanwhile
        except OSError:
            self._remove_odd(path)  # a symlink, or something we may not read
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                self._remove_odd(path)
                return None
            data = os.read(fd, ENTRY_LIMIT + 1)
        except OSError as exc:
            log.warning("cannot read registry entry %s: %s", path, describe(exc))
            return None
        finally:
            os.close(fd)
        try:
            if len(data) > ENTRY_LIMIT:
                raise ValueError("it is too large")
            entry = Entry.from_json(json.loads(data))
            if f"{entry.id}.json" != name:
                raise ValueError("its id does not match the file name")
        except (ValueError, TypeError) as exc:
            # Removed whatever its lock says: an entry nobody can read helps nobody, and a
            # warning about it on every later command would help nobody either.
            path.unlink(missing_ok=True)
            self.discard(name.removesuffix(".json"))
            log.warning("removed corrupt registry entry %s: %s", path, exc)
            return None
        return entry

    @staticmethod
    def _remove_odd(path: Path) -> None:
        """Remove a non-file under an entry's name (FIFO, socket, symlink); leave directories."""
        try:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                path.unlink()
                log.warning("removed %s from the registry: not a regular file", path)
        except OSError:
            pass

    def is_alive(self, entry: Entry) -> bool:
        """The owner still holds the entry's lock. A free lock means a dead owner, whatever
        the PID now names; a lock borrowed from another entry means a forgery."""
        return self.liveness(entry) == "alive"

    def liveness(self, entry: Entry) -> Literal["alive", "dead", "forged"]:
        """Whether the entry's lock is held ("alive"), free ("dead"), or held only because it
        is a hard link to a lock another name was opened by ("forged": a lock is created with
        one link, so a second one was made by hand, and only the name its owner opened is that
        owner's entry). A forged entry is stale: nothing may be signalled for it."""
        fd = self._open_lock(entry.id)
        if fd is None:
            return "dead"
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                st = os.fstat(fd)
            except OSError:
                return "dead"
            if st.st_nlink == 1:
                return "alive"
            lock = self.paths(entry.id)["lock"]
            genuine = _file_id(st) == entry.lock_id and entry.process.has_open(lock)
            return "alive" if genuine else "forged"
        except OSError:
            return "dead"
        finally:
            os.close(fd)
        return "dead"

    def _remove_forged(self, entry_id: str) -> None:
        """Remove an entry whose lock is a link to another's: only names go, so the lock the
        real owner holds (and its own entry) stay as they are."""
        for path in self.paths(entry_id).values():
            path.unlink(missing_ok=True)
        log.warning("removed registry entry %s: its lock is a link to another tunnel's", entry_id)

    def _open_lock(self, entry_id: str) -> int | None:
        try:
            return os.open(
                self.paths(entry_id)["lock"],
                os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
            )
        except OSError:
            return None

    def is_verified(self, entry: Entry) -> bool:
        """Alive, and provably that tunnel: the lock file is the one its owner created (ours,
        0600, one link, the inode the entry names), and the pid the entry names holds that lock
        and started when recorded."""
        lock = self.paths(entry.id)["lock"]
        try:
            st = os.lstat(lock)
        except OSError:
            return False
        return (
            stat.S_ISREG(st.st_mode)
            and st.st_nlink == 1
            and st.st_uid == os.getuid()
            and stat.S_IMODE(st.st_mode) == 0o600
            and _file_id(st) == entry.lock_id
            and self.is_alive(entry)
            and entry.process.holds_lock(lock)
            and entry.process.is_ours()
        )

    def discard(self, entry_id: str) -> bool:
        """Remove a dead owner's files; an entry whose lock is held is left alone (False)."""
        paths = self.paths(entry_id)
        # Take the lock first: if an owner appeared meanwhile, leave its files alone.
        fd = self._open_lock(entry_id)
        if fd is None and paths["lock"].is_symlink():
            paths["lock"].unlink(missing_ok=True)
        try:
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    return False
            for path in (paths["json"], paths["sock"], paths["lock"]):
                path.unlink(missing_ok=True)
            return True
        except OSError:
            return False
        finally:
            if fd is not None:
                os.close(fd)

    # -- writing --------------------------------------------------------------------------------
    @asynccontextmanager
    async def reserving(self, addresses: list[str], port: int) -> AsyncIterator[None]:
        """Hold the registry lock while the caller binds and registers ``port`` on numeric
        ``addresses``.

        Fails at once if another live tether tunnel holds an overlapping address. Waiting for
        the lock yields to the event loop, so the caller's timeout and signals still apply; no
        name is resolved under it.
        """
        from tether.locks import LockWait, try_lock  # here: `list` and `stop` never reserve

        with map_exceptions({OSError: RegistryError}, "cannot open the registry lock"):
            fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            if not try_lock(fd, "flock"):
                await LockWait(fd, "flock").wait_async()  # it closes fd if it fails
        try:
            if port:
                for entry in self.entries():
                    if entry.local_port == port and any(
                        _overlaps(a, b) for a in addresses for b in entry.local_addresses
                    ):
                        raise PortInUseError(
                            f"local port {port} is in use by tether tunnel "
                            f"{entry.id} ({entry.name}, pid {entry.pid})",
                            hint=f"stop it with: tether stop {entry.id}",
                        )
            yield
        finally:
            os.close(fd)

    def register(
        self,
        identity: TunnelIdentity,
        *,
        mode: Mode,
        addresses: list[str],
        local_port: int,
        log_file: str | None = None,
        entry_id: str | None = None,
        kind: str = "tunnel",
    ) -> Registration:
        """Create an entry owned by this process; the caller holds ``reserving`` for its port."""
        entry_id = entry_id or new_id()
        paths = self.paths(entry_id)
        with map_exceptions({OSError: RegistryError}, "cannot create registry lock"):
            lock_fd = os.open(
                paths["lock"], os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600
            )
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            me = ProcessRef.current()
            entry = Entry(
                id=entry_id,
                name=identity.name,
                pid=me.pid,
                proc_start=me.start,
                lock_id=_file_id(os.fstat(lock_fd)),
                mode=mode,
                local_host=addresses[0],
                local_port=local_port,
                local_addresses=addresses,
                target_host=identity.target_host,
                target_port=identity.target_port,
                socks=identity.socks,
                allow=list(identity.allow),
                via=identity.via,
                engine=identity.engine,
                started=utc_now(),
                log_file=log_file,
                control=str(paths["sock"]),
                kind=kind,
            )
            write_private(paths["json"], json.dumps(asdict(entry), indent=2))
        except OSError as exc:
            os.close(lock_fd)
            paths["lock"].unlink(missing_ok=True)
            raise RegistryError(f"cannot write registry entry: {describe(exc)}") from None
        return Registration(self, entry, lock_fd)

    def find(self, selectors: list[str]) -> dict[str, list[Entry]]:
        """For each selector (id, id prefix, name or local port), the live entries it names."""
        entries = self.entries()
        found: dict[str, list[Entry]] = {}
        for selector in selectors:
            exact = [e for e in entries if e.id == selector]
            digits = selector.isascii() and selector.isdigit() and len(selector) <= 5
            port = int(selector) if digits else None
            found[selector] = exact or [
                e
                for e in entries
                if e.name == selector
                or (port is not None and e.local_port == port)
                or (len(selector) >= 4 and e.id.startswith(selector))
            ]
        return found


def _overlaps(a: str, b: str) -> bool:
    """Whether two bound addresses clash: 0.0.0.0 covers all IPv4, :: covers all (dual-stack)."""
    if a == b or "::" in (a, b):
        return True
    if "0.0.0.0" in (a, b):
        other = b if a == "0.0.0.0" else a
        return ":" not in other
    return False
