"""The user's shared OpenSSH masters as `tether stop --all` sees them: where they live, and how
the idle ones are ended. Free of asyncio and of the engine, so that the plain stop starts as
fast as `tether list` (transports/sharedmaster.py starts and shares them)."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import signal
from pathlib import Path

from tether import paths
from tether.procs import ProcessRef, wait_exited

DIRECTORY = "masters"
KEY_CHARS = 24  # 96 bits of SHA-256: a socket name short enough, and no two configs meet
SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes with the terminating NUL
# ssh binds "<ControlPath>.<16 random characters>" first, then links it to the path.
SSH_SUFFIX = 17
STOP_GRACE = 3.0


def place(runtime: Path | None = None) -> Path:
    """Where the shared masters of ``runtime``'s tunnels are: "masters" in the runtime
    directory, or where a socket's path would be too long there, a directory in /tmp named
    after the user and the runtime directory. Every process of the registry must find the
    same place: not $TMPDIR, which differs from one process to the next."""
    runtime = runtime or paths.runtime_directory()
    path = runtime / DIRECTORY
    if not too_long(path):
        return path
    tag = hashlib.sha256(os.fsencode(runtime)).hexdigest()[:12]
    return Path("/tmp") / f"tether-masters-{os.getuid()}-{tag}"


def too_long(directory: Path) -> bool:
    """Whether a master's socket in ``directory`` would not fit in a socket address, or would
    be expanded by ssh ("${": -S has no escape for it)."""
    size = len(os.fsencode(directory)) + 1 + KEY_CHARS + SSH_SUFFIX
    return size > SOCKET_PATH_MAX or "${" in str(directory)


def names_control(argv: list[bytes], control: Path) -> bool:
    """Whether ``argv`` is an ssh's whose control socket (-S) is ``control``; tether writes
    "%" there as "%%" (masterconfig.tokens_escaped)."""
    wanted = os.fsencode(str(control).replace("%", "%%"))
    named = any(a == b"-S" and b == wanted for a, b in itertools.pairwise(argv))
    return bool(argv) and os.path.basename(argv[0]) == b"ssh" and named


def end_all(directory: Path) -> int:
    """End every shared master in ``directory`` (`tether stop --all`: no tunnel is left to use
    one), remove their files and the directory; how many were running. A master is found by
    its command line among this user's processes, and signalled through a pidfd."""
    try:
        entries = list(directory.iterdir())
    except OSError:
        return 0
    ended = []
    for pid in running(directory):
        ref = ProcessRef.of(pid)
        pinned = ref.pin() if ref is not None else None
        if pinned is not None:
            pinned.signal(signal.SIGTERM)
            pinned.signal(signal.SIGCONT)  # a stopped one acts on it only once it runs
            ended.append(pinned)
    exited = wait_exited(ended, STOP_GRACE)
    for pinned in ended:
        if pinned not in exited:
            pinned.signal(signal.SIGKILL)
        pinned.close()
    for entry in entries:
        entry.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        directory.rmdir()  # only if empty: a master started meanwhile keeps it
    return len(ended)


def running(directory: Path) -> list[int]:
    """The pids of this user's ssh processes that serve a control socket in ``directory``."""
    try:
        sockets = [entry for entry in directory.iterdir() if "." not in entry.name]
    except OSError:
        return []
    return serving(sockets)


def serving(sockets: list[Path]) -> list[int]:
    """The pids of this user's ssh processes started with one of ``sockets`` (-S)."""
    return [
        pid
        for pid, argv in _own_processes()
        if any(names_control(argv, control) for control in sockets)
    ]


def _own_processes() -> list[tuple[int, list[bytes]]]:
    """Every process of this user's, with its command line."""
    found = []
    uid = os.getuid()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid != uid:
                continue
            with open(f"/proc/{name}/cmdline", "rb") as handle:
                found.append((int(name), handle.read().split(b"\0")))
        except OSError:
            continue
    return found
