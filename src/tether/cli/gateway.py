"""`tether gateway`: create and run a gateway for targets in networks with no inbound path."""

from __future__ import annotations

from pathlib import Path

import click

from tether.cli.render import echo


@click.group()
def gateway() -> None:
    """A gateway: a relay, sites whose agents only dial out, access per target."""


@gateway.command()
@click.argument("directory", type=click.Path(path_type=Path))
def init(directory: Path) -> None:
    """Create a gateway in DIRECTORY (new or empty): its CAs, the relay's certified host key
    and an empty policy."""
    from tether.gateway.layout import init as create

    created = create(directory)
    echo(f"gateway created in {created.root}")
    echo(f"  user CA  {created.user_ca}.pub")
    echo(f"  host CA  {created.host_ca}.pub")
    echo(f"  policy   {created.policy}")
