"""Background mode: a detached tether process that tells its parent, over a pipe, when it is ready.

The parent never polls: it blocks on the pipe (bounded by the timeout) and gets either the ready
record or the child's one-line error and exit code. A child that dies silently closes the pipe,
which the parent sees at once.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from tether.errors import (
    Interrupted,
    ReadinessTimeoutError,
    TetherError,
    UsageError,
    describe,
)
from tether.files import ensure_private_directory
from tether.logs import rotated
from tether.modes.signals import STOP_SIGNALS
from tether.registry import Registry

# Extra seconds the parent waits beyond --timeout, so the child can report its own, more
# precise, timeout error first.
REPORT_GRACE = 3.0
STOP_GRACE = 5.0
LOGS_KEPT = 50


class ChildFailed(TetherError):
    """The background child failed before ready; carries the child's own exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def log_directory() -> Path:
    """Where background logs go: the user's state dir (~/.local/state/tether/logs)."""
    import platformdirs

    return Path(platformdirs.user_state_dir("tether")) / "logs"


def ensure_log_directory() -> Path:
    """The log directory, created 0700 if missing, and refused if others could tamper with it."""
    return ensure_private_directory(
        log_directory(),
        what="log directory",
        fix="set XDG_STATE_HOME to a private directory",
        error=UsageError,
    )


def prune_logs(directory: Path, live_ids: set[str], keep: int = LOGS_KEPT) -> None:
    """Drop the oldest logs of finished tunnels beyond ``keep``: logs outlive tunnels, not
    forever. Other starts prune at the same time, so any file may vanish under us."""
    dated = []
    for path in directory.glob("*.log"):
        try:
            dated.append((path.stat().st_mtime, path))
        except OSError:
            continue
    dated.sort(reverse=True)
    for _, path in dated[keep:]:
        if path.stem not in live_ids:
            for part in (path, rotated(path)):
                part.unlink(missing_ok=True)


def open_log(path: Path) -> int:
    try:
        return os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_NOFOLLOW, 0o600
        )
    except OSError as exc:
        raise UsageError(f"cannot create log {path}: {describe(exc)}") from None


def launch(
    argv: list[str],
    *,
    entry_id: str,
    log_file: Path,
    timeout: float,
    registry: Registry,
    on_ready: Callable[[dict[str, Any]], None],
) -> None:
    """Start ``tether <argv>`` detached; once it reports ready, pass its ready record to
    ``on_ready``. If that fails (stdout is gone, say), the child is stopped: a start is whole
    or it leaves nothing."""
    prune_logs(log_file.parent, {entry.id for entry in registry.entries()})
    read_end, write_end = os.pipe()
    log_fd = open_log(log_file)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tether", *argv, "--ready-fd", str(write_end)],
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=log_fd,
            pass_fds=(write_end,),
            start_new_session=True,
        )
    except OSError as exc:
        os.close(read_end)
        raise TetherError(f"cannot start the background tunnel: {describe(exc)}") from None
    finally:
        os.close(write_end)
        os.close(log_fd)
    previous = {signum: signal.signal(signum, _interrupt) for signum in STOP_SIGNALS}
    try:
        message = _read_report(read_end, timeout + REPORT_GRACE)
    except BaseException:
        # Interrupted while waiting: the user wants no tunnel, so none may be left running.
        _stop_child(proc, registry, entry_id)
        raise
    finally:
        os.close(read_end)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if message is None:
        _stop_child(proc, registry, entry_id)
        raise ReadinessTimeoutError(
            f"background tunnel not ready after {timeout:g}s; stopped it", hint=f"log: {log_file}"
        )
    if "error" in message:
        proc.wait(STOP_GRACE)
        raise ChildFailed(str(message["error"]), int(message.get("exit_code", 1)))
    if "ready" not in message:
        code = proc.wait(STOP_GRACE)
        registry.discard(entry_id)
        if code < 0:
            raise ChildFailed(
                f"background tunnel was killed by signal {-code} before ready (log: {log_file})",
                128 - code,
            )
        raise ChildFailed(
            f"background tunnel exited with status {code} before ready (log: {log_file})", code or 1
        )
    try:
        on_ready(dict(message["ready"]))
    except BaseException:
        _stop_child(proc, registry, entry_id)
        raise


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise Interrupted("interrupted before the tunnel was ready", signum=signum)


def _read_report(fd: int, timeout: float) -> dict[str, Any] | None:
    """The child's one JSON report; {} if it closed the pipe without one; None on timeout."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    try:
        report = json.loads(data.split(b"\n", 1)[0])
    except ValueError:
        return {}
    return report if isinstance(report, dict) else {}


def _stop_child(proc: subprocess.Popen[bytes], registry: Registry, entry_id: str) -> None:
    """Stop a child that missed its deadline and make sure it left no entry behind."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_GRACE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    registry.discard(entry_id)


def report(fd: int, message: dict[str, Any]) -> None:
    """Child side: send the one report to the parent and close the pipe."""
    try:
        os.write(fd, json.dumps(message).encode() + b"\n")
    except OSError:
        pass  # the parent gave up waiting; the log still has everything
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
