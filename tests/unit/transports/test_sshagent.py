"""A real ssh-agent's list of keys, asked over its socket; and the encrypted keys that it does not
hold, told from the key files and that list, with nothing decrypted and nothing asked."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.waiting import wait_until_sync
from tether.transports.sshagent import agent_keys
from tether.transports.sshidentities import plan

PASSPHRASE = "secret words"


def keygen(path: Path, passphrase: str, *extra: str) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f", str(path), *extra],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return path


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Path]:
    """A private ssh-agent, holding nothing; its socket."""
    sock = tmp_path / "agent.sock"
    process = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL
    )
    try:
        wait_until_sync(sock.exists, "the agent's socket")
        yield sock
    finally:
        process.terminate()
        process.wait()


def add(agent: Path, key: Path, tmp_path: Path) -> None:
    askpass = tmp_path / "askpass"
    askpass.write_text(f"#!/bin/sh\necho '{PASSPHRASE}'\n")
    askpass.chmod(0o700)
    env = {
        **os.environ,
        "SSH_AUTH_SOCK": str(agent),
        "SSH_ASKPASS": str(askpass),
        "SSH_ASKPASS_REQUIRE": "force",
        "DISPLAY": "none",
    }
    subprocess.run(
        ["ssh-add", str(key)], env=env, check=True, stdin=subprocess.DEVNULL, capture_output=True
    )


async def test_only_encrypted_keys_outside_the_agent_are_locked(
    tmp_path: Path, agent: Path
) -> None:
    plain = keygen(tmp_path / "plain", "")
    locked = keygen(tmp_path / "locked", PASSPHRASE)
    loaded = keygen(tmp_path / "loaded", PASSPHRASE)
    # An old PEM key: its public half is only in its .pub, which is then what tells.
    pem = keygen(tmp_path / "pem", PASSPHRASE, "-m", "PEM", "-t", "rsa")
    (tmp_path / "pem.pub").unlink()
    missing = tmp_path / "missing"
    add(agent, loaded, tmp_path)
    held = await agent_keys(str(agent))
    assert held is not None
    candidates = [str(path) for path in (plain, missing, locked, loaded, pem)]
    assert plan(candidates, [], held).locked == (str(locked),)
    # No agent: every encrypted key is locked, the PEM one too.
    assert plan(candidates, [], []).locked == (str(locked), str(loaded), str(pem))
    assert plan([str(plain)], [], held).locked == ()


async def test_the_agents_list(tmp_path: Path, agent: Path) -> None:
    assert await agent_keys(str(agent)) == []
    key = keygen(tmp_path / "k", PASSPHRASE, "-C", "the comment")
    add(agent, key, tmp_path)
    listed = await agent_keys(str(agent))
    assert listed is not None
    (held,) = listed
    assert held.index == 0 and held.comment == "the comment"
    assert held.blob.startswith(b"\x00\x00\x00\x0bssh-ed25519")
    assert await agent_keys(str(tmp_path / "no-agent")) is None
    assert await agent_keys("") is None
