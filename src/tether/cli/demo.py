"""`tether demo`: the offline demonstration."""

from __future__ import annotations

import asyncio

import click

from tether.cli.render import echo


@click.command()
@click.argument("what", required=False, type=click.Choice(["gateway"]))
def demo(what: str | None) -> None:
    """Show tether working end to end, offline: SSH server, target and tunnel on loopback.

    `tether demo gateway` shows a gateway instead: a relay, a site's agent that only dials out,
    a user's grant, a tunnel through them, and a revoke that cuts it (no root needed).
    """
    if what == "gateway":
        from tether.gateway.demo import run_gateway_demo

        asyncio.run(run_gateway_demo(echo))
        return
    from tether.demo import run_demo

    asyncio.run(run_demo(echo))
