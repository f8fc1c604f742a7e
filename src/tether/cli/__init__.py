"""The command line: parse, call a mode, render. The only place errors become exit codes."""

from __future__ import annotations

import importlib
import logging
import traceback
from typing import Any

import click

from tether import __version__
from tether.errors import TetherError

# Subcommands load on first use, so `tether list` never imports what `start` needs.
COMMANDS = {
    "start": ("tether.cli.start", "start"),
    "list": ("tether.cli.list", "list_command"),
    "stop": ("tether.cli.stop", "stop"),
    "logs": ("tether.cli.logs", "logs"),
    "shell": ("tether.cli.shell", "shell"),
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
        except TetherError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                traceback.print_exc()
            click.echo(f"tether: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("tether: interrupted", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tether")
@click.option("--debug", is_flag=True, help="Show tracebacks and SSH protocol logs.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Tunnels to services behind a bastion, as well-behaved processes."""
    ctx.obj = {"debug": debug}
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING, format="%(name)s: %(message)s"
    )
    # asyncssh logs every channel at INFO; without --debug only tether's own one-liners show.
    logging.getLogger("asyncssh").setLevel(logging.DEBUG if debug else logging.CRITICAL)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="tether")


if __name__ == "__main__":  # pragma: no cover
    main()
