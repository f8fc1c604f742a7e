"""`tether gateway systemd-unit signer|relay|agent`: print (or write) the systemd unit that runs
a gateway process, from the same arguments its own command takes. The files are read here, as
that command reads them, so that a unit is made only for a gateway, a bundle or an enrolment
that would run; the text is gatewayunits.py's."""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from tether.cli.candidates import directories
from tether.cli.gatewayoptions import listen_option, state_option, target_options
from tether.cli.render import echo
from tether.cli.units import tether_command, write_units
from tether.errors import UsageError, shown
from tether.paths import RUNTIME_ENV

if TYPE_CHECKING:
    from tether.gatewayunits import Account, GatewayProcess


@click.group("systemd-unit")
def systemd_unit() -> None:
    """Print a systemd unit that runs a signer, a relay or an agent under the service manager.

    \b
    tether gateway systemd-unit signer /srv/gw --listen 10.0.0.5:2200 --run-as gw
    tether gateway systemd-unit relay r1.toml --listen 0.0.0.0:2222 --user
    tether gateway systemd-unit agent lab.toml --target db=10.1.0.7:5432 --output-dir DIR
    """


def _unit_options(func: Callable[..., None]) -> Callable[..., None]:
    """What every kind's unit takes beside its process's own arguments."""
    for decorator in reversed(
        [
            click.option("--name", help="Its name in tether list, and the unit's (tether-NAME)."),
            click.option(
                "--user", "user_mode", is_flag=True, help="A user unit (systemctl --user)."
            ),
            click.option(
                "--run-as",
                metavar="ACCOUNT",
                help="The account a system unit runs it as (User=) [yours]; never root.",
            ),
            click.option(
                "--output-dir",
                metavar="DIR",
                shell_complete=directories,
                help="Write the unit file (0644) into DIR, never over one, instead of printing it.",
            ),
        ]
    ):
        func = decorator(func)
    return func


#: Where a unit's relay or agent keeps its files when --state-dir is not given.
UNIT_STATE = (
    "system unit: /var/lib/tether/NAME, made by systemd; user unit: the user's state directory, "
    "as when run by hand"
)


@systemd_unit.command()
@click.argument("directory", type=click.Path(path_type=Path))
@listen_option("the signer's sshd listens for the relays")
@_unit_options
def signer(
    directory: Path,
    listen: str,
    name: str | None,
    user_mode: bool,
    run_as: str | None,
    output_dir: str | None,
) -> None:
    """The unit of a signer of the gateway in DIRECTORY (`tether gateway signer`)."""
    from tether.gateway.layout import Gateway
    from tether.gatewayunits import GatewayProcess
    from tether.spec import Endpoint

    gateway = Gateway.existing(directory)
    where = Endpoint.parse(listen, what="--listen")
    process = GatewayProcess(
        "signer",
        _name(name, "signer"),
        (str(gateway.root), "--listen", listen),
        str(gateway.root),
        where.port,
    )
    _render(process, user_mode=user_mode, run_as=run_as, output_dir=output_dir)


@systemd_unit.command()
@click.argument("bundle_file", metavar="BUNDLE", type=click.Path(path_type=Path))
@listen_option("the relay's sshd listens for agents and clients")
@state_option("relay", UNIT_STATE)
@_unit_options
def relay(
    bundle_file: Path,
    listen: str,
    state_dir: Path | None,
    name: str | None,
    user_mode: bool,
    run_as: str | None,
    output_dir: str | None,
) -> None:
    """The unit of the relay of BUNDLE (`tether gateway relay`)."""
    from tether.gateway.relaybundle import RelayBundle
    from tether.gatewayunits import GatewayProcess
    from tether.spec import Endpoint

    bundle = RelayBundle.load(bundle_file)
    where = Endpoint.parse(listen, what="--listen")
    leaf = f"relay-{bundle.relay}"
    process = GatewayProcess(
        "relay",
        _name(name, leaf),
        (_absolute(bundle_file), "--listen", listen),
        _state(state_dir, leaf, user_mode),
        where.port,
    )
    _render(process, user_mode=user_mode, run_as=run_as, output_dir=output_dir)


@systemd_unit.command()
@click.argument("enrolment_file", metavar="ENROLMENT", type=click.Path(path_type=Path))
@target_options
@state_option("agent", UNIT_STATE)
@_unit_options
def agent(
    enrolment_file: Path,
    targets: tuple[str, ...],
    targets_file: Path | None,
    state_dir: Path | None,
    name: str | None,
    user_mode: bool,
    run_as: str | None,
    output_dir: str | None,
) -> None:
    """The unit of the agent of the site ENROLMENT enrols (`tether gateway agent`)."""
    from tether.gateway.enrolment import Enrolment, read_targets
    from tether.gateway.names import parse_name
    from tether.gatewayunits import GatewayProcess
    from tether.spec import Endpoint

    enrolment = Enrolment.load(enrolment_file)
    served = read_targets(targets_file) if targets_file is not None else {}
    arguments = [_absolute(enrolment_file)]
    for item in targets:
        target, equals, where = item.partition("=")
        if not equals:
            raise UsageError(f"--target: not NAME=HOST:PORT: {shown(item)}")
        served[parse_name(target, what="--target name")] = Endpoint.parse(where, what="--target")
        arguments += ["--target", item]
    if not served:
        raise UsageError(
            "an agent needs at least one target",
            hint="give --target NAME=HOST:PORT or --targets-file",
        )
    if targets_file is not None:
        arguments += ["--targets-file", _absolute(targets_file)]
    leaf = f"agent-{enrolment.site}"
    process = GatewayProcess(
        "agent", _name(name, leaf), tuple(arguments), _state(state_dir, leaf, user_mode)
    )
    _render(process, user_mode=user_mode, run_as=run_as, output_dir=output_dir)


def _absolute(path: Path) -> str:
    """A path as the service must name it: its working directory is /, not this shell's."""
    return os.path.abspath(path.expanduser())


def _name(name: str | None, default: str) -> str:
    from tether.unitfiles import unit_name
    from tether.values import label

    chosen = label(name or default)
    unit_name(chosen, what="--name")  # refused here, in one line, if it cannot name a unit
    return chosen


def _state(state_dir: Path | None, leaf: str, user_mode: bool) -> str | None:
    """The state directory the unit names: the one given; in a user unit, the one the process
    would choose run by hand; in a system unit, None: systemd makes /var/lib/tether/NAME."""
    if state_dir is not None:
        path = _absolute(state_dir)
        if not user_mode and not os.path.isdir(path):
            # The service's file system is read-only but for it: it could not make it there.
            raise UsageError(
                f"--state-dir: {path} is not a directory",
                hint="make it (mode 0700, as the account that runs it), or leave --state-dir "
                "out for one systemd makes",
            )
        return path
    if not user_mode:
        return None
    import platformdirs

    return str(platformdirs.user_state_path("tether") / leaf)


def _account(run_as: str | None, user_mode: bool) -> Account:
    from tether.gatewayunits import Account

    if run_as is not None and user_mode:
        raise UsageError("--run-as names a system unit's account; a user unit runs as you")
    try:
        entry = pwd.getpwnam(run_as) if run_as is not None else pwd.getpwuid(os.getuid())
    except KeyError:
        raise UsageError(f"--run-as: no such account: {shown(run_as)}") from None
    if entry.pw_uid == 0 and not user_mode:
        # Its sshd would then be root's, with privilege separation and a /run/sshd that a
        # read-only file system forbids; a gateway needs no privilege but a low port's.
        raise UsageError(
            "a gateway process runs as an ordinary account, not root",
            hint="give --run-as ACCOUNT",
        )
    mine = entry.pw_uid == os.getuid()
    # Where this shell's tether registers, for the same account: `tether list` here sees it.
    named = os.environ.get(RUNTIME_ENV)
    carried = {RUNTIME_ENV: _absolute(Path(named))} if mine and named else {}
    return Account(tether_command(), entry.pw_name, entry.pw_uid, carried)


def _render(
    process: GatewayProcess, *, user_mode: bool, run_as: str | None, output_dir: str | None
) -> None:
    from tether.gatewayunits import gateway_unit

    unit = gateway_unit(process, _account(run_as, user_mode), user_mode=user_mode)
    if output_dir is None:
        echo(unit.text, end="")
        return
    for written in write_units([unit], Path(output_dir).expanduser(), replace=False):
        echo(f"tether: wrote {written}", err=True)
    manager = "systemctl --user" if user_mode else "systemctl"
    echo(f"tether: then: {manager} daemon-reload && {manager} enable --now {unit.name}", err=True)
