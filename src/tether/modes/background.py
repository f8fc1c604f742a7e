"""Background mode: a detached tether process that tells its parent, over a pipe, when it is ready.

The child is forked from the parent before any event loop or thread exists: it already holds
the parsed spec, so nothing is imported or parsed twice and nothing has to be passed through a
command line. It starts a session of its own, reads /dev/null, writes its log, and runs the
foreground mode itself (foreground.Foreground), reporting through the pipe: each phase as it
comes, then the ready record or its one-line error and exit code.

The parent never polls: it blocks on the pipe (bounded by the timeout), passing each phase on to
its own reporter. A child that dies silently closes the pipe, which the parent sees at once; a
parent that dies closes the other end, which the child sees and stops, since nobody could learn
of its tunnel any more.
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tether.errors import (
    ChildFailed,
    ReadinessTimeoutError,
    UsageError,
    map_exceptions,
)
from tether.files import ensure_private_directory
from tether.logs import TimestampedLog, as_text_stream, rotated
from tether.modes.detached import Detached
from tether.modes.pidfile import NO_FILES, ReadyFiles
from tether.modes.report import Reporter, exit_status
from tether.modes.signals import interrupting
from tether.procs import Pinned
from tether.protocol import JSONObject
from tether.states import STATES, State
from tether.record import TunnelInfo
from tether.registry import Registry, new_id
from tether.spec import TunnelSpec
from tether.transports.prelogin import logins_begun

# Extra seconds the parent waits beyond --timeout, so the child can report its own, more
# precise, timeout error first.
REPORT_GRACE = 3.0
STOP_GRACE = 5.0
LOGS_KEPT = 50


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
    with map_exceptions({OSError: UsageError}, f"cannot create log {path}"):
        return os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_NOFOLLOW, 0o600
        )


def run_background(
    spec: TunnelSpec,
    registry: Registry,
    reporter: Reporter,
    log_directory: Path,
    *,
    files: ReadyFiles = NO_FILES,
) -> int:
    """Start a detached tether process for ``spec``; return 0 once it reports ready.

    The child runs the foreground mode and exits with its status; it says its phases, and a
    failure, to the parent through the pipe, and to its log through ``reporter.detached()``.
    The parent passes the phases and the ready record to ``reporter``; if its ``ready`` fails
    (stdout is gone, say), the child is stopped: a start is whole or it leaves nothing.
    """

    def foreground(place: Detached, child: Reporter) -> int:
        with interrupting(), logins_begun([spec], registry.directory):  # while the rest loads
            from tether.modes import runtime
            from tether.modes.foreground import Foreground

            tunnel = Foreground(spec, registry, child, files=files, detached=place)
            return runtime.run(tunnel.run())

    return detach(foreground, registry, reporter, log_directory, spec.timeout)


def detach(
    body: Callable[[Detached, Reporter], int],
    registry: Registry,
    reporter: Reporter,
    log_directory: Path,
    timeout: float,
) -> int:
    """Run ``body`` in a detached child (its place: entry id, log, ready pipe; and the reporter
    that tells the parent); return 0 once it reports ready within ``timeout``. A tunnel's
    background mode, and a gateway's relay or agent in the background."""
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
        child = _Detached(Detached(entry_id, log_file, write_end), reporter.detached())
        os._exit(child.run(log_fd, body))
    os.close(write_end)
    os.close(log_fd)
    waiting = _Child(Pinned.child(pid), read_end, entry_id, log_file, registry)
    record = waiting.wait_ready(timeout, reporter)
    try:
        reporter.ready([record])
    except BaseException:
        waiting.stop()
        raise
    waiting.process.close()  # it runs on, detached; whoever is its parent next reaps it
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
    """The child: a session of its own, /dev/null in, the log out, the foreground mode run."""

    def __init__(self, place: Detached, log_reporter: Reporter) -> None:
        self.place = place
        self.pipe: int | None = place.pipe  # used until the report: then its number is reused
        self.parent_gone = False
        self.log_reporter = log_reporter

    def run(self, log_fd: int, body: Callable[[Detached, Reporter], int]) -> int:
        try:
            os.setsid()
            _close_inherited(keep=(self.place.pipe, log_fd))
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.close(null)
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            os.close(log_fd)
            log = TimestampedLog(self.place.log_file)
            sys.stdout = sys.stderr = as_text_stream(log)
            try:
                return body(self.place, self)
            finally:
                log.flush()
        except BaseException as exc:  # nothing may escape into the parent's code path
            self._send({"error": str(exc), "exit_code": exit_status(exc)}, last=True)
            return self.log_reporter.failed(exc)

    # The child's reporter: its log, and the parent through the pipe.
    def phase(self, state: State) -> None:
        self._send({"phase": state})

    def ready(self, records: Sequence[TunnelInfo], *, reused: bool = False) -> None:
        self.log_reporter.ready(records)
        self._send({"ready": records[0].to_message()}, last=True)

    def failed(self, exc: BaseException) -> int:
        return self.log_reporter.failed(exc)

    def detached(self) -> Reporter:
        return self.log_reporter

    def _send(self, message: JSONObject, *, last: bool = False) -> None:
        """Send a line to the parent; the ``last`` one closes the pipe.

        A parent that is gone (killed, or it gave up waiting) gets nothing more, and its end
        is what the starting tunnel's watch of the pipe sees (foreground.py): so the pipe stays
        open until the last report, and its number is not reused under that watch. The log
        still has everything."""
        if self.pipe is None:
            return
        if not self.parent_gone:
            try:
                os.write(self.pipe, json.dumps(message).encode() + b"\n")
            except OSError:
                self.parent_gone = True
        if last:
            os.close(self.pipe)
            self.pipe = None


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

    def wait_ready(self, timeout: float, reporter: Reporter) -> TunnelInfo:
        """The child's ready record, its phases passed on to ``reporter`` meanwhile; its
        failure, an interruption or a timeout otherwise (the child then stopped and reaped, and
        no entry of it left)."""
        try:
            with interrupting():
                message = _read_report(self.pipe, timeout + REPORT_GRACE, reporter)
        except BaseException:
            # Interrupted while waiting: the user wants no tunnel, so none may be left running.
            self.stop()
            raise
        finally:
            os.close(self.pipe)
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


def _read_report(fd: int, timeout: float, reporter: Reporter) -> JSONObject | None:
    """The child's last report (ready or error), its phases passed on to ``reporter``; {} if it
    closed the pipe without one; None on timeout."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        while b"\n" in data:
            line, data = data.split(b"\n", 1)
            try:
                report = json.loads(line)
            except ValueError:
                return {}
            if not isinstance(report, dict):
                return {}
            if report.get("phase") not in STATES:
                return report
            reporter.phase(report["phase"])
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return {}
        data += chunk
