"""`tether systemd-unit`: the units it prints or writes pass `systemd-analyze verify`."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from tests.support.systemd import verify
from tests.support.tether_process import TetherRunner

PROFILE = "prod.db_1-x"  # every character a profile name may use
CONFIG = f"""
[defaults]
via = "ssh://ops@bastion.example.com"

[tunnels."{PROFILE}"]
to = "db.internal:5432"
port = 15432
timeout = 20

[tunnels.anyport]
to = "db.internal:5432"
"""
SERVICE = f"tether-{PROFILE}.service"
SOCKET = f"tether-{PROFILE}.socket"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config dir" / "tether.toml"  # a space, for ExecStart's quoting
    path.parent.mkdir()
    path.write_text(CONFIG)
    return path


def generate(tether: TetherRunner, *args: str, shell_env: bool = True) -> tuple[int, str, str]:
    """Run `tether systemd-unit ARGS`; without ``shell_env``, as a shell that sets none of
    tether's variables (the registry then goes to /run/user/UID)."""
    env = dict(tether.env)
    if not shell_env:
        env = {k: v for k, v in env.items() if not k.startswith("TETHER_")}
    done = subprocess.run(
        TetherRunner.command("systemd-unit", *args),
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    return done.returncode, done.stdout, done.stderr


def split(text: str) -> dict[str, str]:
    """The units of a printed output, by the name on each one's `# file:` line."""
    parts = re.split(r"^# file: (\S+)\n", text, flags=re.MULTILINE)
    assert parts[0] == ""
    return dict(zip(parts[1::2], parts[2::2], strict=True))


@pytest.mark.parametrize("user", [False, True], ids=["system", "user"])
@pytest.mark.parametrize("shell_env", [False, True], ids=["login-shell", "tether-vars"])
def test_printed_unit_verifies(
    tether: TetherRunner, config: Path, tmp_path: Path, user: bool, shell_env: bool
) -> None:
    code, out, err = generate(
        tether, PROFILE, "--config", str(config), *(["--user"] if user else []), shell_env=shell_env
    )
    assert (code, err) == (0, "")
    units = split(out)
    assert list(units) == [SERVICE]
    path = tmp_path / SERVICE
    path.write_text(units[SERVICE])
    verify([path], user=user, tmp_path=tmp_path)
    exec_start = next(line for line in out.splitlines() if line.startswith("ExecStart="))
    executable = exec_start.removeprefix("ExecStart=").split()[0]
    assert os.path.isabs(executable) and os.access(executable, os.X_OK)
    assert exec_start.endswith(f'start {PROFILE} --foreground --config "{config}"')
    assert ("User=" in out) is not user
    assert (f"user-runtime-dir@{os.getuid()}.service" in out) is (not user and not shell_env)


@pytest.mark.parametrize("user", [False, True], ids=["system", "user"])
def test_socket_units_written_to_a_directory(
    tether: TetherRunner, config: Path, tmp_path: Path, user: bool
) -> None:
    directory = tmp_path / "units"
    directory.mkdir()
    code, out, err = tether.run(
        "systemd-unit",
        PROFILE,
        "--socket",
        "--output-dir",
        str(directory),
        "--config",
        str(config),
        *(["--user"] if user else []),
    )
    assert (code, out) == (0, ""), err
    manager = "systemctl --user" if user else "systemctl"
    assert err.splitlines() == [
        f"tether: wrote {directory / SERVICE}",
        f"tether: wrote {directory / SOCKET}",
        f"tether: then: {manager} daemon-reload && {manager} enable --now {SOCKET}",
    ]
    files = sorted(directory.iterdir())
    assert [p.name for p in files] == [SERVICE, SOCKET]
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o644}
    socket_text = (directory / SOCKET).read_text()
    assert "ListenStream=127.0.0.1:15432\n" in socket_text
    assert f"Requires={SOCKET}\n" in (directory / SERVICE).read_text()
    verify(files, user=user, tmp_path=tmp_path)


def test_printed_socket_units_are_two(tether: TetherRunner, config: Path) -> None:
    code, out, err = tether.run("systemd-unit", PROFILE, "--socket", "--config", str(config))
    assert code == 0, err
    units = split(out)
    assert list(units) == [SERVICE, SOCKET]
    assert "[Socket]" in units[SOCKET] and "[Socket]" not in units[SERVICE]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("nope",), "unknown profile 'nope' in {config}; known profiles: anyport, prod.db_1-x"),
        (("anyport", "--socket"), "--socket needs a fixed port, and profile anyport has none"),
        ((PROFILE, "--output-dir", "/nonexistent"), "--output-dir: /nonexistent is not a"),
    ],
)
def test_errors(tether: TetherRunner, config: Path, args: tuple[str, ...], error: str) -> None:
    code, out, err = tether.run("systemd-unit", *args, "--config", str(config))
    assert (code, out) == (2, "")
    assert err.startswith("tether: error: " + error.format(config=config))
    assert err.count("\n") == 1


HOSTILE = "fe80::1%x\\n[Service]\\nExecStartPre=+touch pwned\\n[Unit]\\nX=x"  # TOML escapes


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("host", HOSTILE),
        ("target_host", HOSTILE),
        ("to", "[fe80::1%x\\u001b[2J]:5432"),
        ("via", "ssh://a$(id)@bastion"),
        ("via", "ssh://-l@bastion"),
    ],
)
@pytest.mark.parametrize("user", [False, True], ids=["system", "user"])
def test_a_profile_value_cannot_inject_unit_lines(
    tether: TetherRunner, tmp_path: Path, key: str, value: str, user: bool
) -> None:
    # Before, a newline in an IPv6 zone id reached Description=: an ExecStartPre=+ in [Service],
    # run as root by a system unit whatever User= said.
    path = tmp_path / "hostile.toml"
    target = "" if key == "to" else 'to = "db.internal:5432"\n'
    more = "target_port = 5432\n" if key == "target_host" else ""
    path.write_text(f'[tunnels.db]\n{target}{more}port = 15432\n{key} = "{value}"\n')
    code, out, err = generate(tether, "db", "--config", str(path), *(["--user"] if user else []))
    assert (code, out) == (2, ""), out
    assert err.endswith("\n") and err[:-1].isprintable(), repr(err)
    assert err.startswith(f"tether: error: {path}: tunnels.db.{key}: ")
