"""The local listener: both loopbacks by default, a connection limit that queues, and running
out of file descriptors without a traceback."""

from __future__ import annotations

import asyncio
import errno
import json
import socket
import subprocess
import sys

import pytest

from servers import EchoServer
from tether.spec import Endpoint, TunnelSpec
from tether.tunnel import Tunnel
from tether_process import TetherRunner
from waiting import wait_until_sync


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


@pytest.mark.parametrize(("host", "other"), [("127.0.0.1", "::1"), ("::1", "127.0.0.1")])
async def test_a_named_host_binds_exactly_that(
    echo_server: EchoServer, host: str, other: str
) -> None:
    spec = TunnelSpec(target=Endpoint("127.0.0.1", echo_server.port), listen=Endpoint(host, 0))
    async with Tunnel(spec) as tunnel:
        assert tunnel.address is not None and tunnel.addresses == [host]
        assert can_bind(other, tunnel.address.port)


def test_the_loopback_pair_is_one_reservation(
    tether: TetherRunner, echo_server: EchoServer
) -> None:
    first = tether.spawn("start", "--to", echo_server.address, "--json")
    info = first.json_line()
    code, _, err = tether.run(
        "start", "--to", echo_server.address, "--host", "::1", "-p", str(info["local_port"])
    )
    assert code == 3
    assert f"in use by tether tunnel {info['id']}" in err
    (entry,) = tether.list_json()
    assert entry["local_addresses"] == ["127.0.0.1", "::1"]
    first.send_signal(2)
    assert first.finish() == 0


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
        assert tunnel.stats().active == 2
        held[0][1].close()  # one ends, so the queued one is served
        assert await asyncio.wait_for(reader.readexactly(5), 10) == b"third"
        for _, other in [held[1], (reader, writer)]:
            other.close()


def test_running_out_of_descriptors(tether: TetherRunner, echo_server: EchoServer) -> None:
    # The hard limit too, so tether cannot raise it: it must cope with what it has.
    process = subprocess.Popen(
        [
            "sh",
            "-c",
            'ulimit -n 64 && exec "$@"',
            "sh",
            sys.executable,
            "-m",
            "tether",
            "start",
            "--to",
            echo_server.address,
            "--host",
            "127.0.0.1",
            "--json",
        ],
        env=tether.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        port = int(json.loads(process.stdout.readline())["local_port"])
        clients = []
        for _ in range(100):  # far more than 64 descriptors allow
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            clients.append(sock)
        # Those that got through keep working, while the rest wait or are reset.
        served = 0
        for sock in clients:
            try:
                sock.sendall(b"x")
                sock.settimeout(0.2)
                served += sock.recv(1) == b"x"
            except OSError:
                continue
            if served == 3:
                break
        assert served == 3
        for sock in clients:
            sock.close()
        # It recovers by itself once descriptors are free again.

        def answers() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                    sock.sendall(b"back")
                    sock.shutdown(socket.SHUT_WR)
                    return sock.recv(4) == b"back"
            except OSError:
                return False

        wait_until_sync(answers, "the tunnel to serve again")
        assert process.poll() is None
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    text = err.decode()
    assert process.returncode == 0, text
    assert "Traceback" not in text
    warnings = [line for line in text.splitlines() if line.startswith("tether: warning:")]
    assert any("Too many open files" in line for line in warnings), text
    assert len(warnings) <= 12, text  # a few per kind and interval, not one per attempt
