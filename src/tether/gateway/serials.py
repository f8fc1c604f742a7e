"""Certificate serials: one counter per gateway, taken under a lock, so that every certificate
it issues has its own serial (the audit log and the revocation list name certificates by it)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from tether.errors import ConfigError, describe


def next_serial(path: Path) -> int:
    """The next serial of the counter at ``path`` (which holds the last one issued)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot open the serial counter: {describe(exc)}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held for a read and a write: microseconds
        text = os.pread(fd, 64, 0).decode(errors="replace").strip()
        if not text.isdigit():
            raise ConfigError(f"{path}: not a serial counter: {text[:20]!r}")
        serial = int(text) + 1
        data = f"{serial}\n".encode()
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        os.fsync(fd)
        return serial
    finally:
        os.close(fd)
