"""The gateway's audit log: one JSON object per line (JSONL), appended, never rewritten.

Every grant, revoke, issuance, refusal and session is a line; an issuance carries the
certificate's serial, which sshd logs when it accepts the certificate, so every session joins
to the issuance that allowed it.

The log rotates by size: the writer whose line takes ``audit.jsonl`` to ``ROTATE_AT`` bytes
moves it aside to ``audit-STAMP.jsonl`` (STAMP the UTC time of the move, to the microsecond, so
the names sort as the segments were written). tether never deletes a segment: archiving or
removing them is the operator's call. No writer holds the file open between lines, so an
operator's logrotate may rename it too (never copytruncate): nothing is lost either way.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType

from tether.errors import ConfigError, describe, visible

#: The size at which a writer moves the log aside: a segment is this and at most a few lines.
ROTATE_AT = 64 * 1024 * 1024

# A segment's stamp has a fixed width, so that the names sort as the times do.
_STAMP = "%Y%m%dT%H%M%S.%fZ"
_STAMP_PATTERN = r"\d{8}T\d{6}\.\d{6}Z"
_CHUNK = 1 << 20

log = logging.getLogger("tether")

Line = dict[str, object]


def fingerprint(key_line: str) -> str:
    """A public key's SHA256 fingerprint, as ssh-keygen -l prints it."""
    digest = hashlib.sha256(base64.b64decode(key_line.split()[1])).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def record(path: Path, event: str, **fields: object) -> None:
    """Append one line: the time (UTC), the event, its fields."""
    line: Line = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": event}
    line.update(fields)
    append(path, line)


def append(path: Path, line: Line, *, rotate_at: int = ROTATE_AT) -> None:
    """Append ``line``: one write(2) on an O_APPEND descriptor, so lines from processes at once
    never interleave. The file is opened anew for each line, and a line that takes it to
    ``rotate_at`` bytes moves it aside."""
    data = (json.dumps(line, default=str, ensure_ascii=True) + "\n").encode()
    fd = _open_current(path)
    try:
        os.write(fd, data)
        if os.fstat(fd).st_size >= rotate_at:
            _rotate(path, fd)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the audit log: {describe(exc)}") from None
    finally:
        os.close(fd)


def _open_current(path: Path) -> int:
    """The log open for appending, under a shared lock that a rotation's exclusive one waits
    for: so no line lands in a file after its move, and a reader that saw the move and read
    the file to its end has read every line of it (an operator's rename takes no lock: a line
    may land after it, never lost). A file moved between the open and the lock is let go."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    while True:
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot open the audit log: {describe(exc)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            if _identity(os.stat(path, follow_symlinks=False)) == _identity(os.fstat(fd)):
                return fd
        except FileNotFoundError:
            pass  # moved aside since the open: the next open makes the new file
        except OSError as exc:
            os.close(fd)
            raise ConfigError(f"{path}: cannot lock the audit log: {describe(exc)}") from None
        os.close(fd)


def _rotate(path: Path, fd: int) -> None:
    """Move the log open on ``fd`` aside, if ``path`` still names it. Writers that find it full
    at once queue on its lock: the first moves it, the others find it moved and carry on. A
    failure is a warning, not an error: the line is written, and the next line tries again."""
    try:
        # From the shared lock to the exclusive one: the writers mid-line finish first.
        fcntl.flock(fd, fcntl.LOCK_EX)  # released by the caller's close
        if _identity(os.stat(path, follow_symlinks=False)) != _identity(os.fstat(fd)):
            return
        segment = _reserve(path)
        try:
            # rename, not link and unlink: the path's file moves whole, whatever it is by now
            # (the operator's logrotate may have renamed it since the check), and nothing is
            # ever unlinked by name. It replaces only the empty name _reserve made.
            os.rename(path, segment)
        except OSError:
            segment.unlink(missing_ok=True)
            raise
    except FileNotFoundError:
        return  # moved aside already, by another writer or by the operator
    except (OSError, ConfigError, OverflowError) as exc:
        reason = exc.message if isinstance(exc, ConfigError) else describe(exc)
        log.warning("%s: cannot rotate the audit log: %s", visible(str(path)), reason)


def _reserve(path: Path) -> Path:
    """A new segment's name, taken by creating it empty with O_EXCL (so no file is ever
    overwritten), and later than every segment's so far even if the clock went back."""
    when = datetime.now(UTC)
    stamps = [stamp for segment in segments(path) if (stamp := _stamp_of(path, segment))]
    if stamps:
        when = max(when, max(stamps) + timedelta(microseconds=1))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    while True:
        candidate = path.with_name(f"{path.stem}-{when.strftime(_STAMP)}{path.suffix}")
        try:
            os.close(os.open(candidate, flags, 0o600))
        except FileExistsError:
            when += timedelta(microseconds=1)  # another log's rotation, the same microsecond
            continue
        return candidate


def segments(path: Path) -> list[Path]:
    """The segments moved aside from the log at ``path``, oldest first. Files of other names
    (what logrotate renamed, hand copies) are not among them."""
    pattern = re.compile(re.escape(path.stem) + "-" + _STAMP_PATTERN + re.escape(path.suffix))
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(f"{path.parent}: cannot list the audit log: {describe(exc)}") from None
    return [path.parent / name for name in sorted(names) if pattern.fullmatch(name)]


def _stamp_of(path: Path, segment: Path) -> datetime | None:
    """When ``segment`` was moved aside, as its name says; None for a name of no real time
    (a hand-made 20261399T...), which sorts where it sorts and moves no other."""
    stamp = segment.name[len(path.stem) + 1 : -len(path.suffix) or None]
    try:
        return datetime.strptime(stamp, _STAMP).replace(tzinfo=UTC)
    except ValueError:
        return None


def _identity(status: os.stat_result) -> tuple[int, int]:
    return status.st_dev, status.st_ino


def history(path: Path) -> Iterator[Line]:
    """Every line of the log so far: its segments, oldest first, then the current file."""
    with Follower(path) as follower:
        yield from follower.lines()


class Follower:
    """The log's lines in order and each once: its segments, oldest first, then the current
    file, then at each later call what was written since, following the file across its
    rotations (tether's, or an operator's logrotate). Segments are found by their names: a
    file the operator renamed before this follower had opened it is not read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._current: _Reading | None = None
        self._done: set[str] = set()  # the segments read, or read as the current file
        # Files moved aside at the last call, read once more at the next: a writer that
        # opened one just before an operator's rename (which takes no lock) may add a line.
        self._late: list[_Reading] = []

    def lines(self) -> Iterator[Line]:
        """The lines recorded since the last call (at the first, all of them)."""
        while self._late:
            with self._late.pop(0) as late:
                yield from late.lines(finished=True)
        while True:
            old = self._current
            if old is not None:
                yield from old.lines()
                if self._names(old):
                    return
                yield from old.lines()  # what was written before it moved
                self._late.append(old)
                self._current = None
            # Opened before the segments are listed: a rotation in between shows as the new
            # file among the segments, and a segment is never missed.
            new = self._current = _Reading.open(self.path)
            yield from self._segments(old, new)
            if new is None:
                return

    def _names(self, reading: _Reading) -> bool:
        """Whether the log's path still names the file being read."""
        try:
            status = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot read the audit log: {describe(exc)}") from None
        return _identity(status) == reading.identity

    def _segments(self, old: _Reading | None, new: _Reading | None) -> Iterator[Line]:
        """The segments not read yet, up to the current file ``new`` if it has been moved aside
        already; ``old``, moved aside, is read from its own handle."""
        for segment in segments(self.path):
            if segment.name in self._done:
                continue
            reading = _Reading.open(segment)
            if reading is None:
                continue  # archived by the operator since the listing
            with reading:
                if new is not None and reading.identity == new.identity:
                    return
                if old is None or reading.identity != old.identity:
                    if reading.size() == 0:
                        continue  # a name a rotation has taken, and not yet filled
                    yield from reading.lines(finished=True)
            self._done.add(segment.name)

    def close(self) -> None:
        for reading in [*self._late, *([self._current] if self._current else [])]:
            reading.close()
        self._late, self._current = [], None

    def __enter__(self) -> Follower:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _Reading:
    """One file of the log, open, read up to its last whole line."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path
        self.identity = _identity(os.fstat(fd))
        self.offset = 0
        self.partial = b""

    @classmethod
    def open(cls, path: Path) -> _Reading | None:
        """``path`` open for reading, or None if there is no such file."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the audit log: {describe(exc)}") from None
        return cls(fd, path)

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def lines(self, *, finished: bool = False) -> Iterator[Line]:
        """The whole lines written since the last call; ``finished``: the file takes no more
        lines, and an unterminated last one (a hand edit) counts too."""
        if self.size() < self.offset:  # emptied in place (a copytruncate): read it anew
            self.offset, self.partial = 0, b""
        while True:
            try:
                chunk = os.pread(self.fd, _CHUNK, self.offset)
            except OSError as exc:
                raise ConfigError(
                    f"{self.path}: cannot read the audit log: {describe(exc)}"
                ) from None
            if not chunk:
                break
            self.offset += len(chunk)
            data = self.partial + chunk
            end = data.rfind(b"\n") + 1
            self.partial = data[end:]
            yield from _parsed(data[:end].splitlines())
        if finished and self.partial:
            yield from _parsed([self.partial])
            self.partial = b""

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> _Reading:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _parsed(raws: list[bytes]) -> Iterator[Line]:
    """The lines that are JSON objects; any other (a hand edit) is skipped, not fatal."""
    for raw in raws:
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if isinstance(line, dict):
            yield line


def describe_line(line: Line) -> str:
    """One audit line for people: time, event, then its fields, values made visible."""
    fields = " ".join(
        f"{key}={visible(str(value))}"
        for key, value in line.items()
        if key not in ("time", "event") and value is not None
    )
    return f"{visible(str(line.get('time', '?')))} {visible(str(line.get('event', '?')))} {fields}"
