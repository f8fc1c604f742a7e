"""Which of the keys a login could use are encrypted and not in ssh-agent: told by the key files'
public parts and the agent's list of identities, for both engines alike. Nothing is decrypted,
and no passphrase is ever asked for."""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path

from tether.errors import ConfigError
from tether.files import KEY_LIMIT, read_regular

AGENT_TIMEOUT = 5.0
# An agent's answer with hundreds of keys (or certificates) fits; more is not an agent.
AGENT_LIMIT = 1024 * 1024
# The agent protocol (draft-miller-ssh-agent): the request for the identities, and its answer.
REQUEST_IDENTITIES = 11
IDENTITIES_ANSWER = 12
OPENSSH_KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----", "-----END OPENSSH PRIVATE KEY-----")
OPENSSH_MAGIC = b"openssh-key-v1\0"
# PEM keys that OpenSSL encrypted: PKCS#8, and the traditional header of PKCS#1 and SEC 1.
PEM_ENCRYPTED = ("-----BEGIN ENCRYPTED PRIVATE KEY-----", "Proc-Type: 4,ENCRYPTED")


async def locked_keys(
    candidates: Sequence[Path], environ: Mapping[str, str] = os.environ
) -> tuple[list[Path], bool]:
    """The keys among ``candidates`` that are encrypted and that the agent does not hold, in
    order; and whether an agent answered at all."""
    encrypted = [(path, blob) for path in candidates for blob in _encrypted(path)]
    if not encrypted:
        return [], False
    held = await agent_identities(environ.get("SSH_AUTH_SOCK", ""))
    locked = []
    for path, blob in encrypted:
        if held is None or (blob is not None and blob not in held):
            locked.append(path)
        elif blob is None and not held:
            # Its public half is unknown (an old PEM key without its .pub): it counts as
            # locked only where the agent holds nothing that could be it.
            locked.append(path)
    return locked, held is not None


def _encrypted(path: Path) -> list[bytes | None]:
    """[the public key blob] if ``path`` is an encrypted private key ([None] when its public
    half cannot be told); [] if it is not one, or cannot be read."""
    try:
        data = read_regular(path, limit=KEY_LIMIT, what="identity_file", error=ConfigError)
    except (OSError, ConfigError):
        return []
    text = data.decode("ascii", errors="replace")
    begin, end = OPENSSH_KEY
    if begin in text and end in text:
        body = text.split(begin, 1)[1].split(end, 1)[0]
        try:
            cipher, public = _openssh_key(base64.b64decode("".join(body.split())))
        except (ValueError, binascii.Error, struct.error):
            return []
        return [public] if cipher != b"none" else []
    if any(marker in text for marker in PEM_ENCRYPTED):
        return [_public_file(Path(f"{path}.pub"))]
    return []


def _openssh_key(data: bytes) -> tuple[bytes, bytes]:
    """The cipher and the first public key of an OpenSSH private key file: both stand before
    the encrypted part (PROTOCOL.key)."""
    if not data.startswith(OPENSSH_MAGIC):
        raise ValueError("not an OpenSSH private key")
    offset = len(OPENSSH_MAGIC)
    fields: list[bytes] = []
    for _ in range(3):  # ciphername, kdfname, kdfoptions
        field, offset = _string(data, offset)
        fields.append(field)
    (count,) = struct.unpack_from(">I", data, offset)
    if count < 1:
        raise ValueError("no key")
    public, _ = _string(data, offset + 4)
    return fields[0], public


def _string(data: bytes, offset: int) -> tuple[bytes, int]:
    (length,) = struct.unpack_from(">I", data, offset)
    start = offset + 4
    if start + length > len(data):
        raise ValueError("truncated")
    return data[start : start + length], start + length


def _public_file(path: Path) -> bytes | None:
    """The key blob of a .pub file ("type base64 comment")."""
    try:
        words = read_regular(path, limit=KEY_LIMIT, what="identity_file", error=ConfigError)
        return base64.b64decode(words.split()[1], validate=True)
    except (OSError, ConfigError, IndexError, ValueError, binascii.Error):
        return None


async def agent_identities(socket_path: str) -> set[bytes] | None:
    """The public key blobs the agent at ``socket_path`` holds; None if none answers."""
    if not socket_path:
        return None
    try:
        async with asyncio.timeout(AGENT_TIMEOUT):
            reader, writer = await asyncio.open_unix_connection(socket_path)
            try:
                writer.write(struct.pack(">IB", 1, REQUEST_IDENTITIES))
                await writer.drain()
                (length,) = struct.unpack(">I", await reader.readexactly(4))
                if not 0 < length <= AGENT_LIMIT:
                    return None
                answer = await reader.readexactly(length)
            finally:
                writer.close()
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return None
    try:
        return _identities(answer)
    except (ValueError, struct.error):
        return None


def _identities(answer: bytes) -> set[bytes]:
    if answer[:1] != bytes([IDENTITIES_ANSWER]):
        raise ValueError("not an identities answer")
    (count,) = struct.unpack_from(">I", answer, 1)
    offset = 5
    found: set[bytes] = set()
    for _ in range(count):
        blob, offset = _string(answer, offset)
        _, offset = _string(answer, offset)  # the comment
        found.add(blob)
    return found
