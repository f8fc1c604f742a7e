"""The private directory of one OpenSSH master: its generated config and its control socket.

Created 0700 under a random name, and held with a lock (flock on the directory itself) for as
long as the tunnel uses it. A tether killed with SIGKILL cannot remove its directory; the next
master to start removes every directory of the user whose lock is free, as the registry does
with entries. Liveness never rests on a pid.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

PREFIX = "tether-ssh-"
FALLBACK_PARENT = "/tmp"
# ssh binds the control socket as "<dir>/control.<16 random characters>" before renaming it,
# and a Unix socket path holds at most 107 bytes.
SOCKET_DIR_MAX = 80
# A directory is locked within moments of its creation: one younger than this may be starting.
SETTLE = 60.0


class Workdir:
    """A new private directory, locked by this process until ``remove``."""

    def __init__(self) -> None:
        parent = tempfile.gettempdir()
        # ssh expands "${VARIABLE}" in the control path (-S), with no way to escape it.
        if len(os.fsencode(parent)) + len(PREFIX) + 8 + 1 > SOCKET_DIR_MAX or "${" in parent:
            parent = FALLBACK_PARENT  # mkdtemp's random name and O_EXCL keep /tmp safe
        sweep(Path(parent))
        self.path = Path(tempfile.mkdtemp(prefix=PREFIX, dir=parent))
        os.chmod(self.path, 0o700)  # exactly: ssh must enter it, whatever the caller's umask
        self._lock = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._lock)


def sweep(parent: Path) -> None:
    """Remove the directories that tethers which died left in ``parent``."""
    try:
        candidates = [entry for entry in parent.iterdir() if entry.name.startswith(PREFIX)]
    except OSError:
        return
    for entry in candidates:
        with contextlib.suppress(OSError):
            info = entry.lstat()
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                continue  # not ours, or not a directory: never touched
            if time.time() - info.st_mtime < SETTLE:
                continue
            fd = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(entry, ignore_errors=True)
            except BlockingIOError:
                pass  # its tunnel is alive
            finally:
                os.close(fd)
