"""The click options that a gateway process's run command (cli/gatewayrun.py) and its unit
command (cli/gatewayunit.py) share, declared once so that the two read their arguments alike."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

Decorator = Callable[[Callable[..., None]], Callable[..., None]]


def listen_option(what: str) -> Decorator:
    """--listen ADDR:PORT, required: where ``what``."""
    return click.option("--listen", required=True, metavar="ADDR:PORT", help=f"Where {what}.")


def state_option(what: str, default: str) -> Decorator:
    """--state-dir: where the relay or agent (``what``) keeps its sshd's files; ``default`` says
    where they go without it."""
    return click.option(
        "--state-dir",
        type=click.Path(path_type=Path),
        help=f"Where the {what} keeps its sshd's files [{default}].",
    )


def target_options(func: Callable[..., None]) -> Callable[..., None]:
    """An agent's targets: --target NAME=HOST:PORT (repeated) and --targets-file."""
    func = click.option(
        "--targets-file",
        type=click.Path(path_type=Path),
        help='A TOML file whose [targets] table names more: NAME = "HOST:PORT" (read again at '
        "each start).",
    )(func)
    return click.option(
        "--target",
        "targets",
        multiple=True,
        metavar="NAME=HOST:PORT",
        help="A target this site serves, as clients name it (SITE/NAME); repeat for each.",
    )(func)
