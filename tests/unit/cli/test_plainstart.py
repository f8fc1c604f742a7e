"""The plain `tether start` parser gives exactly what click gives, or leaves the words to click."""

from __future__ import annotations

from typing import Any

import click
import pytest

from tether.cli.candidates import ARGV_META
from tether.cli.plainstart import SWITCHES, VALUES, _tunnel_flags, plain_start
from tether.cli.start import start
from tether.config import OPTIONS


def by_click(args: list[str]) -> tuple[dict[str, Any], list[str] | None]:
    ctx = start.make_context("start", list(args))
    return ctx.params, ctx.meta.get(ARGV_META)


def every_flag_once() -> list[list[str]]:
    forms = []
    for opt in OPTIONS:
        if opt.cli_flag is None:
            continue
        if opt.switch:
            forms += [["db", opt.cli_flag], ["db", f"--no-{opt.cli_flag[2:]}"]]
        else:
            forms += [["db", opt.cli_flag, "v"], ["db", f"{opt.cli_flag}=v w"]]
            if opt.short:
                forms.append(["db", opt.short, "v"])
    for flag in SWITCHES:
        forms.append(["db", flag])
    for flag in VALUES:
        forms.append(["db", flag, "v"])
    return forms


PLAIN = [
    [],
    ["db"],
    ["db", "cache", "--run", "psql -h $TETHER_HOST"],
    ["db", "--background"],
    [
        "--to",
        "127.0.0.1:5432",
        "--via",
        "ssh://u@h:2222",
        "--identity-file=k2",
        "--allow",
        "10.0.0.0/8",
        "--allow",
        "db:5432",
        "--known-hosts",
        "kh",
        "--ssh-config",
        "cfg",
        "-bg",
        "--name",
        "x",
    ],
    ["db", "cache", "--", "./migrate.sh", "--flag", "--", "-x"],
    ["db", "--"],
    ["--to=h:1", "--run", "echo hi", "--json"],
    ["db", "-R", "true", "--pid-file", "p", "--json-file", "j"],
    ["db", "--no-share-master", "--master-linger", "1s", "--reuse", "-fg"],
    ["db", "--config", "c.toml", "--timeout", "5s", "--to="],
    ["", "db"],
    *every_flag_once(),
]


@pytest.mark.parametrize("args", PLAIN, ids=" ".join)
def test_a_plain_start_is_parsed_as_click_parses_it(args: list[str]) -> None:
    parsed = plain_start(args)
    assert parsed is not None, "a plain form went to click"
    assert parsed == by_click(args)


CLICKS = [
    ["--help"],
    ["db", "-h"],
    ["db", "--bogus"],
    ["db", "--backgroun"],  # click names the flag meant
    ["db", "-ik"],
    ["db", "-i=k"],
    ["db", "--name", "a", "--name", "b"],
    ["db", "-i", "a", "--identity-file", "b"],
    ["db", "--background", "--background"],
    ["db", "--run", "-x"],
    ["db", "--background=yes"],
    ["db", "--name"],
    ["db", "-"],
    ["db", "--share-master", "--no-share-master"],
]


@pytest.mark.parametrize("args", CLICKS, ids=" ".join)
def test_other_forms_go_to_click(args: list[str]) -> None:
    assert plain_start(args) is None


def test_the_plain_parser_knows_every_flag_of_the_click_command_and_no_other() -> None:
    declared = {
        name
        for param in start.params
        if isinstance(param, click.Option) and param.name != "help"
        for name in (*param.opts, *param.secondary_opts)
    }
    values, switches = _tunnel_flags()
    assert declared == set(SWITCHES) | set(VALUES) | set(values) | set(switches)
