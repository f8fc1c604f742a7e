"""How an OpenSSH master process starts, with no event loop needed: its environment, its spawn,
and for a shared master (sharedmaster.py) its key, its files and their place.

Kept free of asyncio and of the engine, so that a start can spawn the master's login before the
rest of tether is loaded (prelogin.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import signal
from pathlib import Path

from tether.errors import RegistryError, TransportUnreachableError, describe
from tether.files import ensure_private_directory
from tether.limits import raise_nofile
from tether.locks import try_lock
from tether.masters import KEY_CHARS, place, serving
from tether.procs import ProcessRef

# What `ssh -G` prints about this invocation's control socket, not about the connection.
NOT_CONNECTION = ("controlpath", "controlmaster", "controlpersist")
# The settings of `ssh -G` that name files the login reads, whose contents count too.
FILES_READ = ("userknownhostsfile", "globalknownhostsfile", "identityfile", "certificatefile")


# What a service manager passes to tether's own process (sd_notify, the watchdog, socket
# activation): never ssh's, nor a ProxyCommand's, to act on.
SERVICE_MANAGER_VARIABLES = frozenset(
    ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")
)


def master_environ() -> dict[str, str]:
    """The master's environment: tether's, less what the service manager gave tether."""
    return {k: v for k, v in os.environ.items() if k not in SERVICE_MANAGER_VARIABLES}


def spawn_ssh(argv: list[str], stderr: tuple[object, ...]) -> int:
    """Start a master's ssh: /dev/null in and out, ``stderr`` (a posix_spawn file action for
    fd 2), a session of its own, the open-file limit raised; its pid."""
    try:
        pid = os.posix_spawnp(
            argv[0],
            argv,
            master_environ(),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                stderr,
            ],
            # A session of its own: Ctrl-C on tether's terminal must not reach it.
            setsid=True,
            # Python ignores these, and a helper thread (the shell's loop) blocks signals: ssh
            # starts with the defaults, or SIGTERM and its parent-death signal would wait
            # forever.
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
            setsigmask=(),
        )
    except OSError as exc:
        raise TransportUnreachableError(f"cannot start ssh: {describe(exc)}") from None
    raise_nofile(pid)  # one socket per forwarded connection (of every tunnel, if shared)
    return pid


class Unshareable(Exception):
    """No safe place for shared masters: the tunnel runs a master of its own."""


def directory(runtime: Path | None = None) -> Path:
    """The user's directory of shared masters (``place``), made 0700 if missing; Unshareable
    if it is not safe (another user's, a symlink, open to others)."""
    try:
        return ensure_private_directory(
            place(runtime), what="shared masters directory", fix="remove it", error=RegistryError
        )
    except RegistryError as exc:
        raise Unshareable(str(exc)) from None


def key(resolved: dict[str, list[str]], ssh: str, runtime: Path) -> str:
    """The key of a connection, from ``resolved``, `ssh -G`'s settings for it (each value in
    order: the order of identity files matters), the ``ssh`` that makes it, the ``runtime``
    directory of the tunnels that may share it, the ssh-agent it asks, and the state of the
    files it reads (``file_states``): a known_hosts file or a key edited since a master logged
    in is a new master, checked and logged in anew."""
    digest = hashlib.sha256()
    # The agent is where keys come from too (ssh -G names it by its variable, not its socket).
    for part in (str(runtime), ssh, os.environ.get("SSH_AUTH_SOCK", "")):
        digest.update(part.encode(errors="surrogateescape") + b"\0")
    for name in sorted(resolved):
        if name not in NOT_CONNECTION:
            for value in resolved[name]:
                digest.update(f"{name} {value}".encode(errors="surrogateescape") + b"\0")
    for state in file_states(resolved):
        digest.update(state.encode(errors="surrogateescape") + b"\0")
    return digest.hexdigest()[:KEY_CHARS]


def file_states(resolved: dict[str, list[str]]) -> list[str]:
    """Each file the connection reads (known_hosts, keys, certificates), as its path and what
    changes when it is written: device, inode, size and modification time."""
    home = pwd.getpwuid(os.getuid()).pw_dir  # ssh's "~" is the passwd entry's, not $HOME
    states = []
    for name in FILES_READ:
        for value in resolved.get(name, []):
            for path in value.split():
                if path.startswith("~/"):
                    path = os.path.join(home, path[2:])
                try:
                    found = os.stat(path)
                except OSError:
                    states.append(f"{path} -")
                    continue
                states.append(
                    f"{path} {found.st_dev} {found.st_ino} {found.st_size} {found.st_mtime_ns}"
                )
    return states


class MasterPaths:
    """The files of one shared master: ``<key>`` its control socket, and beside it its lock,
    its log and its config."""

    def __init__(self, directory_: Path, key_: str) -> None:
        self.key = key_
        self.control = directory_ / key_
        self.lock = directory_ / f"{key_}.lock"
        self.log = directory_ / f"{key_}.log"
        self.config = directory_ / f"{key_}.config"


def open_lock(path: Path) -> int:
    """A descriptor on a master's lock file ``path``, created user-only if missing."""
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


def still_the_lock(fd: int, path: Path) -> bool:
    """Whether ``fd`` is still the file at ``path``: `tether stop --all` removes the files of
    ended masters, and a lock taken on a removed file locks nothing."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False))
    except FileNotFoundError:
        return False


def spawn_shared(paths_: MasterPaths, config_text: bytes, argv: list[str]) -> int:
    """Spawn the shared master of ``paths_`` (its key's lock held by the caller), with ``argv``
    and its config written from ``config_text``; its pid. It logs in, forks and exits 0, or
    exits with its reason in its log."""
    # The last master of this key, if it still runs, did not answer (stopped, hung): it would
    # never serve again, nor end by its linger while stopped. A running master has its socket:
    # without one (an ended master removes it), no process is looked for.
    running = serving([paths_.control]) if os.path.lexists(paths_.control) else []
    for pid in running:
        ref = ProcessRef.of(pid)
        pinned = ref.pin() if ref is not None else None
        if pinned is not None:
            with pinned:
                pinned.signal(signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(paths_.control)  # a master killed with SIGKILL leaves its socket behind
    sweep(paths_.control.parent, paths_.key)
    _write(paths_.config, config_text)
    os.close(os.open(paths_.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600))
    # A ProxyJump hop's `ssh -W` says why it failed on the stderr it inherits.
    log_action = (os.POSIX_SPAWN_OPEN, 2, os.fspath(paths_.log), os.O_WRONLY | os.O_APPEND, 0)
    return spawn_ssh(argv, log_action)  # no parent-death signal: it outlives its starter


def sweep(directory_: Path, keep: str) -> None:
    """Remove the files of masters that ended (by their linger, or killed) in ``directory_``:
    each key's whose socket is gone and whose lock no one holds, but ``keep``'s. A start that
    opened such a lock just now finds it gone once it holds it, and opens it again."""
    try:
        names = os.listdir(directory_)
    except OSError:
        return
    for name in names:
        key_, _, kind = name.partition(".")
        if kind != "lock" or key_ == keep or key_ in names:
            continue  # its socket is there: a master serves it, or is starting
        lock = directory_ / name
        try:
            fd = os.open(lock, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if not try_lock(fd, "flock"):
                continue  # a tunnel is starting it
            for part in (f"{key_}.config", f"{key_}.log", name):
                (directory_ / part).unlink(missing_ok=True)
        finally:
            os.close(fd)


def _write(path: Path, data: bytes) -> None:
    """Write the master's config in place of the last one (its ssh has read it already)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
