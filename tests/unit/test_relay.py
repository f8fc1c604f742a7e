"""The relay through a live tunnel: byte counts, half-close both ways, bounded buffering."""

from __future__ import annotations

import asyncio
import hashlib
import os
import select
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.support.servers import AsyncSshServer
from tests.support.sshd_server import SshdServer
from tests.support.waiting import wait_until, wait_until_sync
from tether.relay import MAX_READ, WRITE_HIGH_WATER, End, Relay
from tether.stats import Counters
from tether.spec import Endpoint, SshOptions, TunnelSpec, Via
from tether.tunnel import Tunnel

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve(handler: Handler) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def spec_for(port: int, transport: str, ssh_server: AsyncSshServer | SshdServer) -> TunnelSpec:
    if transport == "direct":
        return TunnelSpec(target=Endpoint("127.0.0.1", port), probe=False)
    return TunnelSpec(
        target=Endpoint("127.0.0.1", port),
        probe=False,
        via=Via.parse(ssh_server.via),
        ssh=SshOptions(
            identity_files=(str(ssh_server.client_key),),
            known_hosts=str(ssh_server.known_hosts),
            engine="asyncssh",  # the relay is the in-process engine's data path
        ),
    )


@pytest.fixture(params=["direct", "ssh"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def open_tunnel(
    transport: str, asyncssh_server: AsyncSshServer
) -> AsyncIterator[Callable[[int], Awaitable[Tunnel]]]:
    tunnels: list[Tunnel] = []

    async def make(port: int) -> Tunnel:
        tunnel = Tunnel(spec_for(port, transport, asyncssh_server))
        await tunnel.start()
        tunnels.append(tunnel)
        return tunnel

    yield make
    for tunnel in tunnels:
        await tunnel.close()


async def connect(tunnel: Tunnel) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    address = tunnel.address
    assert address is not None
    return await asyncio.open_connection(address.host, address.port)


async def test_client_eof_still_gets_the_reply(
    open_tunnel: Callable[[int], Awaitable[Tunnel]],
) -> None:
    """The client half-closes; the target answers only after seeing EOF."""

    async def answer_after_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.read()
        writer.write(b"got " + str(len(request)).encode())
        await writer.drain()
        writer.close()

    server, port = await serve(answer_after_eof)
    tunnel = await open_tunnel(port)
    reader, writer = await connect(tunnel)
    writer.write(b"x" * 100_000)
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), 10) == b"got 100000"
    writer.close()
    await wait_until(lambda: tunnel.stats().connections_active == 0, "the relay to finish")
    server.close()


async def test_target_eof_leaves_upstream_open(
    open_tunnel: Callable[[int], Awaitable[Tunnel]],
) -> None:
    """The target half-closes first; the client can still send, and the target receives it."""
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def greet_then_listen(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello")
        writer.write_eof()
        received.set_result(await reader.read())
        writer.close()

    server, port = await serve(greet_then_listen)
    tunnel = await open_tunnel(port)
    reader, writer = await connect(tunnel)
    assert await asyncio.wait_for(reader.read(), 10) == b"hello"  # EOF seen by the client
    writer.write(b"still talking")
    writer.write_eof()
    assert await asyncio.wait_for(received, 10) == b"still talking"
    writer.close()
    server.close()


async def test_counters(open_tunnel: Callable[[int], Awaitable[Tunnel]]) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read())
        writer.close()

    server, port = await serve(echo)
    tunnel = await open_tunnel(port)
    payload = os.urandom(300_000)
    for _ in range(3):
        reader, writer = await connect(tunnel)
        writer.write(payload)
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 10) == payload
        writer.close()
    await wait_until(lambda: tunnel.stats().connections_active == 0, "all relays to finish")
    stats = tunnel.stats()
    assert (stats.connections_total, stats.bytes_out, stats.bytes_in) == (3, 900_000, 900_000)
    server.close()


async def test_slow_reader_bounds_buffering(
    open_tunnel: Callable[[int], Awaitable[Tunnel]],
) -> None:
    """A target that does not read stalls the client; the tunnel's buffer stays bounded."""
    may_read = asyncio.Event()
    digest: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def slow_sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await may_read.wait()
        sha = hashlib.sha256()
        while chunk := await reader.read(1 << 20):
            sha.update(chunk)
        digest.set_result(sha.hexdigest())
        writer.close()

    server, port = await serve(slow_sink)
    tunnel = await open_tunnel(port)
    _reader, writer = await connect(tunnel)
    total = 64 * 1024 * 1024
    block = os.urandom(1 << 20)
    sent = hashlib.sha256()
    written = 0
    stalled = False
    while written < total:
        writer.write(block)
        sent.update(block)
        written += len(block)
        try:
            await asyncio.wait_for(writer.drain(), 1.0)
        except TimeoutError:
            stalled = True
            break
    assert stalled, "the client was never held back"
    # What the tunnel took from the client is what sits in kernel buffers plus its own bounded one.
    relay = next(iter(tunnel._connections))
    assert isinstance(relay, Relay)
    # An asyncio transport or an asyncssh channel: both report their write buffer.
    conduit: Any = relay.remote.conduit
    assert conduit is not None
    assert conduit.get_write_buffer_size() <= WRITE_HIGH_WATER + 2 * 1024 * 1024
    assert tunnel.stats().bytes_out < 32 * 1024 * 1024
    may_read.set()
    while written < total:
        writer.write(block)
        sent.update(block)
        written += len(block)
        await asyncio.wait_for(writer.drain(), 10)
    writer.write_eof()
    assert await asyncio.wait_for(digest, 30) == sent.hexdigest()
    writer.close()
    server.close()


def tcp_state(sock: Any) -> int:
    """The kernel's TCP state of a socket (the first byte of TCP_INFO)."""
    return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0])


TCP_CLOSE = 7


async def test_a_client_reset_racing_the_target_eof_ends_only_its_own_stream(
    transport: str, shared_sshd: SshdServer
) -> None:
    """The target's EOF and the client's reset reach the tunnel in the same poll, the EOF
    first: passing the EOF on to the dead client fails. That failure must end this one stream,
    never the SSH connection that carries every other client's."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    target = socket.create_server(("127.0.0.1", 0))
    target.setblocking(False)
    # The SSH server runs outside this event loop, so it forwards the EOF while the loop is
    # held below; the in-process asyncssh server could not.
    tunnel = Tunnel(spec_for(target.getsockname()[1], transport, shared_sshd))
    await tunnel.start()
    try:
        address = tunnel.address
        assert address is not None
        client = socket.create_connection((address.host, address.port))
        upstream, _ = await asyncio.wait_for(loop.sock_accept(target), 10)
        client.sendall(b"x")
        assert await asyncio.wait_for(loop.sock_recv(upstream, 1), 10) == b"x"
        [relay] = tunnel._connections
        assert isinstance(relay, Relay)
        assert relay.local.conduit is not None and relay.remote.conduit is not None
        local_sock: Any = relay.local.conduit.get_extra_info("socket")  # type: ignore[attr-defined]
        # The remote end's socket: the target connection, or the SSH connection itself.
        remote_sock: Any = relay.remote.conduit.get_extra_info("socket")  # type: ignore[attr-defined]

        # The event loop does not run from here to the next await.
        upstream.shutdown(socket.SHUT_WR)
        readable, _, _ = select.select([remote_sock], [], [], 10)
        assert readable, "the target's EOF never reached the tunnel"
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        wait_until_sync(lambda: tcp_state(local_sock) == TCP_CLOSE, "the reset to arrive")

        await wait_until(lambda: tunnel.stats().connections_active == 0, "the stream to end")
        upstream.close()
        stats = tunnel.stats()
        assert (stats.state, stats.reconnects, stats.last_error) == ("ready", 0, None)
        assert errors == []
        # The tunnel, and its SSH connection, still carry new streams.
        reader, writer = await asyncio.open_connection(address.host, address.port)
        second, _ = await asyncio.wait_for(loop.sock_accept(target), 10)
        writer.write(b"ping")
        assert await asyncio.wait_for(loop.sock_recv(second, 4), 10) == b"ping"
        await loop.sock_sendall(second, b"pong")
        assert await asyncio.wait_for(reader.readexactly(4), 10) == b"pong"
        writer.close()
        second.close()
    finally:
        await tunnel.close()
        target.close()


async def test_reads_stay_below_the_mmap_threshold(
    monkeypatch: pytest.MonkeyPatch, asyncssh_server: AsyncSshServer
) -> None:
    """Each read allocates its full size before it shrinks to the bytes read: at 128 KiB or
    more, glibc may map and unmap memory for every message (see relay.MAX_READ)."""
    sizes: list[int] = []
    passed_on = End.data_received

    def recording(self: End, data: bytes, datatype: object = None) -> None:
        sizes.append(len(data))
        passed_on(self, data, datatype)

    monkeypatch.setattr(End, "data_received", recording)
    payload = os.urandom(4 * 1024 * 1024)

    async def blast(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(payload)
        await writer.drain()
        writer.close()

    server, port = await serve(blast)
    tunnel = Tunnel(spec_for(port, "direct", asyncssh_server))
    await tunnel.start()
    try:
        reader, writer = await connect(tunnel)
        assert await asyncio.wait_for(reader.read(), 10) == payload
        writer.close()
    finally:
        await tunnel.close()
        server.close()
    assert sum(sizes) == len(payload)
    assert max(sizes) <= MAX_READ < 128 * 1024, max(sizes)


class Recorder:
    """A conduit that records what the relay does to it."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.eof = False
        self.reading = True

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def write_eof(self) -> None:
        self.eof = True

    def can_write_eof(self) -> bool:
        return True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None: ...

    def abort(self) -> None: ...

    def is_closing(self) -> bool:
        return False


@pytest.mark.parametrize("hold", [False, True], ids=["relay", "socks"])
def test_what_comes_before_link_waits_for_it(hold: bool) -> None:
    """A read can come though reading was paused in connection_made (Debian's Python 3.11.2
    delivers the first one): its bytes and its EOF wait for link(), in order, and the target's
    wait too while held for a SOCKS reply."""
    relay = Relay(Counters(), lambda relay: None, hold=hold)
    client, target = Recorder(), Recorder()
    relay.local.connection_made(client)
    relay.local.data_received(b"early ")
    relay.local.data_received(b"bytes")
    relay.local.eof_received()
    assert not client.reading
    relay.remote.connection_made(target)
    if hold:
        relay.remote.data_received(b"banner")
        assert client.written == []  # the SOCKS reply must come first
    relay.link()
    assert target.written == [b"early ", b"bytes"] and target.eof
    assert client.written == ([b"banner"] if hold else [])
    assert relay.counters.bytes_out == len(b"early bytes")
