"""`tether start`: profiles and flags made into a Launch (flags.py), handed to the mode it
names (modes/launch.py), reported on the terminal (report.py)."""

from __future__ import annotations

from typing import Any

import click

from tether.cli.candidates import ARGV_META
from tether.cli.flags import START_HELP, StartCommand, parse_request, start_flags
from tether.cli.report import TerminalReporter
from tether.modes.launch import Launch, launch
from tether.registry import Registry


@click.command(cls=StartCommand, help=START_HELP)
@start_flags
@click.pass_context
def start(ctx: click.Context, /, **params: Any) -> None:
    """See START_HELP."""
    req = parse_request(params, ctx.meta.get(ARGV_META))
    registry = Registry.default()
    with reporter_for(
        req, as_json=params["as_json"], debug=bool((ctx.obj or {}).get("debug"))
    ) as reporter:
        raise SystemExit(launch(req, registry, reporter))


def reporter_for(req: Launch, *, as_json: bool, debug: bool) -> TerminalReporter:
    """The terminal's view of ``req``: one spinner for all its tunnels; run mode's records go to
    stderr (the command's stdout is its own), and only a foreground tunnel says how to stop."""
    label = ", ".join(spec.name for spec in req.specs)
    timeout = max(spec.timeout for spec in req.specs)
    return TerminalReporter(
        label,
        timeout,
        as_json=as_json,
        hint=req.mode == "foreground",
        json_to_stderr=req.mode == "run",
        debug=debug,
    )
