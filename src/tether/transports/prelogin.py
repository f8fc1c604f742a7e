"""A shared master's login begun as soon as a start knows its tunnels, before its event loop and
the rest of tether are loaded: the SSH login, the longest step of a first start, runs while
they load.

``begin`` does at once, without an event loop, what the OpenSSH engine's first connect would do
up to the spawn (openssh.py, sharedmaster.lease): the same config and checks, the same `ssh -G`,
so the same key. It takes the key's lock without waiting, and spawns the master if none
answers. The engine's lease of that key takes the begun login over (``take``), lock and all.
``abandon`` kills what no tunnel took: a start that failed before it connected (a port in use)
leaves no login going on.

Whatever is unexpected here leaves the work to the engine, which does it again and says what
is wrong: ``begin`` raises nothing but a stop signal's Interrupted, and logs why it did
nothing at debug level only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tether.errors import Interrupted
from tether.locks import try_lock
from tether.spec import GATEWAY, TunnelSpec
from tether.transports.masterconfig import (
    available,
    destination,
    master_argv,
    parse_resolved,
    write_config,
)
from tether.transports.masterspawn import (
    MasterPaths,
    directory,
    key,
    open_lock,
    spawn_shared,
    still_the_lock,
)
from tether.transports.sshsetup import check_files
from tether.transports.workdir import Workdir

log = logging.getLogger("tether")

RESOLVE_TIMEOUT = 10.0  # `ssh -G` reads config files only; the engine's helpers wait as long
# The signals that stop a start (modes/signals.py), held off while a spawn is recorded.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass(frozen=True)
class Begun:
    """A shared master's start begun by this process: its files, the descriptor that holds its
    key's lock, and the pid of its first process (a child of this one)."""

    paths: MasterPaths
    lock: int
    pid: int


_begun: dict[str, Begun] = {}
# What `ssh -G` said for a config's text and a command line (its config's path left out), and
# the key made of it: the engine's first connect asks the same, and is answered at once
# (``asked``), so that it finds the login begun for it.
_asked: dict[tuple[bytes, tuple[str, ...]], tuple[dict[str, list[str]], str]] = {}


def begin(specs: Sequence[TunnelSpec], runtime: Path) -> None:
    """Begin the login of the shared master of each of ``specs`` whose tunnel will use one
    (the OpenSSH engine, sharing, registered in ``runtime``) and finds none running."""
    for spec in specs:
        try:
            _begin(spec, runtime)
        except Interrupted:
            raise  # a stop signal (modes/signals.py: interrupting)
        except Exception as exc:  # the engine does it again, and says what is wrong
            log.debug("%s: the login was not begun early: %s", spec.name, exc)


@contextlib.contextmanager
def logins_begun(specs: Sequence[TunnelSpec], runtime: Path) -> Iterator[None]:
    """``begin`` the logins of ``specs``; on the way out, ``abandon`` what no tunnel took."""
    try:
        begin(specs, runtime)
        yield
    finally:
        abandon()


def asked(
    config_text: bytes, argv: list[str], config: Path
) -> tuple[dict[str, list[str]], str] | None:
    """What `ssh -G` said for ``argv`` with ``config`` holding ``config_text``, and the key
    made of it, if this process asked while it began logins (once: a reconnect asks anew)."""
    return _asked.pop(_shape(config_text, argv, config), None)


def _shape(config_text: bytes, argv: list[str], config: Path) -> tuple[bytes, tuple[str, ...]]:
    return config_text, tuple("" if word == str(config) else word for word in argv)


def take(key_: str) -> Begun | None:
    """The start of ``key_``'s master that this process began, if it did: the caller now
    waits for its first process and closes its lock."""
    return _begun.pop(key_, None)


def abandon() -> None:
    """Kill every begun start no tunnel took, and let go of its lock. A master that has logged
    in already is a daemon of its own: it ends after its linger, as an idle one does."""
    _asked.clear()
    while _begun:
        _, begun = _begun.popitem()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(begun.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(begun.pid, 0)
        os.close(begun.lock)


def _begin(spec: TunnelSpec, runtime: Path) -> Begun | None:
    via, options = spec.via, spec.ssh
    if via is None or via.scheme == GATEWAY or not options.share_master:
        return None  # direct, a gateway's (its certificate is its own), or not shared
    if options.engine not in (None, "openssh") or not available():
        return None
    check_files(options, warn=False)  # the engine checks them again, and warns once
    place = directory(runtime)
    workdir = Workdir()
    try:
        config = write_config(workdir.path / "config", options)
        config_text = config.read_bytes()
        argv = master_argv(config, Path("/nonexistent"), destination(via))
        resolved = _resolve(argv)
    finally:
        workdir.remove()
    if "hostname" not in resolved:
        return None  # ssh cannot read the config: the engine's own start says why
    paths = MasterPaths(place, key(resolved, argv[0], runtime))
    _asked[_shape(config_text, argv, config)] = (resolved, paths.key)
    lock = _try_lock(paths.lock)
    if lock is None:
        return None  # another start holds it: the engine waits for that one
    try:
        if _answers(paths.control):
            os.close(lock)
            return None  # a master serves the key: the engine takes a lease on it
        linger = options.master_linger
        argv = master_argv(
            paths.config, paths.control, destination(via), linger=linger, log_file=paths.log
        )
    except BaseException:
        os.close(lock)
        raise
    # No stop signal between the spawn and the record ``abandon`` reads: an ssh spawned and
    # not recorded would be left behind (and a lock recorded must not be closed here).
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        try:
            pid = spawn_shared(paths, config_text, argv)
        except BaseException:
            os.close(lock)
            raise
        begun = _begun[paths.key] = Begun(paths, lock, pid)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    return begun


def _resolve(argv: list[str]) -> dict[str, list[str]]:
    """`ssh -G` of the master's arguments (sshexit.resolve, without an event loop)."""
    done = subprocess.run(
        [argv[0], "-G", *argv[1:]],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        timeout=RESOLVE_TIMEOUT,
        check=False,
    )
    return parse_resolved(done.stdout.decode(errors="replace"))


def _try_lock(path: Path) -> int | None:
    """A descriptor holding the flock of ``path`` if it is free now (and still the file at
    ``path``: one removed meanwhile by `tether stop --all` is not the lock any more)."""
    fd = open_lock(path)
    try:
        if try_lock(fd, "flock") and still_the_lock(fd, path):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def _answers(control: Path) -> bool:
    """Whether something listens on the control socket ``control`` (the engine asks it)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(control))
        except OSError:
            return False
    return True


__all__ = ["Begun", "abandon", "asked", "begin", "logins_begun", "take"]
