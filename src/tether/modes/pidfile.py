"""Pid files and JSON files (`--pid-file`, `--json-file`): created exclusively (0600, never
through a symlink), taken over only when stale, and removed only while they are still the very
file tether created, naming tether's pid.

A pid file holds "PID\n"; a JSON file holds one record per line, each with the "pid" of the
process that wrote it. Whatever else is at the path (another program's file, a live pid, a FIFO,
a device, a directory, a symlink) is left alone and refused, so a mistyped path can never
destroy anything.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from dataclasses import dataclass
from collections.abc import Sequence
from pathlib import Path

from tether.procs import ProcessRef
from tether.record import TunnelInfo
from tether.errors import UsageError, describe

log = logging.getLogger("tether")

JSON_LIMIT = 256 * 1024  # far above a few records


def check_pid_file(path: Path, what: str = "pid file") -> None:
    """Refuse, before anything starts, a path that could not become our pid (or JSON) file."""
    if not path.parent.is_dir():
        raise UsageError(f"{what} {path}: directory does not exist: {path.parent}")
    _stale(path, what)


@dataclass(frozen=True)
class PidFile:
    """A pid file (or JSON file) this process created."""

    path: Path
    pid: int
    identity: tuple[int, int]  # (device, inode) of the file created

    @classmethod
    def create(
        cls, path: Path, pid: int | None = None, *, text: str | None = None, what: str = "pid file"
    ) -> PidFile:
        """Create ``path`` holding ``pid`` (default: ours), or ``text`` (JSON lines that name
        that pid); a stale file is replaced."""
        pid = os.getpid() if pid is None else pid
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        for _ in range(3):
            try:
                fd = os.open(path, flags, 0o600)
                break
            except FileExistsError:
                _remove_stale(path, what)
            except OSError as exc:
                raise UsageError(f"{what} {path}: cannot create it: {describe(exc)}") from None
        else:
            raise UsageError(f"{what} {path}: another process keeps creating it")
        try:
            data = (f"{pid}\n" if text is None else text).encode()
            while data:
                data = data[os.write(fd, data) :]
            st = os.fstat(fd)
        except OSError as exc:
            os.close(fd)
            os.unlink(path)
            raise UsageError(f"{what} {path}: cannot write it: {describe(exc)}") from None
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
                log.warning("cannot remove %s: %s", self.path, describe(exc))


@dataclass(frozen=True)
class ReadyFiles:
    """Where a start writes its pid and its records once ready, if anywhere."""

    pid_file: Path | None = None
    json_file: Path | None = None

    def check(self) -> None:
        """Refuse, before anything starts, paths that could not become ours."""
        if self.pid_file is not None:
            check_pid_file(self.pid_file)
        if self.json_file is not None:
            check_pid_file(self.json_file, "JSON file")

    def create(self, records: Sequence[TunnelInfo]) -> list[PidFile]:
        """Write both; on failure none is left."""
        written: list[PidFile] = []
        try:
            if self.pid_file is not None:
                written.append(PidFile.create(self.pid_file))
            if self.json_file is not None:
                text = "".join(json.dumps(r.to_json()) + "\n" for r in records)
                written.append(PidFile.create(self.json_file, text=text, what="JSON file"))
        except BaseException:
            for file in written:
                file.remove()
            raise
        return written


NO_FILES = ReadyFiles()


def _remove_stale(path: Path, what: str) -> None:
    """Remove the file at ``path`` if it is stale; refuse anything else."""
    stale = _stale(path, what)
    if stale is None:
        return  # gone meanwhile: the caller tries again
    try:
        current = os.lstat(path)
        if (current.st_dev, current.st_ino) == (stale.st_dev, stale.st_ino):
            path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise UsageError(f"{what} {path}: cannot replace a stale one: {describe(exc)}") from None


def _stale(path: Path, what: str) -> os.stat_result | None:
    """None if nothing is at ``path``; its stat if it is a stale file (a regular file naming
    one pid of a process that is gone); otherwise a UsageError naming the path."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"{what} {path}: {describe(exc)}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a regular file"
        raise UsageError(f"{what} {path} exists and is {kind}; leaving it alone")
    pid = _read_pid(path)
    if pid is None:
        raise UsageError(f"{what} {path} exists and was not written by tether; leaving it alone")
    if ProcessRef.of(pid) is not None:
        raise UsageError(f"{what} {path} names process {pid}, which is still running")
    return st


def _read_pid(path: Path) -> int | None:
    """The pid a regular file names ("1234" and a newline at most, or JSON lines of tether's
    records that all name it), else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        text = os.read(fd, JSON_LIMIT + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    if text.startswith(b"{"):
        return _record_pid(text)
    digits = text.removesuffix(b"\n")
    if not (0 < len(digits) <= 10 and digits.isdigit()) or int(digits) == 0:
        return None
    return int(digits)


def _record_pid(text: bytes) -> int | None:
    """The one pid that tether records (JSON lines with a "schema") name, else None."""
    if len(text) > JSON_LIMIT:
        return None
    try:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    except ValueError:
        return None
    pids = {
        record.get("pid") if isinstance(record, dict) and "schema" in record else None
        for record in records
    }
    if len(pids) != 1:
        return None
    (pid,) = pids
    return pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None
