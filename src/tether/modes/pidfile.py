"""Pid files written atomically with user-only permissions, removed only if still ours."""

from __future__ import annotations

import os
from pathlib import Path

from tether.errors import UsageError


def write_pid_file(path: Path, pid: int | None = None) -> None:
    """Write ``pid`` (default: ours) to ``path`` atomically, mode 0600."""
    pid = os.getpid() if pid is None else pid
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{pid}\n")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"--pid-file: cannot write {path}: {exc.strerror or exc}") from None


def check_pid_file_location(path: Path) -> None:
    """Refuse a pid file whose directory does not exist, before anything starts."""
    if not path.parent.is_dir():
        raise UsageError(f"--pid-file: directory does not exist: {path.parent}")


def remove_pid_file(path: Path, pid: int | None = None) -> None:
    """Remove ``path`` if it still names ``pid``: never delete a successor's pid file."""
    pid = os.getpid() if pid is None else pid
    try:
        if path.read_text().strip() == str(pid):
            path.unlink()
    except (OSError, ValueError):
        pass
