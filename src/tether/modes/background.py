"""Background mode: a detached tether process that tells its parent, over a pipe, when it is ready.

The child is forked from the parent before any event loop or thread exists: it already holds
the parsed spec, so nothing is imported or parsed twice and nothing has to be passed through a
command line. It starts a session of its own, reads /dev/null, and writes its log.

The parent never polls: it blocks on the pipe (bounded by the timeout) and gets either the ready
record or the child's one-line error and exit code. A child that dies silently closes the pipe,
which the parent sees at once; a parent that dies closes the other end, which the child sees
and stops (see foreground.run_foreground), since nobody could learn of its tunnel any more.
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from types import FrameType
from typing import Protocol

from tether.errors import (
    Interrupted,
    ReadinessTimeoutError,
    TetherError,
    UsageError,
    describe,
)
from tether.files import ensure_private_directory
from tether.logs import TimestampedLog, as_text_stream, rotated
from tether.procs import Pinned
from tether.protocol import JSONObject
from tether.record import TunnelInfo
from tether.registry import Registry, new_id
from tether.spec import TunnelSpec

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


def ensure_log_directory(path: Path) -> Path:
    """The log directory, created 0700 if missing, and refused if others could tamper with it."""
    return ensure_private_directory(
        path,
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


def _open_log(path: Path) -> int:
    try:
        return os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_NOFOLLOW, 0o600
        )
    except OSError as exc:
        raise UsageError(f"cannot create log {path}: {describe(exc)}") from None


class Serve(Protocol):
    """What the detached child runs: the tunnel, announcing readiness through ``report_ready``
    and watching ``parent_pipe`` for the parent's death; returns the exit status, and raises
    TetherError if it fails before ready."""

    def __call__(
        self,
        *,
        parent_pipe: int,
        report_ready: Callable[[TunnelInfo], None],
        entry_id: str,
        log_file: Path,
    ) -> int: ...


def run_background(
    spec: TunnelSpec,
    registry: Registry,
    log_directory: Path,
    *,
    serve: Serve,
    on_ready: Callable[[TunnelInfo], None],
    on_error: Callable[[BaseException], int],
    waiting: Callable[[], AbstractContextManager[object]],
) -> int:
    """Start a detached tether process for ``spec``; return 0 once it reports ready.

    The child runs ``serve`` and exits with its status; a failure is reported to the parent and
    rendered into the log by ``on_error``, which returns the exit status. The parent enters
    ``waiting()`` (a spinner) while the child starts and passes the ready record to
    ``on_ready``; if that fails (stdout is gone, say), the child is stopped: a start is whole
    or it leaves nothing.
    """
    directory = ensure_log_directory(log_directory)
    entry_id = new_id()
    log_file = directory / f"{entry_id}.log"
    log_fd = _open_log(log_file)
    # After the new log exists, so that it counts among the ones kept.
    prune_logs(directory, {entry.id for entry in registry.entries()} | {entry_id})
    read_end, write_end = os.pipe()
    for stream in (sys.stdout, sys.stderr):  # or the child would write their buffers again
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass  # a broken stream: the parent finds out when it reports
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_end)
        detached = _Detached(write_end, entry_id, log_file)
        os._exit(detached.run(log_fd, serve, on_error))
    os.close(write_end)
    os.close(log_fd)
    child = _Child(Pinned.child(pid), read_end, entry_id, log_file, registry)
    with waiting():
        record = child.wait_ready(spec.timeout)
    try:
        on_ready(record)
    except BaseException:
        child.stop()
        raise
    child.process.close()  # it runs on, detached; whoever is its parent next reaps it
    return 0


def _close_inherited(keep: tuple[int, ...]) -> None:
    """Close every descriptor above stderr but ``keep``.

    A detached tunnel outlives whoever started it, so it must not hold what that process
    passed down: a make jobserver's pipe, a test runner's pipe, a lock of a --reuse start.
    Whoever waits for such a pipe's end would otherwise wait for the tunnel's.
    """
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    os.closerange(low, soft if soft != resource.RLIM_INFINITY else 1 << 20)


class _Detached:
    """The child: a session of its own, /dev/null in, the log out, the tunnel run."""

    def __init__(self, pipe: int, entry_id: str, log_file: Path) -> None:
        self.pipe: int | None = pipe  # used once: after the report, its number is reused
        self.entry_id = entry_id
        self.log_file = log_file

    def run(self, log_fd: int, serve: Serve, on_error: Callable[[BaseException], int]) -> int:
        try:
            os.setsid()
            assert self.pipe is not None
            _close_inherited(keep=(self.pipe, log_fd))
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.close(null)
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            os.close(log_fd)
            log = TimestampedLog(self.log_file)
            sys.stdout = sys.stderr = as_text_stream(log)
            try:
                assert self.pipe is not None
                return serve(
                    parent_pipe=self.pipe,
                    report_ready=lambda record: self._report({"ready": record.to_message()}),
                    entry_id=self.entry_id,
                    log_file=self.log_file,
                )
            finally:
                log.flush()
        except BaseException as exc:  # nothing may escape into the parent's code path
            code = exc.exit_code if isinstance(exc, TetherError) else 1
            self._report({"error": str(exc), "exit_code": code})
            return on_error(exc)

    def _report(self, message: JSONObject) -> None:
        """Send the one report to the parent and close the pipe."""
        if self.pipe is None:
            return
        pipe, self.pipe = self.pipe, None
        try:
            os.write(pipe, json.dumps(message).encode() + b"\n")
        except OSError:
            pass  # the parent gave up waiting; the log still has everything
        finally:
            os.close(pipe)


class _Child:
    """The parent's view of a detached child that has not reported yet."""

    def __init__(
        self, process: Pinned, pipe: int, entry_id: str, log_file: Path, registry: Registry
    ) -> None:
        self.process = process
        self.pipe = pipe
        self.entry_id = entry_id
        self.log_file = log_file
        self.registry = registry

    def wait_ready(self, timeout: float) -> TunnelInfo:
        """The child's ready record; its failure, an interruption or a timeout otherwise (the
        child then stopped and reaped, and no entry of it left)."""
        previous = {signum: signal.signal(signum, _interrupt) for signum in _SIGNALS}
        try:
            message = _read_report(self.pipe, timeout + REPORT_GRACE)
        except BaseException:
            # Interrupted while waiting: the user wants no tunnel, so none may be left running.
            self.stop()
            raise
        finally:
            os.close(self.pipe)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if message is None:
            self.stop()
            raise ReadinessTimeoutError(
                f"background tunnel not ready after {timeout:g}s; stopped it",
                hint=f"log: {self.log_file}",
            )
        if "error" in message:
            self._reap(STOP_GRACE)
            code = message.get("exit_code")
            raise ChildFailed(str(message["error"]), code if isinstance(code, int) else 1)
        try:
            ready = TunnelInfo.from_message(message.get("ready"))
        except ValueError:
            code = self._reap(STOP_GRACE)
            self.registry.discard(self.entry_id)
            if code is not None and code < 0:
                raise ChildFailed(
                    f"background tunnel was killed by signal {-code} before ready "
                    f"(log: {self.log_file})",
                    128 - code,
                ) from None
            raise ChildFailed(
                f"background tunnel exited with status {code} before ready (log: {self.log_file})",
                code or 1,
            ) from None
        return ready

    def stop(self) -> None:
        """Stop the child (SIGTERM, then SIGKILL), reap it, and remove any entry it left."""
        self.process.signal(signal.SIGTERM)
        if self._reap(STOP_GRACE) is None:
            self.process.signal(signal.SIGKILL)
            self._reap(None)
        self.registry.discard(self.entry_id)

    def _reap(self, timeout: float | None) -> int | None:
        """The child's exit code (-N if killed by signal N) once it has exited, waiting up to
        ``timeout`` seconds for that (None: as long as it takes); None if it has not."""
        if timeout is not None and not self.process.wait(timeout):
            return None
        _, status = os.waitpid(self.process.pid, 0)
        self.process.close()
        return os.waitstatus_to_exitcode(status)


_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise Interrupted("interrupted before the tunnel was ready", signum=signum)


def _read_report(fd: int, timeout: float) -> JSONObject | None:
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
