"""Pid files: created exclusively (0600, never through a symlink), taken over only when stale,
and removed only while they are still the very file tether created, holding tether's pid.

Whatever else is at the path (another program's file, a live pid, a FIFO, a device, a directory,
a symlink) is left alone and refused, so a mistyped path can never destroy anything.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from tether.procs import ProcessRef
from tether.errors import UsageError, describe

log = logging.getLogger("tether")

PID_LIMIT = 32  # "4194304\n" is the longest pid file Linux can need


def check_pid_file(path: Path) -> None:
    """Refuse, before anything starts, a path that could not become our pid file."""
    if not path.parent.is_dir():
        raise UsageError(f"pid file {path}: directory does not exist: {path.parent}")
    _stale(path)


@dataclass(frozen=True)
class PidFile:
    """A pid file this process created."""

    path: Path
    pid: int
    identity: tuple[int, int]  # (device, inode) of the file created

    @classmethod
    def create(cls, path: Path, pid: int | None = None) -> PidFile:
        """Create ``path`` holding ``pid`` (default: ours); a stale pid file is replaced."""
        pid = os.getpid() if pid is None else pid
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        for _ in range(3):
            try:
                fd = os.open(path, flags, 0o600)
                break
            except FileExistsError:
                _remove_stale(path)
            except OSError as exc:
                raise UsageError(f"pid file {path}: cannot create it: {describe(exc)}") from None
        else:
            raise UsageError(f"pid file {path}: another process keeps creating it")
        try:
            os.write(fd, f"{pid}\n".encode())
            st = os.fstat(fd)
        except OSError as exc:
            os.close(fd)
            os.unlink(path)
            raise UsageError(f"pid file {path}: cannot write it: {describe(exc)}") from None
        os.close(fd)
        return cls(path, pid, (st.st_dev, st.st_ino))

    def remove(self) -> None:
        """Remove the file if it is still the one created here and still holds our pid."""
        try:
            st = os.lstat(self.path)
        except OSError:
            return
        if (st.st_dev, st.st_ino) == self.identity and _read_pid(self.path) == self.pid:
            try:
                self.path.unlink()
            except OSError as exc:  # its directory changed under us: say so, do not crash
                log.warning("cannot remove pid file %s: %s", self.path, describe(exc))


def _remove_stale(path: Path) -> None:
    """Remove the pid file at ``path`` if it is stale; refuse anything else."""
    stale = _stale(path)
    if stale is None:
        return  # gone meanwhile: the caller tries again
    try:
        current = os.lstat(path)
        if (current.st_dev, current.st_ino) == (stale.st_dev, stale.st_ino):
            path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise UsageError(f"pid file {path}: cannot replace a stale one: {describe(exc)}") from None


def _stale(path: Path) -> os.stat_result | None:
    """None if nothing is at ``path``; its stat if it is a stale pid file (a regular file holding
    one pid of a process that is gone); otherwise a UsageError naming the path."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"pid file {path}: {describe(exc)}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a regular file"
        raise UsageError(f"pid file {path} exists and is {kind}; leaving it alone")
    pid = _read_pid(path)
    if pid is None:
        raise UsageError(f"pid file {path} exists and does not hold a pid; leaving it alone")
    if ProcessRef.of(pid) is not None:
        raise UsageError(f"pid file {path} names process {pid}, which is still running")
    return st


def _read_pid(path: Path) -> int | None:
    """The pid a regular file holds ("1234" and a newline at most), else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        text = os.read(fd, PID_LIMIT + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    digits = text.removesuffix(b"\n")
    if not (0 < len(digits) <= 10 and digits.isdigit()) or int(digits) == 0:
        return None
    return int(digits)
