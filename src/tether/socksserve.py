"""A SOCKS tunnel's handshake with each client, on the client's raw socket: its request read
within a deadline and checked against the allowlist, and the replies. When each reply is sent,
per data path, is connection.py's to say.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Protocol, TypeVar

from tether import socks
from tether.allowlist import allows
from tether.errors import TargetUnreachableError, describe
from tether.socks import Reply, SocksError
from tether.spec import Endpoint, TunnelSpec
from tether.values import host_port

log = logging.getLogger("tether")
#: How long a client has to send its greeting and request: one that never finishes must not
#: hold a connection slot for long.
HANDSHAKE_TIMEOUT = 10.0
#: How many handshakes may be under way at once, apart from max_connections: past it the
#: oldest of the busiest peer is dropped, so idle clients cannot starve the ones that talk.
HANDSHAKE_LIMIT = 128
T = TypeVar("T")


class SocksHost(Protocol):
    """What a handshake needs of its tunnel (tunnel.Tunnel is the one)."""

    spec: TunnelSpec  # its name, and the allowlist
    handshake_timeout: float

    def warn(self, kind: str, message: str) -> None: ...
    def failed(self, kind: str, message: str) -> None: ...


class SocksClient:
    """One client's handshake on its raw socket, and the bytes it took each way."""

    def __init__(self, sock: socket.socket, host: SocksHost) -> None:
        self.sock = sock
        self.host = host
        self.read = 0
        self.written = 0

    async def request(self) -> Endpoint | None:
        """The target the client asks for, if it may reach it; None once it has been answered
        (or not, if it does not speak SOCKS5) and its connection should end."""
        spec = self.host.spec
        try:
            async with asyncio.timeout(self.host.handshake_timeout):
                await self._message(socks.parse_greeting)
                self._send(socks.METHOD_ACCEPTED)
                request = await self._message(socks.parse_request)
        except TimeoutError:
            self._refused(f"no SOCKS request within {self.host.handshake_timeout:g}s")
            return None
        except SocksError as exc:
            if exc.answer is not None:
                self._send(exc.answer)
            if self.read == 0:  # connected and went without a word: a port check, not a client
                log.debug("%s: SOCKS client left without a greeting: %s", spec.name, exc.reason)
            else:
                self._refused(exc.reason)
            return None
        target = Endpoint(request.host, request.port)
        if not allows(spec.allow, request.host, request.port):
            denied = f"SOCKS request for {target} denied: not in the allowlist"
            self.host.failed("socks-denied", denied)
            self._send(socks.reply(Reply.NOT_ALLOWED))
            return None
        return target

    def answer(self, code: Reply) -> bool:
        """Reply to the request; False if the client is gone."""
        return self._send(socks.reply(code))

    def failed(self, exc: BaseException) -> None:
        """Reply with what a failure to reach the target means in SOCKS."""
        kind = exc.kind if isinstance(exc, TargetUnreachableError) else "other"
        self.answer(socks.FAILURE_REPLIES[kind])

    async def _message(self, parse: Callable[[bytes], socks.Need | T]) -> T:
        """Read one message, asking for exactly the bytes it still lacks: what the client
        sends after it is the target's."""
        loop = asyncio.get_running_loop()
        data = b""
        while isinstance(parsed := parse(data), socks.Need):
            try:
                chunk = await loop.sock_recv(self.sock, parsed.more)
            except OSError as exc:
                raise SocksError(f"the client went away: {describe(exc)}", None) from None
            if not chunk:
                raise SocksError("the client closed the connection mid-handshake", None)
            data += chunk
            self.read += len(chunk)
        return parsed

    def _send(self, data: bytes) -> bool:
        # A reply of a few bytes into a fresh connection's empty buffer: it goes at once, or the
        # client is gone.
        try:
            sent = self.sock.send(data)
        except OSError:
            return False
        self.written += sent
        return sent == len(data)

    def _refused(self, reason: str) -> None:
        peer = _peer(self.sock)
        self.host.warn("socks", f"SOCKS handshake from {peer} failed: {reason}")


def _peer(sock: socket.socket) -> str:
    try:
        host, port = sock.getpeername()[:2]
    except OSError:
        return "a client"
    return host_port(host, port)
