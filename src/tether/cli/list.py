"""`tether list`: every tunnel of this user, from any process, with live state."""

from __future__ import annotations

import click

from tether.cli.listing import show_tunnels


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array (schema in README).")
def list_command(as_json: bool) -> None:
    """Show every running tunnel of this user (alias: ls)."""
    show_tunnels(as_json=as_json)
