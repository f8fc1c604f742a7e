"""`tether logs`: print a background tunnel's log."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from tether.errors import NoSuchTunnelError
from tether.manage import select_entries
from tether.modes.background import state_directory
from tether.registry import Registry


def log_path(registry: Registry, selector: str) -> Path:
    """The log of a running background tunnel, or of a finished one named by its ID."""
    try:
        (entry,) = select_entries(registry, [selector], every=False)
    except NoSuchTunnelError:
        finished = state_directory() / f"{selector}.log"
        if selector.isalnum() and finished.is_file():
            return finished
        raise
    if entry.log_file is None:
        raise NoSuchTunnelError(f"tunnel {entry.id} runs in {entry.mode} mode and has no log")
    return Path(entry.log_file)


@click.command()
@click.argument("selector", metavar="ID|NAME")
def logs(selector: str) -> None:
    """Print the log of background tunnel ID|NAME (of a finished one, by ID)."""
    path = log_path(Registry.default(), selector)
    try:
        sys.stdout.write(path.read_text(errors="replace"))
    except OSError as exc:
        raise NoSuchTunnelError(f"cannot read log {path}: {exc.strerror}") from None
