"""SOCKS tunnels in process, through each transport: direct, and the real sshd with each engine.

The clients are the blocking ones of tests/support/socks.py, run in threads so that the tunnel's
loop serves them meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.support.servers import AsyncSshServer, BannerServer, EchoServer, free_port
from tests.support.socks import (
    SocksReplyError,
    read_reply,
    read_to_end,
    recv_exactly,
    socks_connect,
    socks_echo,
)
from tests.support.sshd_server import SshdServer
from tests.support.waiting import wait_until
from tether.allowlist import parse_rules
from tether.errors import TargetUnreachableError
from tether.socks import METHOD_ACCEPTED, Reply, encode_request
from tether.spec import SshOptions, TunnelSpec, Via
from tether.tunnel import Tunnel

TRANSPORTS = ("direct", "openssh", "asyncssh")
T = TypeVar("T")


def socks_spec(transport: str, sshd: SshdServer | None = None, **changes: Any) -> TunnelSpec:
    spec = TunnelSpec(socks=True, timeout=10, **changes)
    if transport == "direct":
        return spec
    assert sshd is not None
    options = SshOptions(
        identity_files=(str(sshd.client_key),),
        known_hosts=str(sshd.known_hosts),
        engine="openssh" if transport == "openssh" else "asyncssh",
    )
    return spec.with_changes(via=Via.parse(sshd.via), ssh=options)


async def off_loop(call: Callable[..., T], *args: Any) -> T:
    """A blocking client call, in a thread: the tunnel serves it from this loop."""
    return await asyncio.to_thread(call, *args)


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def spec_for(transport: str, shared_sshd: SshdServer) -> Callable[..., TunnelSpec]:
    return lambda **changes: socks_spec(transport, shared_sshd, **changes)


def port_of(tunnel: Tunnel) -> int:
    assert tunnel.address is not None
    return tunnel.address.port


async def test_by_address_and_by_name(
    spec_for: Callable[..., TunnelSpec], echo_server: EchoServer
) -> None:
    phases: list[str] = []
    async with Tunnel(spec_for(), on_phase=phases.append) as tunnel:
        # No allowlist: no one target to probe, so ready once listening and connected.
        assert "probing" not in phases and phases[-1] == "ready"
        port = port_of(tunnel)
        for host in ("127.0.0.1", "localhost"):
            payload = host.encode() * 1000
            assert await off_loop(socks_echo, port, host, echo_server.port, payload) == payload
        await wait_until(lambda: tunnel.stats().connections_active == 0, "the connections to end")
        stats = tunnel.stats()
        # The handshakes are not the target's bytes.
        sent = len(b"127.0.0.1localhost") * 1000
        assert (stats.connections_total, stats.bytes_out, stats.bytes_in) == (2, sent, sent)
        assert stats.target is None


async def test_names_are_resolved_on_the_far_side(
    asyncssh_server: AsyncSshServer, echo_server: EchoServer
) -> None:
    spec = TunnelSpec(
        socks=True,
        via=Via.parse(asyncssh_server.via),
        ssh=SshOptions(
            identity_files=(str(asyncssh_server.client_key),),
            known_hosts=str(asyncssh_server.known_hosts),
            engine="asyncssh",
        ),
    )
    async with Tunnel(spec) as tunnel:
        reply = await off_loop(socks_echo, port_of(tunnel), "localhost", echo_server.port, b"n")
        assert reply == b"n"
    assert asyncssh_server.requested == [("localhost", echo_server.port)]


async def test_denied_targets_get_02_and_one_line_and_the_tunnel_goes_on(
    spec_for: Callable[..., TunnelSpec],
    echo_server: EchoServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    allow = parse_rules([f"127.0.0.1:{echo_server.port}"])
    async with Tunnel(spec_for(allow=allow, probe=False)) as tunnel:
        port = port_of(tunnel)
        for host, target_port in (("localhost", echo_server.port), ("127.0.0.1", 1)):
            with caplog.at_level(logging.WARNING, "tether"):
                with pytest.raises(SocksReplyError) as caught:
                    await off_loop(socks_connect, port, host, target_port)
            assert caught.value.code == 0x02
        denied = [r.getMessage() for r in caplog.records if "denied" in r.getMessage()]
        assert len(denied) == 2 and "localhost:" in denied[0], denied
        assert "not in the allowlist" in (tunnel.last_error or "")
        assert await off_loop(socks_echo, port, "127.0.0.1", echo_server.port, b"ok") == b"ok"


async def test_a_refused_target_per_engine(
    transport: str, spec_for: Callable[..., TunnelSpec]
) -> None:
    async with Tunnel(spec_for()) as tunnel:
        port, closed = port_of(tunnel), free_port()
        if transport == "openssh":
            # Success first, as from `ssh -D`; then the connection ends with nothing in it.
            sock = await off_loop(socks_connect, port, "127.0.0.1", closed)
            with sock:
                assert await off_loop(read_to_end, sock) == b""
        else:
            with pytest.raises(SocksReplyError) as caught:
                await off_loop(socks_connect, port, "127.0.0.1", closed)
            assert caught.value.code == 0x05
        await wait_until(lambda: "refused" in (tunnel.last_error or ""), "the failure noted")


async def test_an_unresolvable_name_is_host_unreachable(
    transport: str, spec_for: Callable[..., TunnelSpec]
) -> None:
    async with Tunnel(spec_for()) as tunnel:
        port = port_of(tunnel)
        if transport == "openssh":  # it has replied success before it learns of the failure
            sock = await off_loop(socks_connect, port, "no-such-host.invalid", 80)
            with sock:
                assert await off_loop(read_to_end, sock) == b""
            return
        with pytest.raises(SocksReplyError) as caught:
            await off_loop(socks_connect, port, "no-such-host.invalid", 80)
        assert caught.value.code == 0x04


async def test_the_reply_comes_before_a_target_that_speaks_first(
    spec_for: Callable[..., TunnelSpec],
) -> None:
    with BannerServer() as target:
        async with Tunnel(spec_for()) as tunnel:
            for _ in range(20):
                sock = await off_loop(socks_connect, port_of(tunnel), "127.0.0.1", target.port)
                with sock:
                    banner = await off_loop(recv_exactly, sock, len(BannerServer.BANNER))
                    assert banner == BannerServer.BANNER


def raw_exchange(port: int, data: bytes, answer_size: int) -> tuple[bytes, bytes]:
    """Send ``data`` raw, then read ``answer_size`` bytes and whatever follows until the end."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(data)
        answer = b""
        try:
            while len(answer) < answer_size and (chunk := sock.recv(answer_size - len(answer))):
                answer += chunk
        except ConnectionResetError:
            return answer, b""
        return answer, read_to_end(sock)


NAME_255 = b".".join([b"a" * 63] * 4)
MALFORMED = [
    # (what the client sends, what it hears back before the end)
    (b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00", b""),  # SOCKS4
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b""),
    (b"\x05\x01\x02", b"\x05\xff"),  # only username/password offered
    (b"\x05\x01\x00\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50", b"\x05\x00\x05\x07"),  # BIND
    (b"\x05\x01\x00\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00", b"\x05\x00\x05\x07"),  # UDP
    (b"\x05\x01\x00\x05\x01\x00\x07", b"\x05\x00\x05\x08"),  # address type 7
    (b"\x05\x01\x00\x05\x01\x00\x03\xff" + NAME_255 + b"\x00\x50", b"\x05\x00\x05\x04"),
    (b"\x05\x01\x00\x05\x01\x00\x03\x03a\x00b\x00\x50", b"\x05\x00\x05\x04"),
    (b"\x05\x01\x00\x05\x01\x00\x01\x7f", b"\x05\x00"),  # truncated: the client gives up
    (b"\x05", b""),
]


async def test_malformed_handshakes_get_an_error_reply_or_a_close(
    spec_for: Callable[..., TunnelSpec],
    echo_server: EchoServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with Tunnel(spec_for()) as tunnel:
        tunnel.handshake_timeout = 1.0  # the truncated ones end here, if not by their client
        port = port_of(tunnel)
        for data, expected in MALFORMED:
            answer, rest = await off_loop(raw_exchange, port, data, len(expected) + 10)
            assert answer[: len(expected)] == expected, (data, answer)
            assert rest == b"", (data, rest)
        await wait_until(lambda: tunnel.stats().connections_active == 0, "every connection to end")
        assert await off_loop(socks_echo, port, "127.0.0.1", echo_server.port, b"ok") == b"ok"
        assert tunnel.state == "ready"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert "Traceback" not in caplog.text


async def test_a_client_that_never_finishes_is_closed_at_the_deadline(
    spec_for: Callable[..., TunnelSpec], caplog: pytest.LogCaptureFixture
) -> None:
    async with Tunnel(spec_for()) as tunnel:
        tunnel.handshake_timeout = 0.3
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(tunnel))
        writer.write(b"\x05\x01\x00\x05")  # the greeting, and one byte of the request
        with caplog.at_level(logging.WARNING, "tether"):
            assert await asyncio.wait_for(reader.read(), 10) == b"\x05\x00"
        writer.close()
        await wait_until(lambda: tunnel.stats().connections_active == 0, "the slot to be freed")
    assert "no SOCKS request within 0.3s" in caplog.text


async def test_the_probe_reaches_the_one_target_an_allowlist_names(
    spec_for: Callable[..., TunnelSpec], echo_server: EchoServer
) -> None:
    refused = spec_for(allow=parse_rules([f"127.0.0.1:{free_port()}"]))
    with pytest.raises(TargetUnreachableError, match=r"cannot connect to 127\.0\.0\.1:"):
        await Tunnel(refused).start()
    phases: list[str] = []
    answering = spec_for(allow=parse_rules([f"localhost:{echo_server.port}"]))
    async with Tunnel(answering, on_phase=phases.append) as tunnel:
        assert "probing" in phases
        await wait_until(lambda: echo_server.accepted == 1, "the probe to reach the target")
        assert tunnel.probe_target is not None and tunnel.probe_target.host == "localhost"


async def test_connections_wait_while_the_transport_reconnects(
    asyncssh_server: AsyncSshServer, echo_server: EchoServer
) -> None:
    spec = TunnelSpec(
        socks=True,
        via=Via.parse(asyncssh_server.via),
        backoff_initial=0.05,
        backoff_max=0.1,
        hold=30,  # held for as long as it takes: the hold's own bound is tested apart
        ssh=SshOptions(
            identity_files=(str(asyncssh_server.client_key),),
            known_hosts=str(asyncssh_server.known_hosts),
            engine="asyncssh",
        ),
    )
    async with Tunnel(spec) as tunnel:
        await asyncssh_server.stop()
        await wait_until(lambda: tunnel.state == "reconnecting", "the loss to be seen")
        waiting = asyncio.ensure_future(
            off_loop(socks_echo, port_of(tunnel), "127.0.0.1", echo_server.port, b"waited")
        )
        await wait_until(lambda: tunnel.stats().reconnect_attempt >= 2, "failed attempts")
        assert not waiting.done()
        await asyncssh_server.start()
        assert await asyncio.wait_for(waiting, 20) == b"waited"
        assert tunnel.stats().reconnects == 1


def held_request(proxy_port: int, target_port: int) -> tuple[int, bool, float]:
    """A request while the transport is down: the reply's code, whether a reset followed it,
    and how long the reply took."""
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=20) as sock:
        sock.sendall(b"\x05\x01\x00")
        assert recv_exactly(sock, 2) == METHOD_ACCEPTED
        sock.sendall(encode_request("127.0.0.1", target_port))
        code = read_reply(sock)
        waited = time.monotonic() - began
        try:
            sock.recv(1)
        except ConnectionResetError:
            return code, True, waited
    return code, False, waited


@pytest.mark.parametrize("engine", ["openssh", "asyncssh"])
async def test_a_request_held_past_the_hold_hears_network_unreachable_then_a_reset(
    engine: str, tmp_path: Path, echo_server: EchoServer
) -> None:
    with SshdServer(tmp_path / "sshd") as sshd:
        async with Tunnel(socks_spec(engine, sshd, hold=0.5)) as tunnel:
            await asyncio.to_thread(sshd.stop)
            await wait_until(lambda: tunnel.state == "reconnecting", "the loss to be seen")
            code, reset, waited = await off_loop(held_request, port_of(tunnel), echo_server.port)
            assert (code, reset) == (Reply.NETWORK_UNREACHABLE, True)
            assert 0.5 <= waited < 0.5 + 5
            await asyncio.to_thread(sshd.start)
            await wait_until(lambda: tunnel.state == "ready", "the tunnel to be back", 30)
            reply = await off_loop(socks_echo, port_of(tunnel), "127.0.0.1", echo_server.port, b"b")
            assert reply == b"b"


async def test_closing_ends_clients_mid_handshake(spec_for: Callable[..., TunnelSpec]) -> None:
    tunnel = Tunnel(spec_for())
    await tunnel.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(tunnel))
    writer.write(b"\x05\x01\x00")
    assert await asyncio.wait_for(reader.readexactly(2), 10) == b"\x05\x00"
    await tunnel.close(drain=0.2)
    assert await asyncio.wait_for(reader.read(), 10) == b""
    assert tunnel.stats().connections_active == 0
    writer.close()


async def test_read_reply_reads_any_address_type() -> None:
    """The test client itself: a reply with a name as its bound address is read whole."""
    here, there = socket.socketpair()
    with here, there:
        there.sendall(b"\x05\x00\x00\x03\x04name\x00\x01" + b"after")
        assert read_reply(here) == 0
        assert here.recv(5) == b"after"
