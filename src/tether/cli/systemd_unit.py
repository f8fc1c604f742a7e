"""`tether systemd-unit`: print (or write) the systemd units that run a profile's tunnel."""

from __future__ import annotations

import os
import pwd
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import click

from tether import paths
from tether.cli.candidates import directories, profiles
from tether.cli.flags import config_option
from tether.cli.render import echo
from tether.cli.units import tether_command, write_units
from tether.config import build_spec, load_config
from tether.paths import RUNTIME_ENV, SSH_CONFIG_ENV

if TYPE_CHECKING:
    from tether.unitfiles import Installation

# tether's variables that change where a tunnel registers or which ssh_config it reads: the
# service gets this shell's values, so that it behaves as `tether start` here would.
CARRIED = (RUNTIME_ENV, SSH_CONFIG_ENV)


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def installation(config: Path) -> Installation:
    from tether.unitfiles import Installation  # here: completing a profile needs no asyncio

    account = pwd.getpwuid(os.getuid())
    return Installation(
        command=tether_command(),
        user=account.pw_name,
        uid=account.pw_uid,
        config=str(config.absolute()),
        # Both are paths: the service's working directory is /, not this shell's.
        environment={
            k: str(Path(os.environ[k]).expanduser().absolute())
            for k in CARRIED
            if os.environ.get(k)
        },
        ipv6_loopback=has_ipv6_loopback(),
    )


@click.command("systemd-unit")
@click.argument("profile", shell_complete=profiles)
@click.option("--user", "user_mode", is_flag=True, help="A user unit (systemctl --user).")
@click.option(
    "--socket",
    "with_socket",
    is_flag=True,
    help="Also a .socket unit: systemd holds the port and starts the tunnel on demand.",
)
@click.option(
    "--output-dir",
    metavar="DIR",
    shell_complete=directories,
    help="Write the unit files (0644) into DIR instead of printing them.",
)
@config_option
def systemd_unit(
    profile: str,
    user_mode: bool,
    with_socket: bool,
    output_dir: str | None,
    config_path: str | None,
) -> None:
    """Print a systemd unit that runs PROFILE's tunnel.

    A system unit that runs as you, or with --user a user unit; with --socket, a socket unit
    follows it (each starts with a '# file: NAME' line).

    \b
    tether systemd-unit db --user > ~/.config/systemd/user/tether-db.service
    tether systemd-unit db --user --socket --output-dir ~/.config/systemd/user
    """
    path, required = paths.config_file(config_path)
    config = load_config(path, required=required)
    spec = build_spec(config.settings(profile), name=profile)
    from tether.unitfiles import unit_files

    units = unit_files(spec, installation(path), user_mode=user_mode, socket=with_socket)
    if output_dir is None:
        echo("\n".join(unit.text for unit in units), end="")
        return
    for written in write_units(units, Path(output_dir).expanduser()):
        echo(f"tether: wrote {written}", err=True)
    manager = "systemctl --user" if user_mode else "systemctl"
    first = units[-1].name  # the socket when there is one: it starts the service
    echo(f"tether: then: {manager} daemon-reload && {manager} enable --now {first}", err=True)
