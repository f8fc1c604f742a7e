"""The flags that several commands share, declared once: every tunnel option's flag, made from its
declaration (config.OPTIONS), `--config`, and all of `tether start`'s, which `tether shell` parses
too. What they mean together (a Launch) is request.py's, which needs no click.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import click

from tether.cli.candidates import ARGV_META, files, profiles
from tether.config import OPTIONS
from tether.options import Option


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


__all__ = [
    "START_HELP",
    "StartCommand",
    "config_option",
    "some_tunnel_options",
    "start_flags",
    "tunnel_options",
]
