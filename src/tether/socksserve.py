"""A SOCKS tunnel's side of each connection: the client's request read within a deadline,
checked against the allowlist, and answered when the outcome is known.

On the relay path (direct, asyncssh) the stream to the target is opened first, and the client
hears success or why not (refused, unreachable, ...). On the handoff path (OpenSSH) success goes
out before the socket is handed to ssh, as `ssh -D` sends it before it opens the channel: once
ssh holds the socket, the target's first bytes could reach the client ahead of a reply sent
later. A target that refuses then ends the connection with a reset, right after the success.

On either path a request that comes while the transport is down waits for it up to the tunnel's
hold; then the client hears "network unreachable", and its connection is reset, as any
connection held that long is.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from tether import socks
from tether.allowlist import allows
from tether.errors import TargetUnreachableError, TetherError, describe
from tether.handoff import Forward
from tether.relay import Relay
from tether.socks import Reply, SocksError
from tether.spec import Endpoint
from tether.tcp import linger_zero
from tether.transports.base import RelayingTransport
from tether.values import host_port

if TYPE_CHECKING:
    from tether.tunnel import Tunnel

log = logging.getLogger("tether")
#: How long a client has to send its greeting and request: one that never finishes must not
#: hold a connection slot for long.
HANDSHAKE_TIMEOUT = 10.0
#: How many handshakes may be under way at once, apart from max_connections: past it the
#: oldest of the busiest peer is dropped, so idle clients cannot starve the ones that talk.
HANDSHAKE_LIMIT = 128
T = TypeVar("T")


class SocksClient:
    """One client's handshake on its raw socket, and the bytes it took each way."""

    def __init__(self, sock: socket.socket, tunnel: Tunnel) -> None:
        self.sock = sock
        self.tunnel = tunnel
        self.read = 0
        self.written = 0

    async def request(self) -> Endpoint | None:
        """The target the client asks for, if it may reach it; None once it has been answered
        (or not, if it does not speak SOCKS5) and its connection should end."""
        spec = self.tunnel.spec
        try:
            async with asyncio.timeout(self.tunnel.handshake_timeout):
                await self._message(socks.parse_greeting)
                self._send(socks.METHOD_ACCEPTED)
                request = await self._message(socks.parse_request)
        except TimeoutError:
            self._refused(f"no SOCKS request within {self.tunnel.handshake_timeout:g}s")
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
            self.tunnel.last_error = f"SOCKS request for {target} denied: not in the allowlist"
            self.tunnel.warn("socks-denied", self.tunnel.last_error)
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
        self.tunnel.warn("socks", f"SOCKS handshake from {peer} failed: {reason}")


def _peer(sock: socket.socket) -> str:
    try:
        host, port = sock.getpeername()[:2]
    except OSError:
        return "a client"
    return host_port(host, port)


async def serve_relay(
    tunnel: Tunnel, transport: RelayingTransport, relay: Relay, conn: socket.socket
) -> None:
    """The relay path: handshake, open the stream (held until linked), answer, then relay."""
    client = SocksClient(conn, tunnel)
    try:
        target = await tunnel.socks_request(client)
    except asyncio.CancelledError:  # the tunnel is closing, or needs room for a new handshake
        conn.close()
        relay.abort(reset_peers=False)
        raise
    if target is None:
        conn.close()
        relay.abort(reset_peers=False)
        return
    try:
        await tunnel.until_up()
        await transport.open(target, relay.remote)
    except TimeoutError:  # the transport stayed down for the hold
        tunnel.held_too_long()
        client.answer(Reply.NETWORK_UNREACHABLE)
        linger_zero(conn)
        conn.close()
        relay.abort(reset_peers=False)
        return
    except TetherError as exc:
        tunnel.connect_failed(exc)
        client.failed(exc)
        conn.close()
        relay.abort()
        return
    except asyncio.CancelledError:  # the tunnel is closing
        conn.close()
        relay.abort(reset_peers=False)
        raise
    # The success goes first, then the target's bytes: the relay holds them until linked.
    if not client.answer(Reply.SUCCEEDED):
        conn.close()
        relay.abort()
        return
    try:
        await asyncio.get_running_loop().connect_accepted_socket(lambda: relay.local, conn)
    except OSError:
        conn.close()  # the client is already gone
        relay.abort()
        return
    relay.link()


async def hand_off_request(tunnel: Tunnel, forward: Forward) -> Endpoint | None:
    """The handoff path's handshake: the target, once the client has heard success; None
    once the connection has ended."""
    client = SocksClient(forward.sock, tunnel)
    try:
        target = await tunnel.socks_request(client)
    except asyncio.CancelledError:  # the tunnel is closing, or needs room for a new handshake
        forward.abort(reset_peers=False)
        raise
    if target is None:
        forward.close()
        return None
    try:
        await tunnel.until_up()
    except TimeoutError:  # the transport stayed down for the hold
        tunnel.held_too_long()
        client.answer(Reply.NETWORK_UNREACHABLE)
        forward.abort()
        return None
    except asyncio.CancelledError:
        forward.abort(reset_peers=False)
        raise
    if not client.answer(Reply.SUCCEEDED):
        forward.abort()
        return None
    forward.count_from(client.read, client.written)
    return target
