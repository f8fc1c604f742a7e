"""`tether gateway systemd-unit signer|relay|agent`: the units it prints or writes pass
`systemd-analyze verify`, run what `tether gateway KIND` would, and bad input is one line."""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

import pytest

from tests.support.systemd import verify
from tests.support.tether_process import TetherRunner


def ordinary_account() -> str:
    """An account a system unit may run as: this one, or (the tests run as root) another."""
    if os.getuid() != 0:
        return pwd.getpwuid(os.getuid()).pw_name
    for entry in pwd.getpwall():
        if 1000 <= entry.pw_uid < 65534:
            return entry.pw_name
    pytest.skip("no ordinary account to run a system unit as")


@pytest.fixture
def gateway(tether: TetherRunner, tmp_path: Path) -> Path:
    """A gateway in a directory with a space (for ExecStart's quoting), a relay and a site."""
    gw = tmp_path / "the gw"
    for argv in (
        ["init", str(gw)],
        ["relays", "add", str(gw), "r1", "--signer", "127.0.0.1:2200"],
        ["site", "add", str(gw), "lab", "--relay", "127.0.0.1:2222"],
    ):
        code, _, err = tether.run("gateway", *argv)
        assert code == 0, err
    return gw


def arguments(gw: Path) -> dict[str, list[str]]:
    return {
        "signer": ["signer", str(gw), "--listen", "127.0.0.1:2200"],
        "relay": ["relay", str(gw / "relays" / "r1.toml"), "--listen", "0.0.0.0:2222"],
        "agent": ["agent", str(gw / "enrolments" / "lab.toml"), "--target", "db=10.1.0.7:5432"],
    }


NAMES = {"signer": "signer", "relay": "relay-r1", "agent": "agent-lab"}


@pytest.mark.parametrize("user", [False, True], ids=["system", "user"])
def test_printed_units_verify(
    tether: TetherRunner, gateway: Path, tmp_path: Path, user: bool
) -> None:
    account = [] if user else ["--run-as", ordinary_account()]
    files = []
    for kind, argv in arguments(gateway).items():
        code, out, err = tether.run("gateway", "systemd-unit", *argv, *account, *["--user"] * user)
        assert (code, err) == (0, ""), err
        name = f"tether-{NAMES[kind]}.service"
        assert out.startswith(f"# file: {name}\n")
        exec_start = next(line for line in out.splitlines() if line.startswith("ExecStart="))
        executable = exec_start.removeprefix("ExecStart=").split()[0]
        assert os.path.isabs(executable) and os.access(executable, os.X_OK)
        assert f" gateway {kind} " in exec_start and f"--name {NAMES[kind]}" in exec_start
        if kind == "signer":
            assert f'"{gateway}"' in exec_start
        else:
            state = "--state-dir " + (
                str(Path(tether.env["XDG_STATE_HOME"]) / "tether" / NAMES[kind])
                if user
                else f"/var/lib/tether/{NAMES[kind]}"
            )
            assert exec_start.endswith(state)
        assert ("User=" in out) is not user
        files.append(tmp_path / name)
        files[-1].write_text(out)
    verify(files, user=user, tmp_path=tmp_path)


def test_written_once_never_over(tether: TetherRunner, gateway: Path, tmp_path: Path) -> None:
    directory = tmp_path / "units"
    directory.mkdir()
    argv = [*arguments(gateway)["relay"], "--user", "--output-dir", str(directory)]
    code, out, err = tether.run("gateway", "systemd-unit", *argv)
    assert (code, out) == (0, ""), err
    path = directory / "tether-relay-r1.service"
    assert err.splitlines() == [
        f"tether: wrote {path}",
        "tether: then: systemctl --user daemon-reload && systemctl --user enable --now "
        "tether-relay-r1.service",
    ]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    path.write_text("mine")
    code, out, err = tether.run("gateway", "systemd-unit", *argv)
    assert (code, out) == (2, "")
    assert err.startswith(f"tether: error: {path} exists already; not overwritten (")
    assert path.read_text() == "mine"


HOSTILE_DIR = "/tmp/x\n[Service]\nExecStartPre=+/bin/touch /pwned"


@pytest.mark.parametrize(
    ("kind", "more", "error"),
    [
        ("signer", ["--run-as", "root"], "a gateway process runs as an ordinary account, not root"),
        ("signer", ["--run-as", "no-such-account-x"], '--run-as: no such account: "no-such-'),
        ("signer", ["--run-as", "root", "--user"], "--run-as names a system unit's account"),
        ("relay", ["--user", "--name", "a/b"], "--name 'a/b' cannot name a systemd unit"),
        (
            "relay",
            ["--user", "--state-dir", HOSTILE_DIR],
            "'/tmp/x\\n[Service]\\nExecStartPre=+/bin/touch /pwned' holds control",
        ),
        ("relay", ["--state-dir", "/nonexistent/x"], "--state-dir: /nonexistent/x is not a dir"),
        ("agent", ["--user", "--target", "db"], '--target: not NAME=HOST:PORT: "db"'),
        ("agent", ["--user", "--name", "x\x1b[2J"], "name: holds control or invisible characters"),
    ],
)
def test_refusals_are_one_line(
    tether: TetherRunner, gateway: Path, kind: str, more: list[str], error: str
) -> None:
    argv = arguments(gateway)[kind]
    if kind == "agent" and "--target" in more:
        argv = argv[:2]
    code, out, err = tether.run("gateway", "systemd-unit", *argv, *more)
    assert (code, out) == (2, ""), out
    assert err.startswith("tether: error: ") and err.count("\n") == 1, err
    assert error in err and err[:-1].isprintable(), err


def test_an_agent_needs_a_target(tether: TetherRunner, gateway: Path, tmp_path: Path) -> None:
    enrolment = str(gateway / "enrolments" / "lab.toml")
    code, _, err = tether.run("gateway", "systemd-unit", "agent", enrolment, "--user")
    assert code == 2 and "an agent needs at least one target" in err
    targets = tmp_path / "targets.toml"
    targets.write_text('[targets]\nweb = "10.1.0.8:443"\n')
    code, out, err = tether.run(
        "gateway", "systemd-unit", "agent", enrolment, "--user", "--targets-file", str(targets)
    )
    assert code == 0, err
    assert f"--targets-file {targets} --name agent-lab" in out
