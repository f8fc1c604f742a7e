"""`tether gateway signer|relay|agent`: run a gateway's long-running processes as tether runs a
tunnel (foreground or --background, in the registry, stopped by `tether stop`), and the hidden
commands their sshd runs for a session (feed, announce). cli/gateway.py adds them to its group."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from tether.cli.gatewayoptions import listen_option, state_option, target_options

if TYPE_CHECKING:
    from tether.modes.gatewayhost import Described, Service


def _running(func: Callable[..., None]) -> Callable[..., None]:
    """The options of a relay or an agent run as tether runs a tunnel."""
    for decorator in reversed(
        [
            click.option("--name", help="Its name in tether list and tether stop."),
            click.option(
                "--background",
                is_flag=True,
                help="Detach, and return once it is ready (its log: tether logs NAME).",
            ),
            click.option("--json", "as_json", is_flag=True, help="Print its record once ready."),
            click.option(
                "--timeout",
                default="30s",
                metavar="DURATION",
                show_default=True,
                help="Bound on getting ready.",
            ),
        ]
    ):
        func = decorator(func)
    return func


def _launch(
    service: Service, described: Described, *, background: bool, as_json: bool, timeout: str
) -> None:
    from tether.cli.report import TerminalReporter
    from tether.modes.gatewayhost import launch_service
    from tether.values import duration

    seconds = duration(timeout)
    reporter = TerminalReporter(
        described.name, seconds, as_json=as_json, hint=not background, debug=False
    )
    with reporter:
        raise SystemExit(
            launch_service(service, described, reporter, background=background, timeout=seconds)
        )


@click.command()
@click.argument("directory", type=click.Path(path_type=Path))
@listen_option("the signer's sshd listens for the relays")
@_running
def signer(
    directory: Path,
    listen: str,
    name: str | None,
    background: bool,
    as_json: bool,
    timeout: str,
) -> None:
    """Run a signer of the gateway in DIRECTORY (stock sshd, supervised; the relays log in to
    it) until SIGINT, SIGTERM or tether stop."""
    from tether.gateway.layout import Gateway
    from tether.gateway.signerhost import SignerHost
    from tether.modes.gatewayhost import Described
    from tether.spec import Endpoint
    from tether.values import label

    gateway = Gateway.existing(directory)
    running = SignerHost(gateway, Endpoint.parse(listen, what="--listen"))
    running.prepare()
    described = Described("signer", label(name or "signer"), running.listen, str(gateway.root))
    _launch(running, described, background=background, as_json=as_json, timeout=timeout)


@click.command()
@click.argument("bundle_file", metavar="BUNDLE", type=click.Path(path_type=Path))
@listen_option("the relay's sshd listens for agents and clients")
@state_option("relay", "the user's state directory")
@_running
def relay(
    bundle_file: Path,
    listen: str,
    state_dir: Path | None,
    name: str | None,
    background: bool,
    as_json: bool,
    timeout: str,
) -> None:
    """Run a relay from its BUNDLE (`tether gateway relays add`) until SIGINT, SIGTERM or tether
    stop: stock sshd, supervised, fed by a signer."""
    from tether.gateway.relay import Relay
    from tether.gateway.relaybundle import RelayBundle
    from tether.modes.gatewayhost import Described
    from tether.spec import Endpoint
    from tether.values import label

    bundle = RelayBundle.load(bundle_file)
    if state_dir is None:
        state_dir = _state_dir(f"relay-{bundle.relay}")
    running = Relay(bundle, state_dir, Endpoint.parse(listen, what="--listen"))
    running.prepare()
    described = Described(
        "relay",
        label(name or f"relay-{bundle.relay}"),
        running.listen,
        bundle.relay,
        via=", ".join(f"ssh://{signer}" for signer in bundle.signers),
    )
    _launch(running, described, background=background, as_json=as_json, timeout=timeout)


def _state_dir(leaf: str) -> Path:
    """The user's state directory for tether's ``leaf``, its parent made private."""
    import platformdirs

    state_dir = platformdirs.user_state_path("tether") / leaf
    state_dir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return state_dir


@click.command()
@click.argument("enrolment_file", metavar="ENROLMENT", type=click.Path(path_type=Path))
@target_options
@state_option("agent", "the user's state directory")
@_running
def agent(
    enrolment_file: Path,
    targets: tuple[str, ...],
    targets_file: Path | None,
    state_dir: Path | None,
    name: str | None,
    background: bool,
    as_json: bool,
    timeout: str,
) -> None:
    """Run a site's agent: the site's sshd on loopback, and an outbound link to each relay."""
    from tether.errors import UsageError, shown
    from tether.gateway.agent import Agent
    from tether.gateway.enrolment import Enrolment, read_targets
    from tether.gateway.names import parse_name
    from tether.modes.gatewayhost import Described
    from tether.spec import Endpoint
    from tether.values import label

    enrolment = Enrolment.load(enrolment_file)
    served = read_targets(targets_file) if targets_file is not None else {}
    for item in targets:
        target, equals, where = item.partition("=")
        if not equals:
            raise UsageError(f"--target: not NAME=HOST:PORT: {shown(item)}")
        served[parse_name(target, what="--target name")] = Endpoint.parse(where, what="--target")
    if state_dir is None:
        state_dir = _state_dir(f"agent-{enrolment.site}")
    running = Agent(enrolment, served, state_dir)
    running.prepare()
    assert running.sshd is not None
    described = Described(
        "agent",
        label(name or f"agent-{enrolment.site}"),
        running.sshd.listen,
        enrolment.site,
        via=", ".join(f"gw://{relay}" for relay in enrolment.relays),
    )
    _launch(running, described, background=background, as_json=as_json, timeout=timeout)


@click.command(hidden=True)
@click.argument("directory", type=click.Path(path_type=Path))
@click.argument("relay_name", metavar="RELAY")
def feed(directory: Path, relay_name: str) -> None:
    """Feed RELAY from the gateway in DIRECTORY: its policy down, its requests up, as JSON lines
    on stdin and stdout, until it leaves.

    Run by a signer's sshd for a relay's certificate (its principals line's command).
    """
    import asyncio

    from tether.gateway import feed as feeding
    from tether.gateway.layout import Gateway

    raise SystemExit(asyncio.run(feeding.run(Gateway.existing(directory), relay_name)))


@click.command(hidden=True)
@click.argument("state", metavar="STATE_DIR", type=click.Path(path_type=Path))
@click.argument("site_name", metavar="SITE")
def announce(state: Path, site_name: str) -> None:
    """Keep what SITE's agent says of itself (one JSON line on stdin) in the relay's STATE_DIR,
    then hold its session open until the agent leaves.

    Run by the relay's sshd for an agent's certificate (its principals line's command).
    """
    import os
    import sys

    from tether.gateway import announce as announcing

    line = sys.stdin.buffer.readline(announcing.MAX_LINE + 1).decode(errors="replace")
    announcing.record(state, site_name, announcing.Announcement.parse(line))
    # The session lasts as long as the agent's link: `cat` waits for its end, for a few hundred
    # kilobytes rather than a Python interpreter's megabytes per site.
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.execvp("cat", ["cat"])
