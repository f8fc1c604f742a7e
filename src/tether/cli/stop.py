"""`tether stop`: graceful stop through the control channel, waiting until each process exits.
Its plain forms skip click (cli/stopping.py, which does the work for both)."""

from __future__ import annotations

import click

from tether.cli.candidates import running
from tether.cli.stopping import stop_selected
from tether.client import STOP_TIMEOUT
from tether.values import parse_duration


@click.command()
@click.argument("selectors", nargs=-1, metavar="[ID|NAME|PORT]...", shell_complete=running)
@click.option("--all", "every", is_flag=True, help="Stop every match (every tunnel if none named).")
@click.option(
    "--missing-ok", is_flag=True, help="Exit 0 when a tunnel named is not running (cleanup steps)."
)
@click.option(
    "--timeout",
    metavar="DURATION",
    help=f"Bound on the whole command [default: {STOP_TIMEOUT:g}s].",
)
def stop(selectors: tuple[str, ...], every: bool, missing_ok: bool, timeout: str | None) -> None:
    """Stop tunnels by ID, NAME or local PORT."""
    seconds = parse_duration(timeout, what="--timeout") if timeout is not None else STOP_TIMEOUT
    stop_selected(list(selectors), every=every, missing_ok=missing_ok, timeout=seconds)
