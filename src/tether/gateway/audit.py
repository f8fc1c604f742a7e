"""The gateway's audit log: one JSON object per line (JSONL), appended, never rewritten.

Every grant, revoke, issuance, refusal and session is a line; an issuance carries the
certificate's serial, which sshd logs when it accepts the certificate, so every session joins
to the issuance that allowed it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path

from tether.errors import ConfigError, describe, visible


def fingerprint(key_line: str) -> str:
    """A public key's SHA256 fingerprint, as ssh-keygen -l prints it."""
    digest = hashlib.sha256(base64.b64decode(key_line.split()[1])).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def record(path: Path, event: str, **fields: object) -> None:
    """Append one line: the time (UTC), the event, its fields. One write(2) on an O_APPEND
    descriptor, so lines from processes at once never interleave."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    line: dict[str, object] = {"time": now, "event": event}
    line.update(fields)
    data = (json.dumps(line, default=str, ensure_ascii=True) + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot open the audit log: {describe(exc)}") from None
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def read(path: Path, offset: int = 0) -> tuple[list[dict[str, object]], int]:
    """The audit lines from byte ``offset`` on (whole lines only), and the offset after them.
    A line that is not a JSON object (a hand edit) is skipped, not fatal."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return [], offset
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the audit log: {describe(exc)}") from None
    complete = data[: data.rfind(b"\n") + 1]
    lines: list[dict[str, object]] = []
    for raw in complete.splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if isinstance(line, dict):
            lines.append(line)
    return lines, offset + len(complete)


def describe_line(line: dict[str, object]) -> str:
    """One audit line for people: time, event, then its fields, values made visible."""
    fields = " ".join(
        f"{key}={visible(str(value))}"
        for key, value in line.items()
        if key not in ("time", "event") and value is not None
    )
    return f"{visible(str(line.get('time', '?')))} {visible(str(line.get('event', '?')))} {fields}"
