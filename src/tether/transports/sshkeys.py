"""The asyncssh engine's login keys: the keys and certificates OpenSSH's ssh would offer, in its
order (sshidentities.py), made into asyncssh key pairs that a key file or ssh-agent signs for.

asyncssh's own choice differs where certificates meet the agent: it never pairs a certificate
(KEY-cert.pub beside an encrypted key, or a CertificateFile) with the agent's copy of its key,
and a KEY-cert.pub of another key makes it refuse to start. So tether picks the keys, asks the
agent once itself, and hands asyncssh the finished list.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import asyncssh
from asyncssh.config import SSHClientConfig

from tether.errors import ConfigError
from tether.files import KEY_LIMIT, read_regular
from tether.spec import SshOptions
from tether.transports import sshidentities
from tether.transports.sshcerts import Offered
from tether.transports.sshidentities import DEFAULT_KEYS, AgentKey, Identity, KeyFile

log = logging.getLogger("tether")

# Asking a (stopped, hung) agent for its keys must not hold up the login for ever.
AGENT_TIMEOUT = 10.0


@dataclass
class Login:
    """The key pairs to offer, in order; the certificates among them (and those no key can sign
    for), to explain a refusal; the agent connection that signs for some, open until the login
    is over."""

    keys: list[asyncssh.SSHKeyPair]
    offered: tuple[Offered, ...] = ()
    locked: tuple[str, ...] = ()  # encrypted identity files the agent does not hold
    agent: asyncssh.SSHAgentClient | None = None
    agent_found: bool = False  # whether an agent answered (it is closed after the login)

    async def close(self) -> None:
        agent, self.agent = self.agent, None
        if agent is not None:
            agent.close()
            await agent.wait_closed()


async def prepare(options: SshOptions, config: SSHClientConfig) -> Login:
    """The login's keys for ``options`` and the via's ssh_config: tether's identity and
    certificate files first, then ssh_config's (else the default key files), and the agent's."""
    identity_files = _unique([*options.identity_files, *_listed(config, "IdentityFile")]) or [
        os.path.expanduser(f"~/.ssh/{name}") for name in DEFAULT_KEYS
    ]
    certificate_files = _unique([*options.certificate_files, *_listed(config, "CertificateFile")])
    login = Login([])
    login.agent, agent_pairs = await _agent(config)
    login.agent_found = login.agent is not None
    try:
        agent_keys = [
            AgentKey(index, bytes(pair.public_data), pair.get_comment() or "")
            for index, pair in enumerate(agent_pairs)
        ]
        files = _KeyFiles(set(options.identity_files))
        plan = sshidentities.plan(
            identity_files,
            certificate_files,
            agent_keys,
            identities_only=bool(config.get("IdentitiesOnly", False)),
            read_key=files.read,
        )
        login.offered = plan.offered
        login.locked = plan.locked
        for identity in plan.identities:
            pair = files.pair(identity, agent_pairs)
            if pair is not None:
                login.keys += [pair, *_second_try(pair)]
    except BaseException:
        await login.close()  # an identity_file that is no key (exit 2) leaves nothing open
        raise
    return login


@dataclass
class _KeyFiles:
    """Identity files read once: what the plan knows of each, and the opened private keys."""

    named: set[str]  # named by tether's own options: one that is not a key is an error
    opened: dict[str, asyncssh.SSHKey] = field(default_factory=dict)

    def read(self, path: str) -> KeyFile | None:
        found = sshidentities.read_key_file(path)
        if found is None or found.encrypted or (found.public and not found.private):
            return found  # the agent may hold its key
        if not found.private and path not in self.named:
            return found
        try:
            data = read_regular(
                Path(path), limit=KEY_LIMIT, what="identity_file", error=ConfigError
            )
            key = asyncssh.import_private_key(data)
        except FileNotFoundError:
            return None
        except (asyncssh.KeyImportError, ValueError) as exc:
            if "passphrase" in str(exc).lower():
                return found
            if path in self.named:
                raise ConfigError(f"identity_file: not a usable private key: {exc}") from None
            log.warning("identity file %s is not a usable private key: %s", path, exc)
            return None
        self.opened[path] = key
        return KeyFile(path, bytes(key.public_data), private=True)

    def pair(
        self, identity: Identity, agent_pairs: Sequence[asyncssh.SSHKeyPair]
    ) -> asyncssh.SSHKeyPair | None:
        """The key pair that offers ``identity``, signed for by the agent or a key file."""
        if identity.agent is not None:
            pair = copy.copy(agent_pairs[identity.agent.index])
        elif identity.key_file is not None and identity.key_file.path in self.opened:
            pair = asyncssh.load_keypairs([self.opened[identity.key_file.path]])[0]
        else:
            return None
        cert = identity.certificate
        if cert is not None and bytes(pair.public_data) != cert.blob:
            text = f"{cert.algorithm} {base64.b64encode(cert.blob).decode()}"
            try:
                pair.set_certificate(asyncssh.import_certificate(text))
            except (asyncssh.KeyImportError, ValueError) as exc:
                log.debug("certificate %s: %s", identity.source, exc)
                return None
        return pair


# asyncssh offers an RSA certificate as ssh-rsa-cert-v01 first (what OpenSSH before 7.8 takes),
# then as rsa-sha2-*-cert-v01 (what OpenSSH 8.8 and later take), but the second time only if a
# key is left to try after it. It passes over a key whose signature algorithm it does not know,
# without a word to the server: one such after each RSA certificate gives it its second try.
RSA_CERTIFICATE = b"ssh-rsa-cert-v01@openssh.com"
UNKNOWN_ALGORITHMS = (b"none@tether.invalid",)


def placeholder(pair: asyncssh.SSHKeyPair) -> bool:
    """Whether ``pair`` is one of those that asyncssh passes over (see _second_try)."""
    return tuple(pair.sig_algorithms) == UNKNOWN_ALGORITHMS


def _second_try(pair: asyncssh.SSHKeyPair) -> list[asyncssh.SSHKeyPair]:
    if pair.algorithm != RSA_CERTIFICATE:
        return []
    passed_over = copy.copy(pair)
    passed_over.sig_algorithms = UNKNOWN_ALGORITHMS
    return [passed_over]


async def _agent(
    config: SSHClientConfig,
) -> tuple[asyncssh.SSHAgentClient | None, list[asyncssh.SSHKeyPair]]:
    """The agent (ssh_config's IdentityAgent, else $SSH_AUTH_SOCK) and its keys; none if there
    is no agent or it does not answer."""
    path = str(config.get("IdentityAgent", "") or "SSH_AUTH_SOCK")
    if path == "SSH_AUTH_SOCK":
        path = os.environ.get("SSH_AUTH_SOCK", "")
    if not path or path.lower() == "none":
        return None, []
    agent = asyncssh.SSHAgentClient(os.path.expanduser(path))
    try:
        keys = await asyncio.wait_for(agent.get_keys(), AGENT_TIMEOUT)
    except (ValueError, OSError, TimeoutError) as exc:
        log.debug("ssh-agent at %s: %s", path, exc)
        agent.close()
        await agent.wait_closed()
        return None, []
    except BaseException:  # cancelled: nothing is left open
        agent.close()
        raise
    return agent, list(keys)


def _listed(config: SSHClientConfig, name: str) -> list[str]:
    """A file list of ssh_config (asyncssh has expanded its %-tokens; ~ is left)."""
    return [os.path.expanduser(p) for p in cast(list[str], config.get(name, []))]


def _unique(paths: list[str]) -> list[str]:
    """``paths`` without repeats, in order: ssh registers a file once."""
    return list(dict.fromkeys(paths))


__all__ = ["Login", "prepare"]
