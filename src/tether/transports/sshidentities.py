"""Which keys and certificates a login offers, and in which order, as OpenSSH's ssh decides
(sshconnect2.c, pubkey_prepare): the asyncssh engine logs in with this plan, and both engines
explain a refused certificate from it.

ssh offers, in this order: the certificates of CertificateFile; the agent's keys, those that an
IdentityFile names first (with IdentitiesOnly, only those); then the identity files' own keys,
each followed by its certificate KEY-cert.pub when no CertificateFile is set. A certificate is
signed for by the first key before it in that order that it certifies (the agent's, or a file's
that opens without a passphrase); with none, it is not offered.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from tether.errors import ConfigError
from tether.files import KEY_LIMIT, read_regular
from tether.transports.sshcerts import Certificate, Offered, parse, read

# The key files ssh tries when no IdentityFile is set (OpenSSH 9.2, less XMSS).
DEFAULT_KEYS = ("id_rsa", "id_ecdsa", "id_ecdsa_sk", "id_ed25519", "id_ed25519_sk", "id_dsa")
_OPENSSH_KEY = b"openssh-key-v1\0"
_ENCRYPTED_PEM = (b"Proc-Type: 4,ENCRYPTED", b"BEGIN ENCRYPTED PRIVATE KEY")


@dataclass(frozen=True)
class KeyFile:
    """An identity file as ssh sees it before any passphrase: its public key, when the file
    (an OpenSSH key's unencrypted header) or KEY.pub tells it; whether it holds a private key,
    and whether that needs a passphrase."""

    path: str
    public: bytes | None
    private: bool = False
    encrypted: bool = False

    @property
    def usable(self) -> bool:
        """Whether it signs without a prompt (and tether never prompts)."""
        return self.private and not self.encrypted


@dataclass(frozen=True)
class AgentKey:
    """A key or certificate the agent holds; ``index`` is its place in the agent's list."""

    index: int
    blob: bytes
    comment: str


@dataclass(frozen=True)
class Identity:
    """One offer: a key or certificate (``blob``; None for a key file whose public half only
    its private key tells), and what signs for it: an agent key, else ``key_file``."""

    blob: bytes | None
    source: str  # the file, or "ssh-agent"
    certificate: Certificate | None = None
    agent: AgentKey | None = None
    key_file: KeyFile | None = None
    beside: str | None = None  # for KEY-cert.pub, the identity file KEY


@dataclass(frozen=True)
class Plan:
    """What a login offers, in order, and the certificates among them (with those that no key
    signs for, and why), to explain a refusal; and the identity files it could not offer
    because they are encrypted and the agent does not hold their keys (tether never asks for
    a passphrase), for the same reason."""

    identities: tuple[Identity, ...]
    offered: tuple[Offered, ...]
    locked: tuple[str, ...] = ()


def read_key_file(path: str) -> KeyFile | None:
    """What ssh knows of the identity file ``path`` without opening it: None if neither it nor
    its .pub exists."""
    try:
        data: bytes | None = read_regular(
            Path(path), limit=KEY_LIMIT, what="identity_file", error=ConfigError
        )
    except (FileNotFoundError, ConfigError):
        data = None
    public, private, encrypted = None, False, False
    if data is not None:
        public, encrypted = _openssh_header(data)
        private = public is not None or b"PRIVATE KEY" in data
        if public is None and private:
            encrypted = any(marker in data for marker in _ENCRYPTED_PEM)
        elif not private:  # a public key named as the identity: the agent may hold its key
            public = public_blob(data)
    if public is None:
        public = read_public(Path(f"{path}.pub"))
    if data is None and public is None:
        return None
    return KeyFile(path, public, private, encrypted)


def read_public(path: Path) -> bytes | None:
    """The blob of the public key (or certificate) in a .pub file; None if there is none."""
    try:
        data = read_regular(path, limit=KEY_LIMIT, what="public key", error=ConfigError)
    except (FileNotFoundError, ConfigError):
        return None
    return public_blob(data)


def public_blob(data: bytes) -> bytes | None:
    """The blob on the first line of a public key file (TYPE BASE64 [COMMENT])."""
    try:
        return base64.b64decode(data.split()[1], validate=True)
    except (IndexError, ValueError, binascii.Error):
        return None


def plan(
    identity_files: Sequence[str],
    certificate_files: Sequence[str],
    agent_keys: Sequence[AgentKey],
    *,
    identities_only: bool = False,
    read_key: Callable[[str], KeyFile | None] = read_key_file,
) -> Plan:
    """The login's offers, from the identity and certificate files (paths as ssh reads them,
    already expanded) and the agent's keys."""
    certs: list[Identity] = []
    for name in certificate_files:
        cert = read(Path(name))
        if cert is not None and cert.user:  # ssh ignores a host certificate here
            certs.append(Identity(cert.blob, name, cert))
    files: list[Identity] = []
    for name in identity_files:
        if name.lower() == "none":
            continue
        key = read_key(name)
        if key is not None:
            files.append(Identity(key.public, name, key_file=key))
        # ssh looks beside each key only when no CertificateFile is set at all.
        beside = read(Path(f"{name}-cert.pub")) if not certificate_files else None
        if beside is not None and beside.user:
            files.append(Identity(beside.blob, f"{name}-cert.pub", beside, beside=name))
    matched: list[Identity] = []
    others: list[Identity] = []
    for agent_key in agent_keys:
        held = _certificate(agent_key.blob)
        if held is not None and not held.user:
            continue
        found = next((i for i in files if i.blob == agent_key.blob), None)
        if found is not None:
            files.remove(found)
            matched.append(replace(found, certificate=held, agent=agent_key))
        elif not identities_only:
            others.append(Identity(agent_key.blob, "ssh-agent", held, agent=agent_key))
    order = [*certs, *matched, *others, *files]
    # An encrypted key whose public half is unknown (an old PEM key without its .pub) could be
    # any of the agent's: it counts as locked only when the agent holds nothing.
    locked = tuple(
        i.source
        for i in files
        if i.certificate is None
        and i.key_file is not None
        and i.key_file.encrypted
        and (i.blob is not None or not agent_keys)
    )
    identities: list[Identity] = []
    offered: list[Offered] = []
    for identity in order:
        if identity.certificate is None:
            if identity.agent is not None or (identity.key_file and identity.key_file.usable):
                identities.append(identity)
            continue
        if identity.agent is not None:  # the agent holds the certificate itself
            identities.append(identity)
            offered.append(Offered(identity.source, identity.certificate))
            continue
        signer, item = _signer(identity, order, agent_keys)
        if signer is not None:
            identities.append(replace(identity, agent=signer.agent, key_file=signer.key_file))
        offered.append(item)
    return Plan(tuple(identities), tuple(offered), locked)


def _signer(
    identity: Identity, order: list[Identity], agent_keys: Sequence[AgentKey]
) -> tuple[Identity | None, Offered]:
    """What signs for a certificate: the first key in the login's order that it certifies, or
    (for KEY-cert.pub) the file KEY; and the certificate as offered, or why it cannot be."""
    assert identity.certificate is not None
    wanted = identity.certificate.key

    def missing(why: str, fix: str | None = None) -> tuple[None, Offered]:
        assert identity.certificate is not None
        offered = Offered(identity.source, identity.certificate, why)
        return None, replace(offered, fix=fix) if fix else offered

    signer = next((i for i in order if i.certificate is None and i.blob == wanted), None)
    beside = identity.beside
    if signer is None and beside is not None:
        # A key file whose public half is unknown until it is opened: ssh pairs it by name.
        signer = next(
            (i for i in order if i.source == beside and i.blob is None and i.key_file), None
        )
    if signer is not None and (signer.agent is not None or _usable(signer)):
        return signer, Offered(identity.source, identity.certificate)
    if signer is not None and signer.key_file is not None and signer.key_file.encrypted:
        return missing(
            f"its key {signer.source} is encrypted and not in ssh-agent",
            f"load the key into ssh-agent: ssh-add {signer.source}",
        )
    if signer is not None:
        return missing(f"{signer.source} is its public key only, and ssh-agent does not hold it")
    if any(key.blob == wanted for key in agent_keys):
        return missing(
            "ssh-agent holds its key, but IdentitiesOnly lets only the agent's keys that an "
            "IdentityFile names be used",
            "name its key (or its .pub) with identity_file",
        )
    if beside is not None:
        return missing(f"neither {beside} nor ssh-agent holds the key it certifies")
    return missing("neither an identity file nor ssh-agent holds the key it certifies")


def _usable(identity: Identity) -> bool:
    return identity.key_file is not None and identity.key_file.usable


def _certificate(blob: bytes) -> Certificate | None:
    try:
        return parse(blob)
    except (ValueError, KeyError):
        return None


def _openssh_header(data: bytes) -> tuple[bytes | None, bool]:
    """The public key and whether the key is encrypted, from an OpenSSH-format private key's
    header (both are stored in the clear); (None, False) for another format."""
    body = b"".join(
        line.strip() for line in data.splitlines() if line.strip() and not line.startswith(b"-----")
    )
    try:
        raw = base64.b64decode(body, validate=True)
    except (ValueError, binascii.Error):
        return None, False
    if not raw.startswith(_OPENSSH_KEY):
        return None, False
    fields: list[bytes] = []
    offset = len(_OPENSSH_KEY)
    try:
        for _ in range(3):  # cipher, kdf name, kdf options
            fields.append(_string(raw, offset))
            offset += 4 + len(fields[-1])
        offset += 4  # the number of keys
        public = _string(raw, offset)
    except (struct.error, ValueError):
        return None, False
    return public, fields[0] != b"none"


def _string(data: bytes, offset: int) -> bytes:
    (size,) = struct.unpack_from(">I", data, offset)
    if offset + 4 + size > len(data):
        raise ValueError("truncated key")
    return data[offset + 4 : offset + 4 + size]


__all__ = ["DEFAULT_KEYS", "AgentKey", "Identity", "KeyFile", "Plan", "plan", "read_key_file"]
