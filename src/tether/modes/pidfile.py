"""Pid files written atomically with user-only permissions, removed only if still ours."""

from __future__ import annotations

import os
from pathlib import Path

from tether.errors import UsageError
from tether.registry import write_private


def write_pid_file(path: Path, pid: int | None = None) -> None:
    """Write ``pid`` (default: ours) to ``path`` atomically, mode 0600."""
    pid = os.getpid() if pid is None else pid
    try:
        write_private(path, f"{pid}\n")
    except OSError as exc:
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
