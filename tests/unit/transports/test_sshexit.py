"""Explaining a master that exited while starting: OpenSSH's words mapped to tether's errors,
and ssh's helpers run without ever holding up the event loop or outliving the wait."""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.sshd_server import keygen
from tests.support.waiting import wait_until
from tether.errors import (
    AuthenticationError,
    ConfigError,
    HostKeyError,
    TetherError,
    TransportUnreachableError,
)
from tether.transports import sshexit

RESOLVED = {"hostname": ["127.0.0.1"], "userknownhostsfile": ["/k/known_hosts"]}


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses: where the unknown-key case asks for the key it missed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


HOP_CLOSED = (
    "kex_exchange_identification: Connection closed by remote host\n"
    "Connection closed by UNKNOWN port 65535"
)


async def test_a_jump_hosts_refusal_names_the_hop(closed_port: int) -> None:
    """The hop's ssh (ssh -W) writes to the master's stderr; the master, whose own server
    never spoke, then says so: what came before is the hop's."""
    said = f"nobody@10.0.0.9: Permission denied (publickey).\n{HOP_CLOSED}"
    resolved = {**RESOLVED, "proxyjump": ["bastion-j"], "port": [str(closed_port)]}
    error = await sshexit.startup_error(said, resolved, "ssh://inner")
    assert type(error) is AuthenticationError and error.hop == "nobody@10.0.0.9"
    assert error.message == (
        "SSH authentication to jump host nobody@10.0.0.9 (ProxyJump bastion-j) failed: "
        "Permission denied, so ssh://inner was not reached"
    )
    # The server's own refusal through the hop is the server's.
    said = "root@127.0.0.1: Permission denied (publickey)."
    error = await sshexit.startup_error(said, resolved, "ssh://inner")
    assert type(error) is AuthenticationError and error.hop is None
    assert error.message.startswith("SSH authentication to ssh://inner failed: Permission denied")


async def test_a_jump_hosts_unknown_key_names_the_hop(closed_port: int) -> None:
    said = (
        f"No ED25519 host key is known for [127.0.0.1]:{closed_port} and you have requested "
        f"strict checking.\nHost key verification failed.\n{HOP_CLOSED}"
    )
    resolved = {**RESOLVED, "proxyjump": ["bastion-j"], "port": ["22"]}
    error = await sshexit.startup_error(said, resolved, "ssh://inner")
    assert type(error) is HostKeyError and error.hop == f"[127.0.0.1]:{closed_port}"
    assert error.message.startswith(
        f"host key for jump host [127.0.0.1]:{closed_port} is not in /k/known_hosts"
    )


async def test_an_ssh_config_ssh_refuses(tmp_path: Path) -> None:
    config = tmp_path / "included"
    config.write_text("")
    config.chmod(0o666)
    said = f"Bad owner or permissions on {config}"
    error = await sshexit.startup_error(said, RESOLVED, "ssh://db")
    assert type(error) is ConfigError and error.exit_code == 2
    assert str(error) == (
        f"ssh_config: bad owner or permissions on {config}: writable by every user (mode 0666) "
        f"(chmod go-w {config})"
    )


@pytest.mark.parametrize(
    ("stderr", "kind", "words"),
    [
        (
            "No ED25519 host key is known for [127.0.0.1]:{port} and you have requested strict "
            "checking.\nHost key verification failed.",
            HostKeyError,
            r"\[127.0.0.1\]:{port} .* not in /k/known_hosts",
        ),
        (
            "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\n"
            "The fingerprint for the ED25519 key sent by the remote host is\n"
            "SHA256:abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG.\n"
            "Offending ED25519 key in /other/known_hosts:3\n"
            "Host key for [127.0.0.1]:{port} has changed and you have requested strict checking.\n"
            "Host key verification failed.",
            HostKeyError,
            r"does not match /other/known_hosts \(server offers SHA256:abcdefghij",
        ),
        (
            "Host key ED25519-CERT SHA256:x revoked by file /k/revoked\n"
            "@@@ WARNING: REVOKED HOST KEY DETECTED! @@@\n"
            "The ED25519 host key for db is marked as revoked.\n"
            "Host key verification failed.",
            HostKeyError,
            "marked @revoked",
        ),
        (
            "user@127.0.0.1: Permission denied (publickey).",
            AuthenticationError,
            r"authentication to ssh://db failed: Permission denied \(publickey\) \(check",
        ),
        (
            "ssh: Could not resolve hostname nowhere.invalid: Name or service not known",
            TransportUnreachableError,
            "cannot resolve SSH server nowhere.invalid: Name or service not known",
        ),
        (
            "ssh: connect to host 127.0.0.1 port {port}: Connection refused",
            TransportUnreachableError,
            "cannot reach SSH server ssh://db: connect to host 127.0.0.1 port {port}: Connection "
            "refused",
        ),
        ("", TransportUnreachableError, "cannot reach SSH server ssh://db: ssh exited"),
    ],
)
async def test_what_ssh_said_becomes_one_error(
    stderr: str, kind: type[TetherError], words: str, closed_port: int
) -> None:
    said = stderr.replace("{port}", str(closed_port))
    error = await sshexit.startup_error(said, {**RESOLVED, "port": [str(closed_port)]}, "ssh://db")
    words = words.replace("{port}", str(closed_port))
    assert type(error) is kind
    assert re.search(words, str(error)), str(error)


async def test_a_helper_is_killed_when_the_wait_is_cancelled(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    task = asyncio.create_task(
        sshexit.output(["sh", "-c", f'echo $$ > "{pid_file}"; exec sleep 60'])
    )
    await wait_until(lambda: pid_file.exists() and pid_file.read_text().strip() != "", "sh")
    pid = int(pid_file.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(ProcessLookupError):  # killed and reaped, not left running
        os.kill(pid, 0)


async def test_a_helper_that_hangs_gives_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sshexit, "HELPER_TIMEOUT", 0.2)
    pid_file = tmp_path / "pid"
    assert await sshexit.output(["sh", "-c", f'echo $$ > "{pid_file}"; exec sleep 60']) == ""
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


async def test_a_missing_helper_gives_nothing(tmp_path: Path) -> None:
    assert await sshexit.output([str(tmp_path / "no-such-program")]) == ""


async def test_settings_ssh_lists_more_than_once_are_kept(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text("Host db\n  IdentityFile /k/one\n  IdentityFile /k/two\n  User bob\n")
    resolved = await sshexit.resolve(["ssh", "-F", str(config), "db"])
    assert resolved["identityfile"] == ["/k/one", "/k/two"]
    assert resolved["user"] == ["bob"]


def test_paths_of_ssh_g_are_expanded_as_ssh_opens_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TETHER_TEST_DIR", "/keys")
    resolved = {"user": ["bob"], "hostname": ["db.internal"], "port": ["2222"], "host": ["db"]}
    home = pwd.getpwuid(os.getuid()).pw_dir  # ssh's, whatever $HOME says
    expanded = sshexit._expanded("~/.ssh/%r@%h:%p-%n%%", resolved)
    assert expanded == f"{home}/.ssh/bob@db.internal:2222-db%"
    assert sshexit._expanded("${TETHER_TEST_DIR}/%d", resolved) == f"/keys{home}"
    # What tether cannot expand as ssh would is left out, never guessed.
    assert sshexit._expanded("/k/%C", resolved) is None
    assert sshexit._expanded("/k/${TETHER_NO_SUCH_VARIABLE}", resolved) is None


async def test_a_refused_certificate_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)  # no agent's keys join the login
    key = keygen(tmp_path / "key")
    authority = keygen(tmp_path / "ca")
    subprocess.run(
        ["ssh-keygen", "-q", "-s", str(authority), "-I", "x", "-n", "alice", f"{key}.pub"],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    resolved = {**RESOLVED, "identityfile": [f"{tmp_path}/%r", str(key)], "user": ["bob"]}
    error = await sshexit.startup_error(
        "bob@db: Permission denied (publickey).", resolved, "ssh://db"
    )
    assert type(error) is AuthenticationError
    assert error.message == (
        f"SSH authentication to ssh://db failed: certificate {key}-cert.pub is for alice, "
        "not for user bob"
    )
