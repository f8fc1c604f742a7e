"""The click application: tether's commands, loaded on first use, and its errors as one line
plus an exit code."""

from __future__ import annotations

import importlib
from typing import Any

import click

from tether import __version__
from tether.cli import configure_logging

# Subcommands load on first use, so `tether list` never imports what `start` needs.
COMMANDS = {
    "start": ("tether.cli.start", "start"),
    "list": ("tether.cli.list", "list_command"),
    "stop": ("tether.cli.stop", "stop"),
    "logs": ("tether.cli.logs", "logs"),
    "shell": ("tether.cli.shell", "shell"),
    "systemd-unit": ("tether.cli.systemd_unit", "systemd_unit"),
    "demo": ("tether.cli.demo", "demo"),
}
ALIASES = {"ls": "list"}


class _Group(click.Group):
    """Lazy subcommands, and tether's errors as one line plus an exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        name = ALIASES.get(cmd_name, cmd_name)
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name]
        command: click.Command = getattr(importlib.import_module(module), attr)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except (KeyboardInterrupt, Exception) as exc:
            from tether.cli.render import show_error

            ctx.exit(show_error(exc, debug=bool(ctx.obj and ctx.obj.get("debug"))))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tether")
@click.option("--debug", is_flag=True, help="Show tracebacks and SSH protocol logs.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Tunnels to services behind a bastion, as well-behaved processes."""
    ctx.obj = {"debug": debug}
    configure_logging(debug=debug)
