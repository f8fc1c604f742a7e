"""`tether stop`: graceful stop through the control channel, waiting until each process exits."""

from __future__ import annotations

import click

from tether.cli.candidates import running
from tether.cli.render import echo

from tether.errors import StopFailedError, visible
from tether.client import StopResult, select_entries, stop_tunnels
from tether.entry import Entry
from tether.registry import Registry
from tether.values import parse_duration

DEFAULT_TIMEOUT = 10.0


def announce_stopped(entry: Entry) -> None:
    echo(visible(f"tether: stopped {entry.id} ({entry.name}, pid {entry.pid})"), err=True)


def report(result: StopResult) -> None:
    """Name every tunnel that stopped; then fail (exit 9) naming those that did not."""
    for entry in result.stopped:
        announce_stopped(entry)
    if result.failures:
        shown = result.failures[:3]
        more = len(result.failures) - len(shown)
        raise StopFailedError("; ".join(shown) + (f" (and {more} more)" if more else ""))


@click.command()
@click.argument("selectors", nargs=-1, metavar="[ID|NAME|PORT]...", shell_complete=running)
@click.option("--all", "every", is_flag=True, help="Stop every match (every tunnel if none named).")
@click.option(
    "--missing-ok", is_flag=True, help="Exit 0 when a tunnel named is not running (cleanup steps)."
)
@click.option(
    "--timeout",
    metavar="DURATION",
    help=f"Bound on the whole command [default: {DEFAULT_TIMEOUT:g}s].",
)
def stop(selectors: tuple[str, ...], every: bool, missing_ok: bool, timeout: str | None) -> None:
    """Stop tunnels by ID, NAME or local PORT."""
    seconds = parse_duration(timeout, what="--timeout") if timeout is not None else DEFAULT_TIMEOUT
    registry = Registry.default()
    entries = select_entries(registry, list(selectors), every=every, missing_ok=missing_ok)
    report(stop_tunnels(registry, entries, timeout=seconds))
    if not entries and selectors:
        named = ", ".join(repr(s) for s in selectors)
        echo(f"tether: no running tunnel matches {named}; nothing to stop", err=True)
    elif not entries:
        echo("No tunnels running", err=True)
