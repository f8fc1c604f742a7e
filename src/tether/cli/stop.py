"""`tether stop`: graceful stop through the control channel, waiting until each process exits."""

from __future__ import annotations

import click

from tether.cli.candidates import running
from tether.cli.render import echo, report_stopped
from tether.client import STOP_TIMEOUT, select_entries, stop_tunnels
from tether.registry import Registry
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
    registry = Registry.default()
    entries = select_entries(registry, list(selectors), every=every, missing_ok=missing_ok)
    report_stopped(stop_tunnels(registry, entries, timeout=seconds))
    if not entries and selectors:
        named = ", ".join(repr(s) for s in selectors)
        echo(f"tether: no running tunnel matches {named}; nothing to stop", err=True)
    elif not entries:
        echo("No tunnels running", err=True)
