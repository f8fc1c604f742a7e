"""Every failure class: one line on stderr, no traceback, its own documented exit code."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from servers import EchoServer, SilentServer
from sshd_server import SshdServer
from tether_process import TetherRunner


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tether: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_port_held_by_another_socket(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as holder:
        port = holder.getsockname()[1]
        code, _, err = tether.run(
            "start", "--to", echo_server.address, *sshd.tether_flags(), "--port", str(port)
        )
    assert code == 3
    assert "in use by another program" in one_line_error(err)


def test_sshd_down(tether: TetherRunner, own_sshd: SshdServer, echo_server: EchoServer) -> None:
    own_sshd.stop()
    code, _, err = tether.run("start", "--to", echo_server.address, *own_sshd.tether_flags())
    assert code == 4
    assert "cannot reach SSH server" in one_line_error(err)


def test_wrong_key(tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer) -> None:
    code, _, err = tether.run(
        "start",
        "--to",
        echo_server.address,
        "--via",
        sshd.via,
        "-i",
        str(sshd.wrong_key),
        "--known-hosts",
        str(sshd.known_hosts),
    )
    assert code == 5
    assert "authentication" in one_line_error(err)


def test_unknown_host_key(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer, tmp_path: Path
) -> None:
    # No --known-hosts: the isolated HOME has no ~/.ssh/known_hosts, so the key is unknown.
    code, _, err = tether.run(
        "start", "--to", echo_server.address, "--via", sshd.via, "-i", str(sshd.client_key)
    )
    assert code == 5
    line = one_line_error(err)
    listing = subprocess.run(
        ["ssh-keygen", "-lf", str(sshd.directory / "host_ed25519.pub")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    fingerprint = listing.split()[1]
    assert fingerprint.startswith("SHA256:")
    assert "is not in" in line and fingerprint in line and "ssh-keyscan" in line


def test_target_with_nothing_listening(tether: TetherRunner, sshd: SshdServer) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, _, err = tether.run("start", "--to", f"127.0.0.1:{port}", *sshd.tether_flags())
    assert code == 6
    assert f"cannot connect to 127.0.0.1:{port} through {sshd.via}" in one_line_error(err)


def test_timeout_against_silent_server(
    tether: TetherRunner, silent_server: SilentServer, sshd: SshdServer
) -> None:
    code, _, err = tether.run(
        "start",
        *silent_server.tether_flags(sshd.known_hosts),
        "--timeout",
        "1",
    )
    assert code == 7
    assert "not ready after 1s" in one_line_error(err)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--to", "db:5432", "--port", "abc"], '--port: expected an integer 0-65535, got "abc"'),
        (["--to", "db:5432", "--port", "70000"], "--port: expected an integer 0-65535, got 70000"),
        (["--to", "db"], "--to: expected HOST:PORT"),
        (["--to", "db:5432", "--via", "http://x"], "unsupported scheme 'http'"),
        (["--to", "db:5432", "--via", "ssh://u:pw@x"], "passwords are not accepted"),
        (
            ["--to", "db:5432", "--timeout", "-3"],
            "--timeout: expected a duration like 30s, 5m or 2h",
        ),
        (["--to", "db:5432", "--target-port", "0"], "--target-port: expected an integer 1-65535"),
        (["nope"], "unknown profile 'nope'"),
        (["--to", "db:1", "--pid-file", "/nonexistent/dir/x.pid"], "directory does not exist"),
    ],
)
def test_bad_input_is_refused_before_anything_starts(
    tether: TetherRunner, args: list[str], message: str
) -> None:
    code, out, err = tether.run("start", *args)
    assert code == 2
    assert message in one_line_error(err)
    assert out == ""


def test_malformed_toml(tether: TetherRunner, tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[tunnels.db\n")
    code, _, err = tether.run("start", "db", "--config", str(config))
    assert code == 2
    assert f"{config}: invalid TOML" in one_line_error(err)


def test_bad_profile_value(tether: TetherRunner, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[tunnels.db]\nto = "db:5432"\nport = "abc"\n')
    code, _, err = tether.run("start", "db", "--config", str(config))
    assert code == 2
    assert one_line_error(err) == (
        f'tether: error: {config}: tunnels.db.port: expected an integer 0-65535, got "abc"'
    )


def test_unknown_flag_is_usage_error(tether: TetherRunner) -> None:
    code, _, err = tether.run("start", "--bogus")
    assert code == 2 and "No such option" in err and "Traceback" not in err


def test_debug_shows_traceback(tether: TetherRunner) -> None:
    code, _, err = tether.run("--debug", "start", "--to", "db")
    assert code == 2 and "Traceback" in err
    assert err.strip().splitlines()[-1] == "tether: error: --to: expected HOST:PORT, got 'db'"
