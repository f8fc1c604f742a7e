"""The keys an ssh-agent holds, asked over its socket (draft-miller-ssh-agent), to explain a
refused login on either engine: no subprocess, no asyncssh, bounded in time and in size.

(The asyncssh engine signs with the agent through asyncssh, see sshkeys.py; this only lists.)
"""

from __future__ import annotations

import asyncio
import os
import struct

from tether.transports.sshidentities import AgentKey

AGENT_TIMEOUT = 5.0
# An answer with hundreds of keys (or certificates) fits; more is not an agent.
AGENT_LIMIT = 1024 * 1024
REQUEST_IDENTITIES = 11
IDENTITIES_ANSWER = 12


def agent_path(identity_agent: str | None) -> str:
    """The agent's socket as ssh picks it: ssh_config's IdentityAgent (already expanded by the
    caller), else $SSH_AUTH_SOCK; "" for none."""
    path = identity_agent or "SSH_AUTH_SOCK"
    if path == "SSH_AUTH_SOCK":
        return os.environ.get("SSH_AUTH_SOCK", "")
    return "" if path.lower() == "none" else path


async def agent_keys(socket_path: str) -> list[AgentKey] | None:
    """The keys (and certificates) the agent at ``socket_path`` holds, in its order; None if no
    agent answers there."""
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


def _identities(answer: bytes) -> list[AgentKey]:
    if answer[:1] != bytes([IDENTITIES_ANSWER]):
        raise ValueError("not an identities answer")
    (count,) = struct.unpack_from(">I", answer, 1)
    offset = 5
    found: list[AgentKey] = []
    for index in range(count):
        blob, offset = _string(answer, offset)
        comment, offset = _string(answer, offset)
        found.append(AgentKey(index, blob, comment.decode("utf-8", errors="replace")))
    return found


def _string(data: bytes, offset: int) -> tuple[bytes, int]:
    (length,) = struct.unpack_from(">I", data, offset)
    start = offset + 4
    if start + length > len(data):
        raise ValueError("truncated")
    return data[start : start + length], start + length
