"""The click application: tether's commands, loaded on first use, and its errors as one line
plus an exit code."""

from __future__ import annotations

import difflib
import importlib
from typing import Any

import click
from click.shell_completion import CompletionItem

from tether import __version__
from tether.cli.console import PROG, configure_logging
from tether.errors import UsageError

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
    "gateway": ("tether.cli.gateway", "gateway"),
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
    "gateway": "A gateway: relays, signers, sites whose agents only dial out, access per target.",
    "completion": "Print the script that completes tether's words in SHELL (bash, zsh or fish).",
}


def usage_error(exc: click.UsageError, command: str = PROG) -> UsageError:
    """click's own usage error (a missing argument, an unknown option or command, a bad value
    of click's) as tether's, which prints as one line like every other: its words, without
    click's "Usage:" block, and a hint that names the help to read (``command``'s, where
    click does not say which command the error is of)."""
    possibilities: list[str] = []
    message = exc.format_message()
    if isinstance(exc, click.NoSuchOption):
        message, possibilities = exc.message, sorted(exc.possibilities or ())
    elif isinstance(exc, click.NoSuchCommand):
        # The commands load lazily, so click has none to suggest: tether's own names.
        message = exc.message
        possibilities = difflib.get_close_matches(exc.command_name, [*COMMANDS, *ALIASES])
    message = message.strip().removesuffix(".")
    if message[:1].isupper() and not message[1:2].isupper():
        message = message[0].lower() + message[1:]
    hint = f"see {exc.ctx.command_path if exc.ctx is not None else command} --help"
    if possibilities:
        hint = f"did you mean {' or '.join(possibilities)}? {hint}"
    return UsageError(message, hint=hint)


class _Group(click.Group):
    """Lazy subcommands, and tether's errors as one line plus an exit code. click's usage
    errors, of the group and of every command under it, become tether's here, once."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:  # the group's own options: `tether --bogus`
            if isinstance(exc, click.exceptions.NoArgsIsHelpError):
                raise  # `tether` alone: the help, as click shows it
            from tether.cli.render import show_error

            raise SystemExit(show_error(usage_error(exc), debug=False)) from None

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
        except click.UsageError as exc:  # an unknown command, or a command's own arguments
            from tether.cli.render import show_error

            command = " ".join(filter(None, (ctx.command_path, ctx.invoked_subcommand)))
            ctx.exit(show_error(usage_error(exc, command), debug=_debug(ctx)))
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except (KeyboardInterrupt, Exception) as exc:
            from tether.cli.render import show_error

            ctx.exit(show_error(exc, debug=_debug(ctx)))


def _debug(ctx: click.Context) -> bool:
    """Whether --debug was given: known once the group's own callback has run."""
    return bool(ctx.obj and ctx.obj.get("debug"))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tether", message="%(prog)s %(version)s")
@click.option("--debug", is_flag=True, help="Show tracebacks and SSH protocol logs.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Tunnels to services behind a bastion, as well-behaved processes."""
    ctx.obj = {"debug": debug}
    configure_logging(debug=debug)
