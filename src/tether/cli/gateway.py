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


@gateway.group()
def site() -> None:
    """Enrol and remove the sites whose agents dial out to the relays."""


@site.command("add")
@click.argument("directory", type=click.Path(path_type=Path))
@click.argument("name", metavar="SITE")
@click.option(
    "--relay",
    "relays",
    multiple=True,
    required=True,
    metavar="HOST:PORT",
    help="Where the site's agent reaches a relay (repeat for each relay).",
)
@click.option(
    "--endpoint-port",
    type=click.IntRange(1, 65535),
    help="The site's port on the relays' loopback [the first free from 42001].",
)
def site_add(
    directory: Path, name: str, relays: tuple[str, ...], endpoint_port: int | None
) -> None:
    """Enrol SITE: write its enrolment file, the only secret its agent needs."""
    from tether.gateway.enrol import add_site
    from tether.gateway.layout import Gateway
    from tether.spec import Endpoint

    addresses = [Endpoint.parse(relay, what="--relay") for relay in relays]
    enrolled = add_site(Gateway.existing(directory), name, addresses, port=endpoint_port)
    echo(f"site {enrolled.site} enrolled (endpoint port {enrolled.port})")
    echo(f"  enrolment  {enrolled.path}  (private: copy it to the site, then delete it here)")


@site.command("remove")
@click.argument("directory", type=click.Path(path_type=Path))
@click.argument("name", metavar="SITE")
def site_remove(directory: Path, name: str) -> None:
    """Remove SITE: revoke its agent's certificate and drop its grants."""
    from tether.gateway.enrol import remove_site
    from tether.gateway.layout import Gateway

    remove_site(Gateway.existing(directory), name)
    echo(f"site {name} removed; its agent's certificate is revoked")
