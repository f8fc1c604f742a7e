"""Shell completion through click's protocol, as the shells' scripts ask it of the real `tether`:
profiles from the config `tether start` would read, running tunnels from the registry, and never
a word or a message when something is broken."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import click
import pytest

from tests.support.servers import EchoServer
from tests.support.tether_process import TetherRunner
from tether.cli.app import COMMANDS, SUMMARIES, cli

CONFIG = """\
[defaults]
via = "ssh://ops@bastion"

[tunnels.prod-db]
to = "db.internal:5432"

[tunnels.prod-cache]
to = "cache.internal:6379"
via = "direct"

[tunnels.staging]
target_host = "staging.internal"
target_port = 5432
"""
OTHER = '[tunnels.other-db]\nto = "other:5432"\n'


def complete(
    tether: TetherRunner, line: str, *, shell: str = "bash", env: dict[str, str] | None = None
) -> list[str]:
    """What `tether` answers the ``shell`` completing ``line`` (its last word is the one being
    typed; a trailing space starts a new one), as the script of `tether completion` asks."""
    words = shlex.split(line)
    if line.endswith(" "):
        words.append("")
    protocol = {"COMP_WORDS": line, "COMP_CWORD": str(len(words) - 1)}
    if shell == "fish":  # the line up to the cursor, and the word under it
        protocol["COMP_CWORD"] = words[-1]
    code, out, err = tether.run(
        env={**(env or {}), "_TETHER_COMPLETE": f"{shell}_complete", **protocol}
    )
    assert (code, err) == (0, ""), (code, err)
    assert out.endswith("\n"), out  # one line per item, or the newline alone for none
    return out[:-1].splitlines()


def plain(*values: str) -> list[str]:
    """bash's answer: one `type,value` line per word."""
    return [f"plain,{value}" for value in values]


@pytest.fixture
def config(tether: TetherRunner) -> Path:
    """The default config file, where `tether start` looks without --config or $TETHER_CONFIG."""
    path = Path(tether.env["XDG_CONFIG_HOME"]) / "tether" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text(CONFIG)
    return path


def test_profiles_from_the_default_config(tether: TetherRunner, config: Path) -> None:
    assert complete(tether, "tether start ") == plain("prod-cache", "prod-db", "staging")
    assert complete(tether, "tether start prod") == plain("prod-cache", "prod-db")
    assert complete(tether, "tether start prod-d") == plain("prod-db")
    assert complete(tether, "tether start x") == []
    # Several profiles go with one command; one already named is not offered again.
    assert complete(tether, "tether start prod-db ") == plain("prod-cache", "staging")
    assert complete(tether, "tether systemd-unit s") == plain("staging")
    assert complete(tether, "tether systemd-unit --user ") == plain(
        "prod-cache", "prod-db", "staging"
    )


def test_profiles_from_the_config_that_start_would_read(
    tether: TetherRunner, config: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other.toml"
    other.write_text(OTHER)
    # --config already on the line wins over $TETHER_CONFIG, which wins over the default file.
    assert complete(tether, f"tether start --config {other} ") == plain("other-db")
    assert complete(tether, f"tether start --config={other} ") == plain("other-db")
    assert complete(tether, f"tether systemd-unit --config {other} ") == plain("other-db")
    env = {"TETHER_CONFIG": str(other)}
    assert complete(tether, "tether start ", env=env) == plain("other-db")
    assert complete(tether, f"tether start --config {config} ", env=env) == plain(
        "prod-cache", "prod-db", "staging"
    )
    # A --config named but missing is an error for start, so it offers nothing.
    assert complete(tether, f"tether start --config {tmp_path / 'none.toml'} ") == []


def test_descriptions_for_zsh_and_fish(tether: TetherRunner, config: Path) -> None:
    """zsh gets type, word and description on three lines ('_' when there is none); fish a
    tab between word and description. The description is the profile's target and via."""
    assert complete(tether, "tether start p", shell="zsh") == [
        "plain",
        "prod-cache",
        "cache.internal:6379 via direct",
        "plain",
        "prod-db",
        "db.internal:5432 via ssh://ops@bastion",
    ]
    assert complete(tether, "tether start s", shell="zsh") == ["plain", "staging", "_"]
    assert complete(tether, "tether start prod-d", shell="fish") == [
        "plain,prod-db\tdb.internal:5432 via ssh://ops@bastion"
    ]
    assert complete(tether, "tether start prod-db s", shell="fish") == ["plain,staging"]


@pytest.mark.parametrize(
    "text",
    [
        "[tunnels.a\n",  # not TOML
        '[tunnels.a]\nto = "x:1"\nbogus = 1\n',  # an unknown key
        "[tunnels]\na = 3\n",  # a profile that is not a table
        "\xff",  # not UTF-8 (written as latin-1 below)
    ],
)
def test_a_malformed_config_offers_nothing_silently(
    tether: TetherRunner, config: Path, text: str
) -> None:
    config.write_bytes(text.encode("latin-1"))
    for shell in ("bash", "zsh", "fish"):
        assert complete(tether, "tether start ", shell=shell) == []
        assert complete(tether, "tether systemd-unit p", shell=shell) == []


def test_a_config_that_is_a_directory_offers_nothing(tether: TetherRunner, tmp_path: Path) -> None:
    assert complete(tether, "tether start ", env={"TETHER_CONFIG": str(tmp_path)}) == []


def test_running_tunnels_by_name_and_id(tether: TetherRunner, echo_server: EchoServer) -> None:
    code, out, err = tether.run(
        "start", "--to", echo_server.address, "--name", "web", "--background", "--json"
    )
    assert code == 0, err
    background = json.loads(out)
    held = tether.spawn("start", "--to", echo_server.address, "--name", "held", "--json")
    foreground = held.json_line()
    web, fg = background["id"], foreground["id"]

    # Names, then ids, each in order.
    assert complete(tether, "tether stop ") == plain("held", "web", *sorted((web, fg)))
    assert complete(tether, "tether stop w") == plain("web")
    if fg[:6] != web[:6]:  # ids are random: two may share a prefix
        assert complete(tether, f"tether stop {web[:6]}") == plain(web)
    # A tunnel already named, by name or id, is not offered again.
    assert complete(tether, "tether stop web ") == plain("held", fg)
    assert complete(tether, f"tether stop {fg} ") == plain("web", web)
    # Only a background tunnel has a log.
    assert complete(tether, "tether logs ") == plain("web", web)
    assert complete(tether, "tether logs h") == []
    zsh = complete(tether, "tether stop w", shell="zsh")
    port = background["local_port"]
    assert zsh == ["plain", "web", f"{web}, 127.0.0.1:{port}, background"]

    held.send_signal(signal.SIGINT)
    assert held.finish() == 0
    assert complete(tether, "tether stop ") == plain("web", web)


def test_an_unsafe_registry_offers_nothing_silently(tether: TetherRunner, tmp_path: Path) -> None:
    unsafe = tmp_path / "shared"
    unsafe.mkdir()
    unsafe.chmod(0o777)
    env = {"TETHER_RUNTIME_DIR": str(unsafe)}
    for shell in ("bash", "zsh", "fish"):
        assert complete(tether, "tether stop ", shell=shell, env=env) == []
        assert complete(tether, "tether logs ", shell=shell, env=env) == []


def test_no_registry_yet_offers_nothing_and_creates_nothing(
    tether: TetherRunner, tmp_path: Path
) -> None:
    missing = tmp_path / "not-yet"
    assert complete(tether, "tether stop ", env={"TETHER_RUNTIME_DIR": str(missing)}) == []
    assert not missing.exists()


def test_commands_options_and_paths(tether: TetherRunner) -> None:
    assert complete(tether, "tether s") == plain("start", "stop", "shell", "systemd-unit")
    assert complete(tether, "tether completion ") == plain("bash", "zsh", "fish")
    assert complete(tether, "tether stop --m") == plain("--missing-ok")
    # Paths are left to the shell, which completes file (or directory) names itself.
    assert complete(tether, "tether start --config ") == ["file,"]
    assert complete(tether, "tether start --identity-file ~/.ssh/i") == ["file,~/.ssh/i"]
    assert complete(tether, "tether systemd-unit --output-dir /e") == ["dir,/e"]
    # After `--` come a command and its arguments, not profiles.
    assert complete(tether, "tether start db -- ./mig") == ["file,./mig"]


def test_command_summaries_are_their_help() -> None:
    """Completing a command name imports no command: its summary is written in app.py."""
    assert set(SUMMARIES) == set(COMMANDS)
    for name in COMMANDS:
        command = cli.get_command(click.Context(cli), name)
        assert command is not None
        assert SUMMARIES[name] == command.get_short_help_str(limit=200), name


def test_completing_imports_no_engine(tether: TetherRunner, config: Path) -> None:
    """A TAB runs the whole program: it stays quick by never loading asyncio or asyncssh."""
    lines = ("tether start ", "tether stop ", "tether logs ", "tether systemd-unit ")
    for line in (*lines, "tether diagnose "):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "tether"],
            env={
                **tether.env,
                "_TETHER_COMPLETE": "bash_complete",
                "COMP_WORDS": line,
                "COMP_CWORD": str(len(line.split())),
            },
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        imported = {row.rpartition("|")[2].strip() for row in done.stderr.splitlines()}
        assert not imported & {"asyncio", "asyncssh"}, line


def test_the_bash_script(tether: TetherRunner, config: Path) -> None:
    """What `tether completion bash` prints is valid bash and, sourced, completes through the
    real `tether` found on PATH."""
    code, script, err = tether.run("completion", "bash")
    assert code == 0, err
    assert "_TETHER_COMPLETE=bash_complete" in script
    checked = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    scripts = Path(sys.executable).parent
    assert os.access(scripts / "tether", os.X_OK), "the tether console script beside python"
    test = (
        f"{script}\n"
        "COMP_WORDS=(tether start prod); COMP_CWORD=2\n"
        "_tether_completion tether\n"
        "printf '%s\\n' \"${COMPREPLY[@]}\"\n"
    )
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", test],
        env={**tether.env, "PATH": f"{scripts}:{tether.env['PATH']}"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["prod-cache", "prod-db"]


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_the_zsh_and_fish_scripts(tether: TetherRunner, shell: str) -> None:
    """The scripts click writes for these shells, asking `tether` under their own protocol (the
    shells themselves are not installed here to run them)."""
    code, script, err = tether.run("completion", shell)
    assert code == 0, err
    assert f"_TETHER_COMPLETE={shell}_complete" in script
    assert script.startswith("#compdef tether\n") == (shell == "zsh")
    assert ("complete --no-files --command tether" in script) == (shell == "fish")


def test_an_unknown_shell_is_a_usage_error(tether: TetherRunner) -> None:
    code, out, err = tether.run("completion", "tcsh")
    assert code == 2 and out == ""
    assert "'tcsh' is not one of 'bash', 'zsh', 'fish'" in err
