"""The command line: parse, call a mode, render. The only place errors become exit codes."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any

import click

from tether import __version__

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
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("tether: interrupted", err=True)
            ctx.exit(130)
        except Exception as exc:
            from tether.cli.render import show_error

            ctx.exit(show_error(exc, debug=bool(ctx.obj and ctx.obj.get("debug"))))


class _StderrHandler(logging.Handler):
    """Writes to whatever sys.stderr is when a record comes (a background tunnel's log file
    replaces it after start-up)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # stderr is closed: there is nowhere left to say it


class _Formatter(logging.Formatter):
    """`tether: warning: ...`, like the error lines; other libraries' records name their source."""

    def format(self, record: logging.LogRecord) -> str:
        source = "" if record.name.split(".")[0] == "tether" else f"{record.name}: "
        message = record.getMessage()
        option = getattr(record, "option", None)
        if isinstance(option, str) and isinstance(record.args, tuple) and record.args:
            # The option is the record's last argument: shown as the flag that set it.
            from tether.cli.render import flag_of

            message = record.msg % (*record.args[:-1], flag_of(option))
        line = f"tether: {record.levelname.lower()}: {source}{message}"
        if record.exc_info and logging.getLogger().getEffectiveLevel() <= logging.DEBUG:
            line += "\n" + self.formatException(record.exc_info)  # tracebacks: --debug only
        return line


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tether")
@click.option("--debug", is_flag=True, help="Show tracebacks and SSH protocol logs.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Tunnels to services behind a bastion, as well-behaved processes."""
    ctx.obj = {"debug": debug}
    handler = _StderrHandler()
    handler.setFormatter(_Formatter())
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, handlers=[handler])
    # asyncssh logs every channel at INFO; without --debug only tether's own one-liners show.
    logging.getLogger("asyncssh").setLevel(logging.DEBUG if debug else logging.CRITICAL)


def main() -> None:
    """Console-script entry point."""
    _guard_standard_fds()
    cli(prog_name="tether")


def _guard_standard_fds() -> None:
    """Put /dev/null on a closed stdin, stdout or stderr.

    Otherwise the next file tether opens (a socket, a log) would become fd 0, 1 or 2, and a
    child or a print() would read or write it. sys.stdout stays None when fd 1 was closed, so
    printing a result still fails with a clear error instead of vanishing.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


if __name__ == "__main__":  # pragma: no cover
    main()
