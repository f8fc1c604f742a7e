"""`tether demo`: the offline demonstration."""

from __future__ import annotations

import asyncio

import click

from tether.cli.render import echo


@click.command()
def demo() -> None:
    """Show tether working end to end, offline: SSH server, target and tunnel on loopback."""
    from tether.demo import run_demo

    asyncio.run(run_demo(echo))
