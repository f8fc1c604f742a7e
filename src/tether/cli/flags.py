"""The flags that several commands share, declared once: every tunnel option's flag, made from its
declaration (config.OPTIONS), `--config`, and all of `tether start`'s, which `tether shell` parses
too; and what they mean together: the profiles and flags of a start made into a Launch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from tether import paths
from tether.cli.candidates import ARGV_META, files, profiles
from tether.config import OPTIONS, Config, Setting, Settings, load_config, spec_for
from tether.errors import UsageError
from tether.modes.launch import Launch, StartMode
from tether.modes.pidfile import ReadyFiles
from tether.options import Option
from tether.spec import TunnelSpec

# Flags that describe a single tunnel, so they cannot go with several profiles.
SINGLE_TUNNEL_FLAGS = ("to", "target_host", "target_port", "port", "name", "socks", "allow")
MODE_FLAGS = "--foreground, --background, --run and -- are mutually exclusive"


def spec_from_flags(
    config: Config,
    profile: str | None,
    flags: dict[str, Any],
    *,
    run_mode: bool = False,
) -> TunnelSpec:
    """Profile settings (if any) under flag overrides, validated once."""
    overrides: Settings = {
        opt.key: Setting(value, _spelling(opt, value))
        for opt in OPTIONS
        if _given(value := flags.get(opt.key)) and opt.cli_flag is not None
    }
    return spec_for(config, profile, overrides, run_mode=run_mode)


def _given(value: Any) -> bool:
    """Whether a flag was given: click makes a repeatable flag that was not an empty tuple."""
    return value is not None and value != ()


def _spelling(opt: Option, value: Any) -> str:
    """The flag as the user typed it, for error messages."""
    assert opt.cli_flag is not None
    return opt.cli_flag if not opt.switch or value else f"--no-{opt.cli_flag[2:]}"


def parse_request(params: dict[str, Any], argv: Sequence[str] | None) -> Launch:
    """Check the flags together and build every spec, before anything starts."""
    profiles: tuple[str, ...] = params["profiles"]
    chosen = [
        flag
        for flag, on in (
            ("foreground", params["foreground"]),
            ("background", params["background"]),
            ("run", params["run"] is not None),
            ("--", argv is not None),
        )
        if on
    ]
    if len(chosen) > 1:
        raise UsageError(MODE_FLAGS)
    mode: StartMode = "foreground"
    if chosen and chosen[0] in ("run", "--"):
        mode = "run"
    elif chosen and chosen[0] == "background":
        mode = "background"
    if argv is not None and not argv:
        raise UsageError("-- must be followed by a command")
    if len(profiles) > 1:
        if mode != "run":
            raise UsageError("several profiles need --run or -- (one command for all tunnels)")
        clashing = [
            f"--{p.replace('_', '-')}" for p in SINGLE_TUNNEL_FLAGS if _given(params.get(p))
        ]
        if clashing:
            raise UsageError(f"{', '.join(clashing)} cannot be used with several profiles")
    config = load_profiles(params["config_path"])
    specs = tuple(
        spec_from_flags(config, profile, params, run_mode=mode == "run")
        for profile in (profiles or (None,))
    )
    files = ReadyFiles(_absolute(params["pid_file"]), _absolute(params["json_file"]))
    if params["reuse"]:
        _check_reuse(mode, files, as_json=params["as_json"])
    files.check()
    command: str | tuple[str, ...] | None = params["run"] if argv is None else tuple(argv)
    return Launch(specs, mode, command, files, params["reuse"])


def _absolute(path: str | None) -> Path | None:
    return Path(path).absolute() if path else None


def _check_reuse(mode: StartMode, files: ReadyFiles, *, as_json: bool) -> None:
    if mode == "run":
        raise UsageError("--reuse cannot go with --run or --: the command's tunnels are its own")
    if mode == "foreground" and not as_json:
        raise UsageError("--reuse needs --background or --json, to say which tunnel is used")
    if files.pid_file or files.json_file:
        raise UsageError(
            "--reuse cannot go with --pid-file or --json-file: a reused tunnel's files belong "
            "to the start that made it"
        )


class StartCommand(click.Command):
    """Splits off everything after `--` as the command's argv before click sees it."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            cut = args.index("--")
            ctx.meta[ARGV_META] = args[cut + 1 :]
            args = args[:cut]
        return super().parse_args(ctx, args)


def tunnel_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Adds a flag for every tunnel option that has one, as config.OPTIONS declares them."""
    return _with_flags(command, OPTIONS)


def some_tunnel_options(*keys: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Like tunnel_options, for the options named (by key) alone."""
    chosen = tuple(opt for opt in OPTIONS if opt.key in keys)
    return lambda command: _with_flags(command, chosen)


def _with_flags(command: Callable[..., Any], options: Sequence[Option]) -> Callable[..., Any]:
    for opt in reversed(options):
        flag = opt.cli_flag
        if flag is None:
            continue
        if opt.switch:
            declarations = [f"{flag}/--no-{flag[2:]}", opt.key]
        else:
            declarations = [flag, *([opt.short] if opt.short else []), opt.key]
        command = click.option(
            *declarations,
            default=None,
            multiple=opt.multiple,
            metavar=None if opt.switch else opt.metavar,
            help=opt.help_text,
            shell_complete=files if opt.metavar == "PATH" else None,
        )(command)
    return command


START_HELP = """Open a tunnel to PROFILE (or --to HOST:PORT) and keep it until signalled.

\b
tether start db                       # foreground, until Ctrl-C / SIGTERM / tether stop
tether start db --background          # detach once ready
tether start db --run 'psql -h $TETHER_HOST -p $TETHER_PORT'
tether start db cache -- ./migrate.sh # several tunnels for one command
"""


def load_profiles(config_path: str | None) -> Config:
    """The profiles of ``--config`` (else $TETHER_CONFIG, else the default file, which may be
    missing)."""
    path, required = paths.config_file(config_path)
    return load_config(path, required=required)


config_option = click.option(
    "--config",
    "config_path",
    metavar="PATH",
    shell_complete=files,
    help="Config file [default: $TETHER_CONFIG or ~/.config/tether/config.toml].",
)


def start_flags(command: Callable[..., Any]) -> Callable[..., Any]:
    """Every argument and flag of `tether start`."""
    for flag in reversed(_START_FLAGS):
        command = flag(command)
    return command


_START_FLAGS: tuple[Callable[[Callable[..., Any]], Callable[..., Any]], ...] = (
    click.argument("profiles", nargs=-1, shell_complete=profiles),
    tunnel_options,
    click.option("--foreground", "-fg", is_flag=True, help="Block until signalled (the default)."),
    click.option(
        "--background", "-bg", is_flag=True, help="Detach; return once the tunnel is ready."
    ),
    click.option(
        "--run", "-R", metavar="CMD", help="Run CMD through the shell once ready, then close."
    ),
    click.option(
        "--pid-file", metavar="PATH", help="Write the pid here once ready.", shell_complete=files
    ),
    config_option,
    click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Print the tunnel's JSON record when ready: on stdout, or stderr with --run.",
    ),
    click.option(
        "--json-file",
        metavar="PATH",
        help="Write the JSON records here once ready (0600).",
        shell_complete=files,
    ),
    click.option(
        "--reuse",
        is_flag=True,
        help="If a ready tunnel like this one exists, print it instead of starting another.",
    ),
)

