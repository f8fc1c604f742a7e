"""The paths a tunnel names (ssh_config, known_hosts, identity files, TMPDIR) mean the file the
user named, with each engine: a relative one is the working directory's, and one that ssh would
expand, unescape or glob either reaches it as it is or is refused with exit 2."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest

from tests.e2e.test_ssh_config import THROUGH, config_file, host_lines, start
from tests.support.servers import EchoServer, echo_once
from tests.support.sshd_server import SshdServer
from tests.support.tether_process import TetherRunner


def up_and_down(tether: TetherRunner, *args: str, env: dict[str, str] | None = None) -> None:
    """The tunnel starts, carries bytes and stops cleanly."""
    process = start(tether, *args, env=env)
    (entry,) = tether.list_json()
    assert echo_once(entry["local_port"], THROUGH) == THROUGH
    process.send_signal(signal.SIGTERM)
    assert process.finish() == 0, process.stderr


def flags(sshd: SshdServer, **paths: str) -> list[str]:
    """Flags through ``sshd`` with its key and known_hosts, or the ``paths`` given instead."""
    named = {"-i": str(sshd.client_key), "--known-hosts": str(sshd.known_hosts)}
    named.update({"-i" if k == "identity" else "--known-hosts": v for k, v in paths.items()})
    return [
        *("--via", sshd.via, "--engine", str(sshd.engine)),
        *(word for pair in named.items() for word in pair),
    ]


def alias_config(tether: TetherRunner, sshd: SshdServer, name: str) -> Path:
    """An ssh_config beside the tests' working directory, defining the alias "rel"."""
    return config_file(
        tether.workdir / name, {"rel": host_lines(sshd, sshd.client_key, sshd.known_hosts)}
    )


def test_a_relative_ssh_config_is_the_working_directorys(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer
) -> None:
    alias_config(tether, sshd, "relative_config")
    via = ["--via", "ssh://rel", "--engine", str(sshd.engine)]
    up_and_down(tether, "--to", echo_server.address, *via, "--ssh-config", "relative_config")
    # The same file named by the environment.
    env = {"TETHER_SSH_CONFIG": "relative_config"}
    up_and_down(tether, "--to", echo_server.address, *via, env=env)


def test_a_service_gets_absolute_paths(tether: TetherRunner) -> None:
    toml = tether.workdir / "tether.toml"
    toml.write_text('[tunnels.db]\nto = "db.internal:5432"\nvia = "ssh://rel"\n')
    env = {"TETHER_SSH_CONFIG": "relative_config"}
    code, out, err = tether.run("systemd-unit", "db", "--user", "--config", "tether.toml", env=env)
    assert code == 0, err
    lines = out.splitlines()
    assert f"Environment=TETHER_SSH_CONFIG={tether.workdir / 'relative_config'}" in lines
    assert any(line.endswith(f"--config {toml}") for line in lines if "ExecStart" in line)


@pytest.mark.parametrize("name", ["conf*", "conf[x]", "conf?", "conf\\"])
def test_an_ssh_config_named_like_a_pattern_is_that_file(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer, name: str
) -> None:
    """A decoy the name would match as a glob holds a broken "rel": were it included (first,
    in lexical order), the tunnel would not come up."""
    alias_config(tether, sshd, name)
    (tether.workdir / "conf").write_text("Host rel\n  HostName 127.0.0.1\n  Port 1\n")
    via = ["--via", "ssh://rel", "--engine", str(sshd.engine), "--ssh-config", name]
    up_and_down(tether, "--to", echo_server.address, *via)


@pytest.mark.parametrize("name", ["kh%h", "kh%%", "kh\\"])
def test_a_known_hosts_named_like_a_token_is_that_file(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer, name: str
) -> None:
    shutil.copy(sshd.known_hosts, tether.workdir / name)
    up_and_down(tether, "--to", echo_server.address, *flags(sshd, known_hosts=name))


@pytest.mark.parametrize("name", ["id%h", "id\\"])
def test_an_identity_file_named_like_a_token_is_that_file(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer, name: str
) -> None:
    shutil.copy(sshd.client_key, tether.workdir / name)
    (tether.workdir / name).chmod(0o600)
    up_and_down(tether, "--to", echo_server.address, *flags(sshd, identity=name))


def test_a_path_ssh_would_expand_a_variable_in(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer
) -> None:
    """ssh has no escape for "${": the OpenSSH engine refuses it (exit 2); the asyncssh engine
    reads the file as it is."""
    shutil.copy(sshd.known_hosts, tether.workdir / "kh${HOME}")
    named = flags(sshd, known_hosts="kh${HOME}")
    if sshd.engine == "asyncssh":
        up_and_down(tether, "--to", echo_server.address, *named)
        return
    code, _, err = tether.run("start", "--to", echo_server.address, *named)
    assert code == 2, err
    assert "known_hosts: cannot pass" in err and "environment variable" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("name", ["tmp%h", "tmp${HOME}"])
def test_a_tmpdir_ssh_would_expand(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer, name: str
) -> None:
    tmpdir = Path(tether.env["TMPDIR"]) / name
    tmpdir.mkdir()
    try:
        env = {"TMPDIR": str(tmpdir)}
        up_and_down(tether, "--to", echo_server.address, *sshd.tether_flags(), env=env)
        assert list(tmpdir.iterdir()) == []
    finally:
        tmpdir.rmdir()
