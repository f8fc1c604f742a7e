"""`tether stop`: graceful stop through the control channel, waiting until each process exits."""

from __future__ import annotations

import click

from tether.manage import select_entries, stop_tunnels
from tether.registry import Entry, Registry


def announce_stopped(entry: Entry) -> None:
    click.echo(f"tether: stopped {entry.id} ({entry.name}, pid {entry.pid})", err=True)


@click.command()
@click.argument("selectors", nargs=-1, metavar="[ID|NAME|PORT]...")
@click.option("--all", "every", is_flag=True, help="Stop every match (every tunnel if none named).")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Seconds to wait for each tunnel to exit.",
)
def stop(selectors: tuple[str, ...], every: bool, timeout: float) -> None:
    """Stop tunnels by ID, NAME or local PORT."""
    registry = Registry.default()
    entries = select_entries(registry, list(selectors), every=every)
    for entry in stop_tunnels(registry, entries, timeout=timeout):
        announce_stopped(entry)
    if not entries:
        click.echo("No tunnels running", err=True)
