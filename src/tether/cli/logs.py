"""`tether logs`: print a background tunnel's log."""

from __future__ import annotations

import re
from pathlib import Path

import click

from tether.cli.candidates import logged
from tether.cli.render import echo
from tether import paths
from tether.errors import NoSuchTunnelError
from tether.files import read_regular
from tether.logs import LOG_CAP, rotated
from tether.client import select_entries
from tether.registry import Registry

ENTRY_ID = re.compile(r"[0-9a-f]{8}")


def log_path(registry: Registry, selector: str) -> Path:
    """The log of a running background tunnel, or of a finished one named by its ID."""
    try:
        (entry,) = select_entries(registry, [selector], every=False)
    except NoSuchTunnelError:
        if ENTRY_ID.fullmatch(selector):
            finished = paths.log_directory() / f"{selector}.log"
            if finished.is_file():
                return finished
        raise
    if entry.log_file is None:
        raise NoSuchTunnelError(f"tunnel {entry.id} runs in {entry.mode} mode and has no log")
    return Path(entry.log_file)


@click.command()
@click.argument("selector", metavar="ID|NAME", shell_complete=logged)
def logs(selector: str) -> None:
    """Print the log of background tunnel ID|NAME (of a finished one, by ID)."""
    path = log_path(Registry.default(), selector)
    for part in (rotated(path), path):
        try:
            data = read_regular(part, limit=2 * LOG_CAP, what="log", error=NoSuchTunnelError)
        except FileNotFoundError:
            if part == path:
                raise NoSuchTunnelError(f"log {path} is gone") from None
            continue
        echo(data.decode(errors="replace"), end="")
