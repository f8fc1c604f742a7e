"""The per-user registry of running tunnels: entries, lock-based liveness, port reservation.

Layout of the registry directory (mode 0700, owned by the user):
    .lock           held while a port is checked and reserved, so two starts cannot both win
    <id>.json       the entry, replaced atomically
    <id>.lock       flock-held by the owning process for its whole life: free means dead
    <id>.sock       the tunnel's control socket (see control.py)
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import socket
import stat
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tether import procs
from tether.errors import PortInUseError, RegistryError

RUNTIME_ENV = "TETHER_RUNTIME_DIR"
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with the terminating NUL


@dataclass(frozen=True)
class Entry:
    """What the registry knows of one running tunnel. Never holds a secret."""

    id: str
    name: str
    pid: int
    proc_start: int
    mode: str
    local_host: str
    local_port: int
    target_host: str
    target_port: int
    via: str | None
    started: str
    log_file: str | None
    control: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Entry:
        names = {f.name: f.type for f in fields(cls)}
        if set(data) != set(names):
            raise ValueError(f"fields {sorted(set(data) ^ set(names))} do not match")
        entry = cls(**data)
        for name in ("pid", "proc_start", "local_port", "target_port"):
            if not isinstance(getattr(entry, name), int):
                raise ValueError(f"{name} is not an integer")
        return entry


def new_id() -> str:
    return secrets.token_hex(4)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def default_directory(environ: Mapping[str, str] = os.environ) -> Path:
    """$TETHER_RUNTIME_DIR, else $XDG_RUNTIME_DIR/tether, else a per-user dir in the temp dir."""
    if environ.get(RUNTIME_ENV):
        return Path(environ[RUNTIME_ENV])
    if environ.get("XDG_RUNTIME_DIR"):
        return Path(environ["XDG_RUNTIME_DIR"]) / "tether"
    return Path(tempfile.gettempdir()) / f"tether-{os.getuid()}"


def ensure_private_directory(path: Path) -> Path:
    """Create ``path`` (0700) if missing; refuse one that others could tamper with."""
    try:
        path.mkdir(mode=0o700, parents=False)
    except FileExistsError:
        pass
    except FileNotFoundError:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise RegistryError(f"cannot create registry directory {path}: {exc.strerror}") from None
    st = os.lstat(path)
    fix = f"remove it or set {RUNTIME_ENV} to a private directory"
    if stat.S_ISLNK(st.st_mode):
        raise RegistryError(f"registry directory {path} is a symlink", hint=fix)
    if not stat.S_ISDIR(st.st_mode):
        raise RegistryError(f"registry path {path} is not a directory", hint=fix)
    if st.st_uid != os.getuid():
        raise RegistryError(
            f"registry directory {path} is owned by uid {st.st_uid}, not you", hint=fix
        )
    if st.st_mode & 0o022:
        raise RegistryError(
            f"registry directory {path} is group- or world-writable "
            f"(mode {stat.S_IMODE(st.st_mode):04o})",
            hint=f"chmod 700 {path}",
        )
    return path


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, mode 0600.

    The temporary file is created exclusively and never through a symlink, so this is safe in a
    directory others can write to (a pid file in /tmp, say).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)  # a leftover of a crashed run with our pid
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def warn(message: str) -> None:
    print(f"tether: warning: {message}", file=sys.stderr)


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
        self.directory = ensure_private_directory(directory)
        if len(str(self.paths("0" * 8)["sock"])) > MAX_SOCKET_PATH:
            raise RegistryError(
                f"registry directory path is too long for a UNIX socket: {directory}",
                hint=f"set {RUNTIME_ENV} to a shorter path",
            )

    @classmethod
    def default(cls) -> Registry:
        return cls(default_directory())

    def paths(self, entry_id: str) -> dict[str, Path]:
        return {ext: self.directory / f"{entry_id}.{ext}" for ext in ("json", "lock", "sock")}

    @contextmanager
    def _global_lock(self) -> Iterator[None]:
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # -- reading --------------------------------------------------------------------------------
    def entries(self) -> list[Entry]:
        """Live entries, oldest first. Stale and corrupt entries are removed on the way."""
        live = []
        for path in sorted(self.directory.glob("*.json")):
            entry_id = path.stem
            try:
                entry = Entry.from_json(json.loads(path.read_text()))
                if entry.id != entry_id:
                    raise ValueError("id does not match the file name")
            except FileNotFoundError:
                continue
            except (ValueError, TypeError, OSError) as exc:
                done = "removed" if self.discard(entry_id) else "skipped (its owner lives)"
                warn(f"{done} corrupt registry entry {path}: {exc}")
                continue
            if self.is_alive(entry):
                live.append(entry)
            else:
                self.discard(entry_id)
        return sorted(live, key=lambda e: (e.started, e.id))

    def is_alive(self, entry: Entry) -> bool:
        """The owner still holds the entry's lock. A free lock means a dead owner, whatever
        the PID now names."""
        lock = self.paths(entry.id)["lock"]
        try:
            fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def is_verified(self, entry: Entry) -> bool:
        """Alive, and provably that tunnel: its pid holds the lock and started when recorded."""
        lock = self.paths(entry.id)["lock"]
        return (
            self.is_alive(entry)
            and entry.pid in procs.flock_holders(lock)
            and procs.is_same_process(entry.pid, entry.proc_start)
        )

    def discard(self, entry_id: str) -> bool:
        """Remove a dead owner's files; an entry whose lock is held is left alone (False)."""
        paths = self.paths(entry_id)
        # Take the lock first: if an owner appeared meanwhile, leave its files alone.
        try:
            fd: int | None = os.open(paths["lock"], os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            fd = None
        except OSError:
            return False
        try:
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False
            for path in (paths["json"], paths["sock"], paths["lock"]):
                path.unlink(missing_ok=True)
            return True
        finally:
            if fd is not None:
                os.close(fd)

    # -- writing --------------------------------------------------------------------------------
    @contextmanager
    def reserving(self, host: str, port: int) -> Iterator[None]:
        """Hold the registry lock while the caller binds and registers ``host:port``.

        Fails at once if another live tether tunnel holds an overlapping address.
        """
        with self._global_lock():
            if port:
                wanted = _numeric(host)
                for entry in self.entries():
                    if entry.local_port == port and _overlaps(wanted, entry.local_host):
                        raise PortInUseError(
                            f"local address {host}:{port} is in use by tether tunnel "
                            f"{entry.id} ({entry.name}, pid {entry.pid})",
                            hint=f"stop it with: tether stop {entry.id}",
                        )
            yield

    def register(self, **fields_: Any) -> Registration:
        """Create an entry owned by this process; the caller holds ``reserving`` for its port."""
        entry_id = fields_.pop("id", None) or new_id()
        paths = self.paths(entry_id)
        lock_fd = os.open(paths["lock"], os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        pid = os.getpid()
        start = procs.start_time(pid)
        assert start is not None
        entry = Entry(
            id=entry_id,
            pid=pid,
            proc_start=start,
            started=utc_now(),
            control=str(paths["sock"]),
            **fields_,
        )
        try:
            write_private(paths["json"], json.dumps(asdict(entry), indent=2))
        except OSError as exc:
            os.close(lock_fd)
            paths["lock"].unlink(missing_ok=True)
            raise RegistryError(f"cannot write registry entry: {exc.strerror}") from None
        return Registration(self, entry, lock_fd)

    def find(self, selectors: list[str]) -> dict[str, list[Entry]]:
        """For each selector (id, id prefix, name or local port), the live entries it names."""
        entries = self.entries()
        found: dict[str, list[Entry]] = {}
        for selector in selectors:
            exact = [e for e in entries if e.id == selector]
            found[selector] = exact or [
                e
                for e in entries
                if e.name == selector
                or (selector.isdigit() and e.local_port == int(selector))
                or (len(selector) >= 4 and e.id.startswith(selector))
            ]
        return found


def _numeric(host: str) -> str:
    """The address a host name binds to, so 'localhost' and '127.0.0.1' compare equal."""
    try:
        return str(socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0])
    except OSError:
        return host


def _overlaps(a: str, b: str) -> bool:
    """Whether two bound addresses clash: 0.0.0.0 covers all IPv4, :: covers all (dual-stack)."""
    if a == b or "::" in (a, b):
        return True
    if "0.0.0.0" in (a, b):
        other = b if a == "0.0.0.0" else a
        return ":" not in other
    return False
