"""Process-wide state read without changing it (os.umask can only be read by setting it)."""

from __future__ import annotations

from pathlib import Path


def umask(pid: int | str = "self") -> int:
    """The umask of process ``pid``, as the kernel reports it in /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    raise AssertionError(f"no Umask line in /proc/{pid}/status")
