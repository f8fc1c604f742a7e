"""A real ssh-agent's list of keys, asked over its socket; and the encrypted keys that it does not
hold, told from the key files and that list, with nothing decrypted and nothing asked."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.ssh_setups import PASSPHRASE, add_to_agent, private_agent
from tether.transports.sshagent import agent_keys
from tether.transports.sshidentities import plan

def keygen(path: Path, passphrase: str, *extra: str) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f", str(path), *extra],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return path


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Path]:
    with private_agent(tmp_path) as sock:
        yield sock


def add(agent: Path, key: Path) -> None:
    add_to_agent(agent, key, PASSPHRASE)


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
    add(agent, loaded)
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
    add(agent, key)
    listed = await agent_keys(str(agent))
    assert listed is not None
    (held,) = listed
    assert held.index == 0 and held.comment == "the comment"
    assert held.blob.startswith(b"\x00\x00\x00\x0bssh-ed25519")
    assert await agent_keys(str(tmp_path / "no-agent")) is None
    assert await agent_keys("") is None
