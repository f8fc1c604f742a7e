"""The local listener: both loopbacks by default, a connection limit that queues, and running
out of file descriptors without a traceback."""

from __future__ import annotations

import asyncio
import errno
import socket

import pytest

from tests.support.servers import EchoServer
from tether.spec import Endpoint, TunnelSpec
from tether.tunnel import Tunnel


def can_bind(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            assert exc.errno == errno.EADDRINUSE
            return False
    return True


async def echo_through(host: str, port: int, payload: bytes = b"ping") -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(payload)
    writer.write_eof()
    reply = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return reply


async def test_default_binds_both_loopbacks(echo_server: EchoServer) -> None:
    async with Tunnel(TunnelSpec(target=Endpoint("127.0.0.1", echo_server.port))) as tunnel:
        assert tunnel.address is not None
        port = tunnel.address.port
        assert tunnel.address.host == "127.0.0.1"
        assert tunnel.addresses == ["127.0.0.1", "::1"]
        # Nobody else can take [::1]:PORT and receive the clients of localhost:PORT.
        assert not can_bind("::1", port)
        assert await echo_through("::1", port) == b"ping"
        assert await echo_through("127.0.0.1", port) == b"ping"


def free_on_both(host: str, other: str) -> tuple[int, socket.socket]:
    """A port free on both loopbacks, with a listener of our own already holding it on `other`.

    Binding `other` first and keeping it means the check cannot race with whatever else on the
    machine takes ports: the tunnel starting at all proves it left `other` alone."""
    for _ in range(50):
        held = socket.socket(socket.AF_INET6 if ":" in other else socket.AF_INET)
        held.bind((other, 0))
        port = held.getsockname()[1]
        if can_bind(host, port):
            held.listen()
            held.setblocking(False)
            return port, held
        held.close()
    raise AssertionError(f"no port free on both {host} and {other} in 50 tries")


@pytest.mark.parametrize(("host", "other"), [("127.0.0.1", "::1"), ("::1", "127.0.0.1")])
async def test_a_named_host_binds_exactly_that(
    echo_server: EchoServer, host: str, other: str
) -> None:
    port, held = free_on_both(host, other)
    with held:
        spec = TunnelSpec(
            target=Endpoint("127.0.0.1", echo_server.port), listen=Endpoint(host, port)
        )
        async with Tunnel(spec) as tunnel:
            assert tunnel.address is not None and tunnel.addresses == [host]
            assert await echo_through(host, port) == b"ping"
            # The other loopback's port is still ours: a client there reaches our listener.
            _, writer = await asyncio.open_connection(other, port)
            accepted, _ = await asyncio.get_running_loop().sock_accept(held)
            accepted.close()
            writer.close()


async def test_connections_beyond_the_limit_wait_their_turn(echo_server: EchoServer) -> None:
    spec = TunnelSpec(target=Endpoint("127.0.0.1", echo_server.port), max_connections=2)
    async with Tunnel(spec) as tunnel:
        assert tunnel.address is not None
        address = (tunnel.address.host, tunnel.address.port)
        held = [await asyncio.open_connection(*address) for _ in range(2)]
        for reader, writer in held:
            writer.write(b"x")
            assert await asyncio.wait_for(reader.readexactly(1), 10) == b"x"
        reader, writer = await asyncio.open_connection(*address)  # queued in the backlog
        writer.write(b"third")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.readexactly(5), 0.5)
        assert tunnel.stats().connections_active == 2
        held[0][1].close()  # one ends, so the queued one is served
        assert await asyncio.wait_for(reader.readexactly(5), 10) == b"third"
        for _, other in [held[1], (reader, writer)]:
            other.close()


async def test_sockets_passed_in_are_served_instead_of_binding(echo_server: EchoServer) -> None:
    """Socket activation as the engine sees it: the listen address of the spec is not bound,
    the given sockets are served, and the tunnel closes them."""
    given = [
        socket.create_server(("127.0.0.1", 0)),
        socket.create_server(("::1", 0), family=socket.AF_INET6),
    ]
    for sock in given:
        sock.setblocking(False)
    port = given[0].getsockname()[1]
    spec = TunnelSpec(
        target=Endpoint("127.0.0.1", echo_server.port), listen=Endpoint("localhost", 1)
    )
    phases: list[str] = []
    async with Tunnel(spec, on_phase=phases.append, sockets=given) as tunnel:
        assert tunnel.address == Endpoint("127.0.0.1", port)
        assert tunnel.addresses == ["127.0.0.1", "::1"]
        assert await echo_through("127.0.0.1", port) == b"ping"
        assert await echo_through("::1", given[1].getsockname()[1]) == b"ping"
    assert phases == ["binding", "connecting", "probing", "ready"]
    assert [sock.fileno() for sock in given] == [-1, -1]
