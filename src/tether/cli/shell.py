"""`tether shell`: a prompt where start, list, stop and help work; batch mode without a TTY."""

from __future__ import annotations

import errno
import os
import shlex
import signal
import sys
from types import FrameType
from typing import Any

import click

from tether.cli.app import usage_error
from tether.cli.listing import render_list
from tether.cli.render import echo, on_terminal, print_ready, show_error
from tether.cli.flags import START_HELP, StartCommand, start_flags
from tether.cli.request import parse_request
from tether.cli.render import announce_stopped, report_stopped
from tether.errors import InputError, UsageError, map_exceptions
from tether.client import STOP_TIMEOUT, list_tunnels, select_entries, stop_tunnels
from tether.modes.shell import ShellSession
from tether.registry import Registry

HELP = """commands:
  start PROFILE|--to HOST:PORT [flags]   open a tunnel here (same flags as `tether start`)
  list                                   every tunnel of this user, from any process
  stop ID|NAME|PORT... | --all           stop tunnels (this shell's, or any other process's)
  help                                   this text
  exit                                   close this shell's tunnels and leave (also Ctrl-D)"""


@click.command(cls=StartCommand, name="start", help=START_HELP)
@start_flags
def _start_line(**params: Any) -> None:
    pass  # the shell parses the line with it; _start runs it


def _start(session: ShellSession, args: list[str]) -> None:
    ctx = _start_line.make_context("start", args)
    params: dict[str, Any] = ctx.params
    argv = ctx.meta.get("tether.argv")
    if params["run"] is not None or argv is not None:
        raise UsageError("--run and -- are not available in the shell; use `tether start`")
    for flag, given in (
        ("--pid-file", params["pid_file"]),
        ("--json-file", params["json_file"]),
        ("--reuse", params["reuse"]),
    ):
        if given:
            raise UsageError(
                f"{flag} is not available in the shell: its tunnels live in the shell's process"
            )
    for flag in ("foreground", "background"):
        if params[flag]:
            echo(
                f"tether: note: --{flag} is not needed here; the tunnel runs in this "
                "shell until you stop it or leave",
                err=True,
            )
            params[flag] = False
    request = parse_request(params, None)
    for spec in request.specs:
        hosted = session.start(spec)
        print_ready(hosted.record(), as_json=params["as_json"], hint=False)


def _stop(session: ShellSession, args: list[str]) -> None:
    every = "--all" in args
    selectors = [a for a in args if a != "--all"]
    entries = select_entries(session.registry, selectors, every=every)
    others = []
    for entry in entries:
        if session.owns(entry.id):
            session.stop(entry.id)
            announce_stopped(entry)
        else:
            others.append(entry)
    report_stopped(stop_tunnels(session.registry, others, timeout=STOP_TIMEOUT))


def execute(session: ShellSession, line: str) -> bool:
    """Run one command line; False means leave the shell."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"cannot parse the line: {exc}") from None
    if not words:
        return True
    command, args = words[0], words[1:]
    if command in ("exit", "quit"):
        return False
    if command == "help":
        echo(HELP)
    elif command == "start":
        _start(session, args)
    elif command in ("list", "ls"):
        echo(render_list(list_tunnels(session.registry), as_json="--json" in args))
    elif command == "stop":
        _stop(session, args)
    else:
        raise UsageError(f"unknown command {command!r}; try help")
    return True


def _read(interactive: bool) -> str | None:
    """The next line, or None at the end of input; a closed or unreadable stdin is the end
    too (said once), never an error repeated for ever."""
    if interactive:
        try:
            return input("tether> ")
        except EOFError:
            echo("")
            return None
    with map_exceptions({OSError: InputError, ValueError: InputError}, "cannot read stdin"):
        if sys.stdin is None:  # closed when tether started
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        line = sys.stdin.readline()
    return line if line else None


def _leave(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


# SIGHUP: the terminal went away. Either way the shell closes its tunnels before it goes.
LEAVE_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@click.command()
def shell() -> None:
    """An interactive prompt; tunnels started here live until stopped or the shell exits.

    Without a terminal on stdin, reads one command per line and never prompts.
    """
    interactive = on_terminal(sys.stdin)
    debug = bool((click.get_current_context().obj or {}).get("debug"))
    session = ShellSession(Registry.default())
    status = 0
    previous = {signum: signal.signal(signum, _leave) for signum in LEAVE_SIGNALS}
    try:
        while True:
            try:
                line = _read(interactive)
                if line is None or not execute(session, line):
                    break
            except InputError as exc:
                status = show_error(exc, debug=debug)
                break
            except KeyboardInterrupt:
                echo("")
            except click.exceptions.Exit:
                pass  # `start --help` printed its help
            except click.UsageError as exc:  # a bad flag: one line, as on the command line
                status = show_error(usage_error(exc, "start"), debug=debug)
            except click.ClickException as exc:
                exc.show()
                status = exc.exit_code
            except Exception as exc:  # one bad line must not take the shell's tunnels down
                status = show_error(exc, debug=debug)
    finally:
        # A stop signal while the tunnels close (after `exit`, or a second one) ends their
        # drain at once; the close itself always completes.
        interrupt = signal.getsignal(signal.SIGINT) or signal.default_int_handler
        previous.setdefault(signal.SIGINT, interrupt)
        for signum in previous:
            signal.signal(signum, lambda signum, frame: session.hurry())
        session.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    raise SystemExit(0 if interactive else status)
