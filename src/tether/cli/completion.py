"""`tether completion SHELL`: the script that makes bash, zsh or fish complete tether's words."""

from __future__ import annotations

import click

from tether.cli.render import echo

SHELLS = ("bash", "zsh", "fish")


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the script that completes tether's words in SHELL (bash, zsh or fish).

    Commands, options, profiles and running tunnels: the script asks tether itself on each TAB.

    \b
    eval "$(tether completion bash)"            # in ~/.bashrc
    tether completion zsh > ~/.zfunc/_tether    # a directory in $fpath, before compinit
    tether completion fish > ~/.config/fish/completions/tether.fish
    """
    from click.shell_completion import get_completion_class

    from tether.cli.console import COMPLETE_VAR, PROG

    script = get_completion_class(shell)
    assert script is not None  # click.Choice let through only the shells click knows
    # The script runs `tether` with COMPLETE_VAR set, which main() answers through click.
    echo(script(ctx.find_root().command, {}, PROG, COMPLETE_VAR).source(), end="")
