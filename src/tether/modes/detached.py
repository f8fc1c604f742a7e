"""Where a background tunnel's child was put by its parent (background.py), which the mode it
runs (foreground.py, gatewayhost.py) reports through."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Detached:
    """A background tunnel's child: the entry id and log its parent chose, and the write end of
    the ready pipe. If the parent goes away before ready, nobody would ever learn of this
    tunnel, so it stops as on SIGHUP."""

    entry_id: str
    log_file: Path
    pipe: int
