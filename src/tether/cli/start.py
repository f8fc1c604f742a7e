"""`tether start`: build a TunnelSpec from a profile and flags, then run it in the foreground."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from tether.cli.render import Spinner, print_ready
from tether.config import Setting, Settings, build_spec, find_config, load_config
from tether.modes.foreground import run_foreground
from tether.modes.pidfile import check_pid_file_location
from tether.spec import TunnelSpec
from tether.tunnel import Tunnel

# Flags that map one-to-one onto profile keys: (click parameter name, profile key, flag spelling).
FLAG_KEYS = (
    ("to", "to", "--to"),
    ("via", "via", "--via"),
    ("target_host", "target_host", "--target-host"),
    ("target_port", "target_port", "--target-port"),
    ("host", "host", "--host"),
    ("port", "port", "--port"),
    ("timeout", "timeout", "--timeout"),
    ("identity_file", "identity_file", "--identity-file"),
    ("known_hosts", "known_hosts", "--known-hosts"),
)


def spec_from_cli(
    profile: str | None, config_path: str | None, flags: dict[str, object], name: str | None
) -> TunnelSpec:
    """Profile settings (if any) under flag overrides, validated once by build_spec."""
    path, required = find_config(config_path)
    config = load_config(path, required=required)
    settings: Settings = config.settings(profile) if profile else config.default_settings()
    for param, key, flag in FLAG_KEYS:
        value = flags.get(param)
        if value is not None:
            settings[key] = Setting(value, flag)
    if flags.get("no_probe"):
        settings["probe"] = Setting(False, "--no-probe")
    return build_spec(settings, name=name or profile or "")


@click.command()
@click.argument("profile", required=False)
@click.option("--to", metavar="HOST:PORT", help="Target address (overrides the profile's).")
@click.option("--via", metavar="ssh://[USER@]HOST[:PORT]", help="Jump host; direct TCP without.")
@click.option("--target-host", metavar="HOST", help="Override only the target host.")
@click.option("--target-port", metavar="PORT", help="Override only the target port.")
@click.option("--host", "-o", metavar="ADDR", help="Local address to bind [default: 127.0.0.1].")
@click.option("--port", "-p", metavar="PORT", help="Local port; 0 picks a free one [default: 0].")
@click.option("--name", metavar="NAME", help="Name shown in banners [default: profile or target].")
@click.option("--foreground", "-fg", is_flag=True, help="Block until signalled (the default).")
@click.option("--pid-file", type=click.Path(dir_okay=False), help="Write the pid here once ready.")
@click.option("--timeout", metavar="SECONDS", help="Bound on getting ready [default: 30].")
@click.option("--no-probe", is_flag=True, help="Do not test-connect to the target before ready.")
@click.option("--identity-file", "-i", metavar="PATH", help="SSH private key to use.")
@click.option("--known-hosts", metavar="PATH", help="known_hosts file to verify the server with.")
@click.option("--config", "config_path", metavar="PATH", help="Config file [default: $TETHER_CONFIG "
              "or ~/.config/tether/config.toml].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout when ready.")
def start(
    profile: str | None,
    name: str | None,
    foreground: bool,
    pid_file: str | None,
    config_path: str | None,
    as_json: bool,
    **flags: object,
) -> None:
    """Open a tunnel to PROFILE (or --to HOST:PORT) and hold it until signalled."""
    spec = spec_from_cli(profile, config_path, flags, name)
    pid_path = Path(pid_file).absolute() if pid_file else None
    if pid_path is not None:
        check_pid_file_location(pid_path)
    with Spinner(spec.name) as spinner:
        def ready(tunnel: Tunnel) -> None:
            spinner.stop()
            print_ready(tunnel, as_json=as_json)

        code = asyncio.run(
            run_foreground(spec, on_ready=ready, on_phase=spinner.phase, pid_file=pid_path)
        )
    raise SystemExit(code)
