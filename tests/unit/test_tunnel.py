"""The engine against an in-process asyncssh server and plain TCP: readiness and each failure."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from dataclasses import replace
from typing import Any
from pathlib import Path

import asyncssh
import pytest

from tests.support.servers import (
    AsyncSshServer,
    EchoServer,
    ResettingServer,
    SilentServer,
    free_port,
)
from tests.support.sshd_server import SshdServer
from tether.errors import (
    AuthenticationError,
    HostKeyError,
    PortInUseError,
    ReadinessTimeoutError,
    TargetUnreachableError,
    TransportUnreachableError,
    TunnelLostError,
)
from tether.spec import Endpoint, Engine, SshOptions, TunnelSpec, Via
from tether.transports.base import LossCallback, PhaseCallback
from tether.transports.direct import DirectTransport
from tether.tunnel import Tunnel
from tests.support.waiting import wait_until


def ssh_spec(server: AsyncSshServer, target: Endpoint, **ssh: Any) -> TunnelSpec:
    options = SshOptions(
        identity_files=(str(server.client_key),),
        known_hosts=str(server.known_hosts),
        engine="asyncssh",  # the engine under test here; OpenSSH's has tests of its own
    )
    return TunnelSpec(
        target=target, via=Via.parse(server.via), timeout=10, ssh=replace(options, **ssh)
    )


async def roundtrip(tunnel: Tunnel, payload: bytes = b"ping") -> bytes:
    assert tunnel.address is not None
    reader, writer = await asyncio.open_connection(tunnel.address.host, tunnel.address.port)
    writer.write(payload)
    writer.write_eof()
    reply = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return reply


async def test_a_hurry_ends_the_drain_at_once(echo_server: EchoServer) -> None:
    tunnel = Tunnel(TunnelSpec(target=Endpoint("127.0.0.1", echo_server.port)))
    await tunnel.start()
    assert tunnel.address is not None
    reader, writer = await asyncio.open_connection(tunnel.address.host, tunnel.address.port)
    writer.write(b"x")
    assert await asyncio.wait_for(reader.read(1), 10) == b"x"
    hurry = asyncio.Event()
    closing = asyncio.ensure_future(tunnel.close(drain=60, hurry=hurry))
    await wait_until(lambda: tunnel.state == "closing", "the drain to begin")
    hurry.set()
    await asyncio.wait_for(closing, 5)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, not left open
    writer.close()
    assert tunnel.state == "closed"


async def test_ssh_tunnel_ready_and_relays(
    asyncssh_server: AsyncSshServer, echo_server: EchoServer
) -> None:
    phases: list[str] = []
    tunnel = Tunnel(
        ssh_spec(asyncssh_server, Endpoint("127.0.0.1", echo_server.port)), on_phase=phases.append
    )
    async with tunnel:
        assert phases == ["binding", "connecting", "authenticating", "probing", "ready"]
        # The probe's connection reached the target (its accept thread may count it just after).
        await wait_until(lambda: echo_server.accepted == 1, "the probe to reach the target")
        assert tunnel.address is not None and tunnel.address.port != 0
        assert await roundtrip(tunnel) == b"ping"
        assert tunnel.stats().via == asyncssh_server.via
    assert tunnel.stats().state == "closed"
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", tunnel.spec.listen.port or 1)


async def test_direct_tunnel(echo_server: EchoServer) -> None:
    async with Tunnel(TunnelSpec(target=Endpoint("127.0.0.1", echo_server.port))) as tunnel:
        assert await roundtrip(tunnel, b"direct") == b"direct"
        assert tunnel.stats().via == "direct"


async def test_fixed_port_is_used(echo_server: EchoServer) -> None:
    port = free_port()
    spec = TunnelSpec(
        target=Endpoint("127.0.0.1", echo_server.port), listen=Endpoint("localhost", port)
    )
    async with Tunnel(spec) as tunnel:
        assert tunnel.address == Endpoint("127.0.0.1", port)


async def test_port_in_use(echo_server: EchoServer) -> None:
    with socket.create_server(("127.0.0.1", 0)) as holder:
        port = holder.getsockname()[1]
        spec = TunnelSpec(
            target=Endpoint("127.0.0.1", echo_server.port), listen=Endpoint("127.0.0.1", port)
        )
        with pytest.raises(PortInUseError, match="in use by another program"):
            await Tunnel(spec).start()


@pytest.mark.parametrize("via_ssh", [False, True])
async def test_target_refusing(asyncssh_server: AsyncSshServer, via_ssh: bool) -> None:
    target = Endpoint("127.0.0.1", free_port())
    spec = ssh_spec(asyncssh_server, target) if via_ssh else TunnelSpec(target=target)
    tunnel = Tunnel(spec)
    with pytest.raises(TargetUnreachableError, match=f"cannot connect to {target}"):
        await tunnel.start()
    assert tunnel.state == "closed" and tunnel.address is None


async def test_no_probe_skips_the_target(asyncssh_server: AsyncSshServer) -> None:
    spec = ssh_spec(asyncssh_server, Endpoint("127.0.0.1", free_port())).with_changes(probe=False)
    async with Tunnel(spec) as tunnel:
        assert tunnel.state == "ready"
        # The failed stream resets the client's connection (a failure must not look like an
        # empty answer) and is remembered.
        with pytest.raises(ConnectionResetError):
            await roundtrip(tunnel)
        assert "cannot connect" in (tunnel.stats().last_error or "")


async def test_ssh_server_down(asyncssh_server: AsyncSshServer, echo_server: EchoServer) -> None:
    spec = ssh_spec(asyncssh_server, Endpoint("127.0.0.1", echo_server.port))
    await asyncssh_server.stop()
    with pytest.raises(TransportUnreachableError, match="cannot reach SSH server"):
        await Tunnel(spec).start()


async def test_wrong_client_key(
    asyncssh_server: AsyncSshServer, echo_server: EchoServer, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(wrong))
    spec = ssh_spec(
        asyncssh_server, Endpoint("127.0.0.1", echo_server.port), identity_files=(str(wrong),)
    )
    with pytest.raises(AuthenticationError, match=r"authentication .* failed"):
        await Tunnel(spec).start()


async def test_unknown_host_key(
    asyncssh_server: AsyncSshServer, echo_server: EchoServer, tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    spec = ssh_spec(
        asyncssh_server, Endpoint("127.0.0.1", echo_server.port), known_hosts=str(empty)
    )
    fingerprint = asyncssh_server.host_key.get_fingerprint()
    with pytest.raises(HostKeyError, match="is not in") as info:
        await Tunnel(spec).start()
    assert fingerprint in str(info.value) and "ssh-keyscan" in str(info.value)


async def test_changed_host_key(
    asyncssh_server: AsyncSshServer, echo_server: EchoServer, tmp_path: Path
) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{asyncssh_server.port} {other}\n")
    spec = ssh_spec(
        asyncssh_server, Endpoint("127.0.0.1", echo_server.port), known_hosts=str(known)
    )
    with pytest.raises(HostKeyError, match="does not match") as info:
        await Tunnel(spec).start()
    assert asyncssh_server.host_key.get_fingerprint() in str(info.value)


async def test_default_known_hosts_missing_still_verifies(
    asyncssh_server: AsyncSshServer,
    echo_server: EchoServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No known_hosts anywhere must mean 'unknown host', never 'skip verification'."""
    monkeypatch.setenv("HOME", str(tmp_path))
    spec = ssh_spec(asyncssh_server, Endpoint("127.0.0.1", echo_server.port), known_hosts=None)
    with pytest.raises(HostKeyError):
        await Tunnel(spec).start()


@pytest.mark.parametrize("engine", ["openssh", "asyncssh"])
async def test_silent_server_times_out(
    silent_server: SilentServer, tmp_path: Path, engine: Engine
) -> None:
    spec = TunnelSpec(
        target=Endpoint("127.0.0.1", 1),
        timeout=0.5,
        via=Via("ssh", "127.0.0.1", silent_server.port),
        ssh=SshOptions(known_hosts=None, engine=engine),
    )
    tunnel = Tunnel(spec)
    # It accepts the connection and never speaks: the phase never gets past "connecting".
    with pytest.raises(ReadinessTimeoutError, match=r"not ready after 0.5s \(still connecting\)"):
        await tunnel.start()
    assert tunnel.state == "closed"


async def test_close_drops_open_connections(echo_server: EchoServer) -> None:
    tunnel = Tunnel(TunnelSpec(target=Endpoint("127.0.0.1", echo_server.port)))
    await tunnel.start()
    assert tunnel.address is not None
    reader, writer = await asyncio.open_connection(tunnel.address.host, tunnel.address.port)
    writer.write(b"x")
    assert await asyncio.wait_for(reader.readexactly(1), 10) == b"x"
    await tunnel.close()
    await tunnel.close()  # idempotent
    assert await asyncio.wait_for(reader.read(), 10) == b""
    assert tunnel.stats().connections_active == 0
    writer.close()


async def test_reconnects_after_server_restart_with_port_kept(
    asyncssh_server: AsyncSshServer, echo_server: EchoServer
) -> None:
    spec = ssh_spec(asyncssh_server, Endpoint("127.0.0.1", echo_server.port)).with_changes(
        backoff_initial=0.05, backoff_max=0.1, hold=30
    )
    async with Tunnel(spec) as tunnel:
        await asyncssh_server.stop()
        await wait_until(lambda: tunnel.state == "reconnecting", "the loss to be seen")
        assert tunnel.address is not None
        # The port stays bound: a client connects now and, held (here for as long as it
        # takes), is served once the server is back.
        reader, writer = await asyncio.open_connection(tunnel.address.host, tunnel.address.port)
        await wait_until(lambda: tunnel.stats().reconnect_attempt >= 2, "failed attempts")
        await asyncssh_server.start()
        writer.write(b"waited")
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 10) == b"waited"
        writer.close()
        stats = tunnel.stats()
        assert (stats.state, stats.reconnects, stats.reconnect_attempt) == ("ready", 1, 0)


async def test_a_connection_held_past_the_hold_is_reset(
    asyncssh_server: AsyncSshServer, echo_server: EchoServer, caplog: pytest.LogCaptureFixture
) -> None:
    spec = ssh_spec(asyncssh_server, Endpoint("127.0.0.1", echo_server.port)).with_changes(hold=0.5)
    loop = asyncio.get_running_loop()
    async with Tunnel(spec) as tunnel:
        await asyncssh_server.stop()
        await wait_until(lambda: tunnel.state == "reconnecting", "the loss to be seen")
        began = loop.time()
        data, end = await read_until_closed(tunnel, b"anyone?")
        waited = loop.time() - began
        # A reset, as from a refused port (never an EOF), once the hold is over and not before.
        assert data == b"" and isinstance(end, ConnectionResetError)
        assert 0.5 <= waited < 0.5 + 5
        assert tunnel.state == "reconnecting"  # the port stays bound meanwhile
    assert "still down after 0.5s (hold): connection reset" in caplog.text


async def test_a_reconnect_attempt_is_bounded_by_connect_timeout(
    asyncssh_server: AsyncSshServer, echo_server: EchoServer
) -> None:
    """Against a server that accepts and never speaks (a frozen sshd), each attempt ends at
    connect_timeout, not at the start's timeout."""
    spec = ssh_spec(
        asyncssh_server, Endpoint("127.0.0.1", echo_server.port), connect_timeout=0.5
    ).with_changes(timeout=20, backoff_initial=0.01, backoff_max=0.02)
    async with Tunnel(spec) as tunnel:
        await asyncssh_server.stop()
        with SilentServer(port=asyncssh_server.port):
            # Three attempts within 8 s: none of them waited for the 20 s of the timeout.
            await wait_until(lambda: tunnel.reconnect_attempt >= 4, "silent attempts", 8)
            assert tunnel.last_error == "reconnect timed out after 0.5s"


async def test_gives_up_after_max_retries(
    asyncssh_server: AsyncSshServer, echo_server: EchoServer
) -> None:
    spec = ssh_spec(asyncssh_server, Endpoint("127.0.0.1", echo_server.port)).with_changes(
        max_retries=2, backoff_initial=0.01, backoff_max=0.02
    )
    heard: list[tuple[str, int]] = []
    tunnel = Tunnel(spec, on_phase=lambda phase: heard.append((phase, tunnel.reconnect_attempt)))
    async with tunnel:
        await asyncssh_server.stop()
        with pytest.raises(TunnelLostError, match=r"after 2 reconnect attempt\(s\)"):
            await asyncio.wait_for(tunnel.wait_ended(), 10)
        assert tunnel.state == "lost"
    # Each attempt is news to whoever reports it, though the state stays "reconnecting".
    assert heard[heard.index(("ready", 0)) :] == [
        ("ready", 0),
        ("reconnecting", 0),
        ("reconnecting", 1),
        ("reconnecting", 2),
        ("lost", 2),
    ]


async def read_until_closed(
    tunnel: Tunnel, send: bytes = b""
) -> tuple[bytes, BaseException | None]:
    """What a client gets (after sending ``send``) before the end, and how the end came: None
    for a clean EOF."""
    assert tunnel.address is not None
    try:
        reader, writer = await asyncio.open_connection(tunnel.address.host, tunnel.address.port)
    except ConnectionResetError as exc:  # reset before the connect was seen to complete
        return b"", exc
    writer.write(send)
    data = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), 10):
            data += chunk
    except ConnectionResetError as exc:
        return data, exc
    finally:
        writer.close()
    return data, None


async def test_a_refused_target_reaches_the_client_as_a_reset() -> None:
    spec = TunnelSpec(target=Endpoint("127.0.0.1", free_port()), probe=False)
    async with Tunnel(spec) as tunnel:
        data, end = await read_until_closed(tunnel)
        assert data == b"" and isinstance(end, ConnectionResetError)
        assert tunnel.last_error is not None and "Connection refused" in tunnel.last_error


async def test_a_target_reset_mid_stream_reaches_the_client_as_a_reset() -> None:
    with ResettingServer() as target:
        # No probe: the server resets every connection, and one reset before a loaded loop saw
        # the probe's connect complete fails the start (ECONNRESET) instead of the stream.
        spec = TunnelSpec(target=Endpoint("127.0.0.1", target.port), probe=False)
        async with Tunnel(spec) as tunnel:
            data, end = await read_until_closed(tunnel)
    # The bytes before the reset arrive (or are lost with it), never followed by a clean EOF.
    assert ResettingServer.PARTIAL.startswith(data), data
    assert isinstance(end, ConnectionResetError), (data, end, tunnel.last_error)


async def test_a_refused_target_through_ssh_is_a_reset(asyncssh_server: AsyncSshServer) -> None:
    spec = ssh_spec(asyncssh_server, Endpoint("127.0.0.1", free_port())).with_changes(probe=False)
    async with Tunnel(spec) as tunnel:
        data, end = await read_until_closed(tunnel)
        assert data == b"" and isinstance(end, ConnectionResetError)


async def test_a_connection_cut_by_the_masters_death_is_a_reset(
    shared_sshd: SshdServer,
) -> None:
    """The OpenSSH engine: a killed master closes the forwards' control connections a moment
    before it is reported dead; either way the client gets a reset, never a clean EOF that
    would pass a cut-off answer for a whole one."""
    hold = asyncio.Event()

    async def partial(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"partial")
        await hold.wait()
        writer.close()

    server = await asyncio.start_server(partial, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    spec = TunnelSpec(
        target=Endpoint("127.0.0.1", port),
        via=Via.parse(shared_sshd.via),
        timeout=10,
        probe=False,
        ssh=SshOptions(
            identity_files=(str(shared_sshd.client_key),),
            known_hosts=str(shared_sshd.known_hosts),
            engine="openssh",
        ),
    )
    async with Tunnel(spec) as tunnel:
        assert tunnel.address is not None
        reader, writer = await asyncio.open_connection(tunnel.address.host, tunnel.address.port)
        assert await asyncio.wait_for(reader.readexactly(7), 10) == b"partial"
        master = tunnel.transport._master  # type: ignore[attr-defined]
        os.kill(master.process.pid, signal.SIGKILL)
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(), 10)
        writer.close()
    hold.set()
    server.close()


class SlowToGiveUp(DirectTransport):
    """Connects at once the first time; a reconnect then waits until cancelled and takes a
    moment to clean up (as an ssh it started must be waited for), using its files meanwhile."""

    def __init__(self) -> None:
        self.lost: LossCallback | None = None
        self.reconnecting = asyncio.Event()
        self.attempt_over = False
        self.closed_while_attempting: bool | None = None

    async def connect(
        self, on_phase: PhaseCallback | None = None, on_lost: LossCallback | None = None
    ) -> None:
        if self.lost is None:
            self.lost = on_lost
            return
        self.reconnecting.set()
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0.2)  # the cleanup, still in the transport's files
            self.attempt_over = True

    async def close(self) -> None:
        self.closed_while_attempting = not self.attempt_over


async def test_close_waits_for_a_reconnect_attempt_to_end(echo_server: EchoServer) -> None:
    """The transport is released only once a running reconnect attempt has ended: an attempt
    that went on would use what close removes (an OpenSSH master's directory)."""
    transport = SlowToGiveUp()
    spec = TunnelSpec(target=Endpoint("127.0.0.1", echo_server.port), timeout=10)
    tunnel = Tunnel(spec.with_changes(backoff_initial=0.01), transport)
    await tunnel.start()
    assert transport.lost is not None
    transport.lost("gone")
    await asyncio.wait_for(transport.reconnecting.wait(), 10)
    await tunnel.close()
    assert transport.closed_while_attempting is False
