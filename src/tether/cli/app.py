"""The click application: tether's commands, loaded on first use, and its errors as one line
plus an exit code."""

from __future__ import annotations

import importlib
from typing import Any

import click
from click.shell_completion import CompletionItem

from tether import __version__
from tether.cli import configure_logging

# Subcommands load on first use, so `tether list` never imports what `start` needs.
COMMANDS = {
    "start": ("tether.cli.start", "start"),
    "list": ("tether.cli.list", "list_command"),
    "stop": ("tether.cli.stop", "stop"),
    "logs": ("tether.cli.logs", "logs"),
    "diagnose": ("tether.cli.diagnose", "diagnose"),
    "shell": ("tether.cli.shell", "shell"),
    "systemd-unit": ("tether.cli.systemd_unit", "systemd_unit"),
    "demo": ("tether.cli.demo", "demo"),
    "completion": ("tether.cli.completion", "completion"),
}
ALIASES = {"ls": "list"}
# Each command's first line of help, which zsh and fish show beside its name on TAB: written
# here so that completing a command name imports no command (a test holds them to the help).
SUMMARIES = {
    "start": "Open a tunnel to PROFILE (or --to HOST:PORT) and keep it until signalled.",
    "list": "Show every running tunnel of this user (alias: ls).",
    "stop": "Stop tunnels by ID, NAME or local PORT.",
    "logs": "Print the log of background tunnel ID|NAME (of a finished one, by ID).",
    "diagnose": "Check each step of reaching PROFILE's target (or --to HOST:PORT), timed.",
    "shell": "An interactive prompt; tunnels started here live until stopped or the shell exits.",
    "systemd-unit": "Print a systemd unit that runs PROFILE's tunnel.",
    "demo": "Show tether working end to end, offline: SSH server, target and tunnel on loopback.",
    "completion": "Print the script that completes tether's words in SHELL (bash, zsh or fish).",
}


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

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[CompletionItem]:
        commands = [
            CompletionItem(name, help=SUMMARIES.get(name))
            for name in COMMANDS
            if name.startswith(incomplete)
        ]
        # What click.Command adds: the group's own options, for a word starting with "-".
        return commands + click.Command.shell_complete(self, ctx, incomplete)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except (KeyboardInterrupt, Exception) as exc:
            from tether.cli.render import show_error

            ctx.exit(show_error(exc, debug=bool(ctx.obj and ctx.obj.get("debug"))))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tether", message="%(prog)s %(version)s")
@click.option("--debug", is_flag=True, help="Show tracebacks and SSH protocol logs.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Tunnels to services behind a bastion, as well-behaved processes."""
    ctx.obj = {"debug": debug}
    configure_logging(debug=debug)
