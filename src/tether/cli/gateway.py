"""`tether gateway`: create and run a gateway for targets in networks with no inbound path."""

from __future__ import annotations

from pathlib import Path

import click

from tether.cli.gatewayrun import agent, announce, feed, relay, signer
from tether.cli.gatewayunit import systemd_unit
from tether.cli.render import echo


@click.group()
def gateway() -> None:
    """A gateway: relays, signers, sites whose agents only dial out, access per target."""


# The processes a gateway runs, and the commands their sshd runs (gatewayrun.py); their units.
for command in (signer, relay, agent, feed, announce, systemd_unit):
    gateway.add_command(command)


@gateway.command()
@click.argument("directory", type=click.Path(path_type=Path))
def init(directory: Path) -> None:
    """Create a gateway in DIRECTORY (new or empty): its CAs, the signer's certified host key
    and an empty policy."""
    from tether.gateway.layout import init as create

    created = create(directory)
    echo(f"gateway created in {created.root}")
    echo(f"  user CA  {created.user_ca}.pub")
    echo(f"  host CA  {created.host_ca}.pub")
    echo(f"  policy   {created.policy}")


@gateway.command()
@click.argument("directory", type=click.Path(path_type=Path))
def trust(directory: Path) -> None:
    """Print the known_hosts lines that make ssh (and tether) trust this gateway's relays and
    sites, and nothing else (one per host CA: two during its rollover): put them in each
    user's ~/.ssh/known_hosts."""
    from tether.gateway.hops import known_hosts_lines
    from tether.gateway.layout import Gateway

    gateway = Gateway.existing(directory)
    echo(known_hosts_lines(gateway.trusted("host")).rstrip("\n"))


@gateway.group()
def ca() -> None:
    """Roll a CA over without an outage: add the next one, use it, retire the old one."""


KIND = click.Choice(["user", "host"])


@ca.command("add")
@click.argument("directory", type=click.Path(path_type=Path))
@click.argument("kind", metavar="user|host", type=KIND)
def ca_add(directory: Path, kind: str) -> None:
    """Create the next CA of KIND and trust it beside the current one, which still signs."""
    from tether.gateway import cas
    from tether.gateway.layout import Gateway

    key = cas.add(Gateway.existing(directory).root, cas.parse_kind(kind))
    echo(f"{kind} CA added: {key}.pub, trusted beside the current one, which still signs")
    if kind == "host":
        echo("  next: give users the lines of: tether gateway trust DIR; re-enrol the sites")
    else:
        echo("  next: re-enrol the sites (their sshds learn the new CA), then: ca use")


@ca.command("use")
@click.argument("directory", type=click.Path(path_type=Path))
@click.argument("kind", metavar="user|host", type=KIND)
def ca_use(directory: Path, kind: str) -> None:
    """Sign with the new CA of KIND from now on; the old one's certificates stay trusted."""
    from tether.gateway import cas
    from tether.gateway.layout import Gateway

    key = cas.use(Gateway.existing(directory).root, cas.parse_kind(kind))
    echo(f"{kind} CA {key}.pub signs from now on")
    echo("  next: re-issue relay bundles and re-enrol sites, then: ca retire")


@ca.command("retire")
@click.argument("directory", type=click.Path(path_type=Path))
@click.argument("kind", metavar="user|host", type=KIND)
def ca_retire(directory: Path, kind: str) -> None:
    """Trust the old CA of KIND no more, and delete its key."""
    from tether.gateway import cas
    from tether.gateway.layout import Gateway

    key = cas.retire(Gateway.existing(directory).root, cas.parse_kind(kind))
    echo(f"{kind} CA {key}.pub retired: its certificates are refused, its key is deleted")


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
@click.option(
    "--relay-account",
    metavar="NAME",
    help="The account the relays run as, which the agent logs in as [yours].",
)
def site_add(
    directory: Path,
    name: str,
    relays: tuple[str, ...],
    endpoint_port: int | None,
    relay_account: str | None,
) -> None:
    """Enrol SITE: write its enrolment file, the only secret its agent needs."""
    from tether.gateway.enrol import add_site
    from tether.gateway.layout import Gateway
    from tether.spec import Endpoint

    addresses = [Endpoint.parse(relay, what="--relay") for relay in relays]
    enrolled = add_site(
        Gateway.existing(directory), name, addresses, port=endpoint_port, account=relay_account
    )
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


@gateway.group()
def user() -> None:
    """Name users with their SSH public key."""


@user.command("add")
@click.argument("directory", type=click.Path(path_type=Path))
@click.argument("name", metavar="USER")
@click.argument("key_file", metavar="KEY.pub", type=click.Path(path_type=Path))
def user_add(directory: Path, name: str, key_file: Path) -> None:
    """Name USER with the public key in KEY.pub (their own: the private key never leaves them)."""
    from tether.errors import UsageError
    from tether.files import KEY_LIMIT, read_regular
    from tether.gateway import policy
    from tether.gateway.layout import Gateway

    gateway = Gateway.existing(directory)
    try:
        text = read_regular(key_file, limit=KEY_LIMIT, what="KEY.pub", error=UsageError)
    except FileNotFoundError:
        raise UsageError(f"KEY.pub: {key_file}: no such file") from None
    policy.add_user(gateway.policy, name, text.decode(errors="replace"))
    echo(f"user {name} added")


@user.command("remove")
@click.argument("directory", type=click.Path(path_type=Path))
@click.argument("name", metavar="USER")
def user_remove(directory: Path, name: str) -> None:
    """Remove USER and every grant of theirs."""
    from tether.gateway import policy
    from tether.gateway.layout import Gateway
    from tether.gateway.signer import revoke_issued

    gateway = Gateway.existing(directory)
    policy.remove_user(gateway.policy, name)
    revoke_issued(gateway, name)
    echo(f"user {name} removed")


@gateway.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.argument("name", metavar="USER")
@click.argument("target", metavar="SITE/TARGET")
@click.option(
    "--for",
    "lasting",
    metavar="DURATION",
    help="How long the grant lasts (5m, 8h, 30d) [until revoked].",
)
def grant(directory: Path, name: str, target: str, lasting: str | None) -> None:
    """Let USER reach SITE/TARGET (for DURATION, or until revoked)."""
    from datetime import UTC, datetime, timedelta

    from tether.gateway import audit, policy
    from tether.gateway.layout import Gateway
    from tether.gateway.names import parse_target_path
    from tether.values import parse_duration

    gateway = Gateway.existing(directory)
    site, target_name = parse_target_path(target, what="SITE/TARGET")
    until = None
    if lasting is not None:
        lasting_s = parse_duration(lasting, what="--for")
        until = (datetime.now(UTC) + timedelta(seconds=lasting_s)).replace(microsecond=0)
    policy.grant(gateway.policy, name, site, target_name, until)
    audit.record(
        gateway.audit,
        "granted",
        user=name,
        site=site,
        target=target_name,
        until=until.isoformat() if until else None,
    )
    echo(
        f"{name} may reach {site}/{target_name}"
        + (f" until {until:%Y-%m-%d %H:%M:%SZ}" if until else "")
    )


@gateway.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.argument("name", metavar="USER")
@click.argument("target", metavar="SITE/TARGET")
def revoke(directory: Path, name: str, target: str) -> None:
    """End USER's grant of SITE/TARGET."""
    from tether.gateway import audit, policy
    from tether.gateway.layout import Gateway
    from tether.gateway.names import parse_target_path
    from tether.gateway.signer import revoke_issued

    gateway = Gateway.existing(directory)
    site, target_name = parse_target_path(target, what="SITE/TARGET")
    policy.revoke(gateway.policy, name, site, target_name)
    revoke_issued(gateway, name, site, target_name)
    audit.record(gateway.audit, "revoked", user=name, site=site, target=target_name)
    echo(f"{name} may no longer reach {site}/{target_name}")


@gateway.group()
def relays() -> None:
    """Add and remove the relays that sites link to and clients jump through."""


@relays.command("add")
@click.argument("directory", type=click.Path(path_type=Path))
@click.argument("name", metavar="RELAY")
@click.option(
    "--signer",
    "signers",
    multiple=True,
    required=True,
    metavar="HOST:PORT",
    help="A signer the relay logs in to (`tether gateway signer --listen`); repeat for each.",
)
@click.option(
    "--signer-account",
    metavar="ACCOUNT",
    help="The account the signers run as [the one running this command].",
)
def relays_add(
    directory: Path, name: str, signers: tuple[str, ...], signer_account: str | None
) -> None:
    """Add relay RELAY: write its bundle (DIRECTORY/relays/RELAY.toml), which holds its keys and
    no CA key; run it with `tether gateway relay BUNDLE --listen ADDR:PORT`."""
    from tether.gateway.layout import Gateway
    from tether.gateway.relaybundle import add_relay
    from tether.spec import Endpoint

    gateway = Gateway.existing(directory)
    addresses = [Endpoint.parse(s, what="--signer") for s in signers]
    path = add_relay(gateway, name, addresses, signer_account=signer_account)
    echo(f"relay {name} added; its bundle: {path}")
    echo("copy it (privately) to the relay's host and run:")
    echo(f"  tether gateway relay {path.name} --listen ADDR:PORT")


@relays.command("remove")
@click.argument("directory", type=click.Path(path_type=Path))
@click.argument("name", metavar="RELAY")
def relays_remove(directory: Path, name: str) -> None:
    """Remove relay RELAY: revoke its certificates; the signers cut it off."""
    from tether.gateway.layout import Gateway
    from tether.gateway.relaybundle import remove_relay

    remove_relay(Gateway.existing(directory), name)
    echo(f"relay {name} removed; the signers no longer take it")


@gateway.command("audit")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, as recorded.")
@click.option("--follow", is_flag=True, help="Keep printing lines as they are recorded.")
def audit_command(directory: Path, as_json: bool, follow: bool) -> None:
    """Print the gateway's audit log: grants, issuances, refusals, sessions cut; its rotated
    segments first, oldest first, then the current file (--follow follows it across
    rotations)."""
    import json
    import time

    from tether.gateway import audit
    from tether.gateway.layout import Gateway

    gateway = Gateway.existing(directory)
    with audit.Follower(gateway.audit) as follower:
        while True:
            for line in follower.lines():
                echo(json.dumps(line) if as_json else audit.describe_line(line))
            if not follow:
                return
            time.sleep(0.5)  # a file has no event to wait on without inotify


@gateway.command("status")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON document (keys in README).")
def status_command(directory: Path, as_json: bool) -> None:
    """Show the gateway in DIRECTORY as its relays last told the signers: each relay up or
    down, the relays each site is linked to, and the live sessions with what is left of their
    grant and certificate."""
    from tether.cli.gatewaystatus import render_status
    from tether.gateway.gatewaystatus import gather
    from tether.gateway.layout import Gateway

    echo(render_status(gather(Gateway.existing(directory)), as_json=as_json))
