"""The command line: parse, call a mode, render. The only place errors become exit codes."""

from __future__ import annotations

import logging
import traceback
from typing import Any

import click

from tether import __version__
from tether.errors import TetherError


class _Group(click.Group):
    """Turns tether's errors into one line and an exit code; tracebacks only with --debug."""

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


def _register() -> None:
    from tether.cli.demo import demo
    from tether.cli.start import start

    cli.add_command(start)
    cli.add_command(demo)


_register()


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="tether")


if __name__ == "__main__":  # pragma: no cover
    main()
