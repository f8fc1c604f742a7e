"""`tether start`: profiles and flags made into a Launch (flags.py), handed to the mode it
names (modes/launch.py), reported on the terminal (report.py)."""

from __future__ import annotations

from typing import Any

import click

from tether.cli.candidates import ARGV_META
from tether.cli.flags import START_HELP, StartCommand, start_flags
from tether.cli.request import parse_request
from tether.cli.report import reporter_for
from tether.modes.launch import launch
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
