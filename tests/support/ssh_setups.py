"""SSH setups that tests of failures share: an encrypted key, a private ssh-agent that holds
nothing, a jump host in front of a server, a server with a host certificate."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.sshd_server import SshdServer, certify, keygen, require_sshd
from tests.support.waiting import wait_until_sync

PASSPHRASE = "secret words"


def encrypted_key(path: Path) -> Path:
    """A new ed25519 key encrypted with PASSPHRASE, at ``path`` (and ``path``.pub)."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", PASSPHRASE, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return path


def authorize(server: SshdServer, key: Path) -> None:
    """Let ``key`` log in to ``server`` too."""
    with open(server.directory / "authorized_keys", "a") as authorized:
        authorized.write(Path(f"{key}.pub").read_text())


@contextmanager
def private_agent(directory: Path) -> Iterator[Path]:
    """A private ssh-agent that holds no key; its socket, in ``directory``: meant for one
    child's SSH_AUTH_SOCK, never this process's. It is ended on leaving."""
    sock = directory / "agent.sock"
    agent = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(sock)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
    )
    try:
        wait_until_sync(sock.exists, "the agent's socket")
        yield sock
    finally:
        agent.terminate()
        agent.wait()


def add_to_agent(sock: Path, key: Path, passphrase: str | None = None) -> None:
    """ssh-add KEY (and KEY-cert.pub, if it is there, as ssh-add does) to the agent at
    ``sock``; an encrypted key's ``passphrase`` comes from an askpass program, never a TTY."""
    env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
    if passphrase is not None:
        askpass = sock.parent / "askpass"
        askpass.write_text(f"#!/bin/sh\necho '{passphrase}'\n")
        askpass.chmod(0o700)
        env.update(SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force", DISPLAY="none")
    subprocess.run(
        ["ssh-add", str(key)], env=env, check=True, capture_output=True, stdin=subprocess.DEVNULL
    )


@contextmanager
def jump_pair(directory: Path) -> Iterator[tuple[SshdServer, SshdServer]]:
    """Two sshd: the jump host, and the server behind it."""
    require_sshd()
    with SshdServer(directory / "jump") as jump, SshdServer(directory / "inner") as inner:
        yield jump, inner


def jump_config(
    path: Path,
    jump: SshdServer,
    inner: SshdServer,
    known_hosts: Path,
    *,
    jump_user: str | None = None,
) -> Path:
    """An ssh_config where Host inner is reached through ProxyJump jump; ``jump_user`` logs
    in to the jump host instead of its own user."""
    blocks = []
    for alias, server, user, extra in (
        ("jump", jump, jump_user or jump.user, ""),
        ("inner", inner, inner.user, "  ProxyJump jump\n"),
    ):
        blocks.append(
            f"Host {alias}\n  HostName {server.host}\n  Port {server.port}\n  User {user}\n"
            f"  IdentityFile {server.client_key}\n  UserKnownHostsFile {known_hosts}\n"
            f"  IdentitiesOnly yes\n{extra}"
        )
    path.write_text("".join(blocks))
    path.chmod(0o600)
    return path


@contextmanager
def certified_sshd(directory: Path) -> Iterator[tuple[SshdServer, Path]]:
    """An sshd that offers a host certificate, and the CA key that signed it."""
    require_sshd()
    directory.mkdir(parents=True)
    authority = keygen(directory / "host_ca")
    server_dir = directory / "sshd"
    server_dir.mkdir()
    host_key = keygen(server_dir / "host_ed25519")
    certificate = certify(authority, host_key, identity="host", principals="127.0.0.1", host=True)
    with SshdServer(server_dir, options=(f"HostCertificate {certificate}",)) as server:
        yield server, authority


def fingerprint(public_key: Path) -> str:
    """The SHA256 fingerprint of a .pub file, as ssh-keygen -l says it."""
    listing = subprocess.run(
        ["ssh-keygen", "-lf", str(public_key)], capture_output=True, text=True, check=True
    ).stdout
    return listing.split()[1]
