"""Values with control characters: refused at parse time (exit 2, one printable line), and shown
escaped wherever they are printed, whatever another process left in the registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.servers import EchoServer
from tests.support.sshd_server import SshdServer
from tests.support.tether_process import TetherRunner
from tests.support.records import register
from tether.registry import Registry

# Clears the screen, homes the cursor and writes a row of its own over `tether list`'s table.
FORGED = "db\x1b[2J\x1b[H\rID  NAME\nforged  row\x9b31m\u2028"


def printable_lines(text: str) -> list[str]:
    lines = text.split("\n")
    assert lines[-1] == "", repr(text)
    assert all(line.isprintable() for line in lines), repr(text)
    return lines[:-1]


def one_error_line(err: str) -> str:
    [line] = printable_lines(err)
    assert line.startswith("tether: error: ") and "Traceback" not in err
    return line


@pytest.mark.parametrize(
    "flag",
    [
        ("--to", "[fe80::1%x\x1b[2J]:5432"),
        ("--host", "fe80::1%eth0\nExecStartPre=+true"),
        ("--name", FORGED),
    ],
    ids=["to", "host", "name"],
)
def test_a_start_with_control_characters_is_refused_on_one_line(
    tether: TetherRunner, echo_server: EchoServer, flag: tuple[str, str]
) -> None:
    args = ["--to", echo_server.address] if flag[0] != "--to" else []
    # Were it started, --ttl ends it: a test of a tunnel that should not run must end too.
    code, out, err = tether.run("start", *args, *flag, "--ttl", "2s")
    assert (code, out) == (2, ""), err
    line = one_error_line(err)
    assert line.startswith(f"tether: error: {flag[0]}")
    assert tether.list_json() == []


@pytest.mark.parametrize("user", ["a$(id)", "-l", "a;reboot", "a%60id%60"])
def test_a_user_name_ssh_refuses_is_a_usage_error_on_both_engines(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer, user: str
) -> None:
    # The OpenSSH engine exited 4 and asyncssh 5 for these: now both refuse before starting.
    flags = sshd.tether_flags()
    flags[flags.index("--via") + 1] = f"ssh://{user}@{sshd.host}:{sshd.port}"
    code, out, err = tether.run("start", "--to", echo_server.address, *flags, "--ttl", "2s")
    assert (code, out) == (2, ""), err
    assert "user name" in one_error_line(err)


def test_list_shows_a_forged_entry_escaped(tether: TetherRunner) -> None:
    # What a hostile (or older) process could write: this test process registers and holds
    # the entry's lock, so `tether list` takes it for a live tunnel.
    registry = Registry(Path(tether.env["TETHER_RUNTIME_DIR"]))
    registration = register(
        registry,
        name=FORGED,
        target_host=f"db.internal{FORGED}",
        via=f"ssh://ops@bastion{FORGED}",
        engine=f"openssh{FORGED}",
    )
    try:
        for args in (("list",), ("list", "--json")):
            code, out, err = tether.run(*args)
            assert (code, err) == (0, "")
            lines = printable_lines(out)
            if args == ("list",):
                assert len(lines) == 2 and lines[0].startswith("ID ")
                assert lines[1].startswith(f"{registration.entry.id}  db\\x1b[2J\\x1b[H\\rID")
    finally:
        registration.remove()
