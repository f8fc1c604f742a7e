"""The embedded, offline demonstration: an SSH server, a target and a tunnel, all on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import asyncssh

from tether.spec import Endpoint, SshOptions, TunnelSpec, Via
from tether.tunnel import Tunnel

DEMO_USER = "demo"
BULK_BYTES = 4 * 1024 * 1024


class _DemoSshServer(asyncssh.SSHServer):
    """Key-only logins; forwarding allowed to loopback targets only."""

    def begin_auth(self, username: str) -> bool:
        return True

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> bool:
        return dest_host in ("127.0.0.1", "localhost", "::1")


async def echo_target(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The demo's target: echoes every byte, upper-casing lines that start with 'hello'."""
    try:
        while data := await reader.read(65536):
            writer.write(data.upper() if data.startswith(b"hello") else data)
            await writer.drain()
        writer.write_eof()
    finally:
        writer.close()


async def exchange(address: Endpoint, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(address.host, address.port)
    writer.write(payload)
    writer.write_eof()
    reply = await reader.read()
    writer.close()
    await writer.wait_closed()
    return reply


async def run_demo(say: Callable[[str], None]) -> None:
    """Run the whole demonstration, narrating through ``say``; raises if anything misbehaves."""
    say("tether demo: everything below runs on 127.0.0.1 and nothing leaves this machine.")
    target = await asyncio.start_server(echo_target, "127.0.0.1", 0)
    target_port = target.sockets[0].getsockname()[1]
    say(f"[1/5] target service (echo) listening on 127.0.0.1:{target_port}")

    with tempfile.TemporaryDirectory(prefix="tether-demo-") as tmp:
        work = Path(tmp)
        host_key = asyncssh.generate_private_key("ssh-ed25519")
        client_key = asyncssh.generate_private_key("ssh-ed25519")
        identity = work / "client_key"
        client_key.write_private_key(str(identity))
        os.chmod(identity, 0o600)
        server = await asyncssh.create_server(
            _DemoSshServer,
            "127.0.0.1",
            0,
            server_host_keys=[host_key],
            authorized_client_keys=asyncssh.import_authorized_keys(
                client_key.export_public_key().decode()
            ),
        )
        ssh_port = server.sockets[0].getsockname()[1]
        known_hosts = work / "known_hosts"
        public = host_key.export_public_key().decode().strip()
        known_hosts.write_text(f"[127.0.0.1]:{ssh_port} {public}\n")
        say(
            f"[2/5] SSH server on 127.0.0.1:{ssh_port}, host key {host_key.get_fingerprint()} "
            "(trusted for this run only)"
        )

        spec = TunnelSpec(
            name="demo",
            target=Endpoint("127.0.0.1", target_port),
            via=Via("ssh", "127.0.0.1", ssh_port, DEMO_USER),
            ssh=SshOptions(identity_files=(str(identity),), known_hosts=str(known_hosts)),
            timeout=15,
        )
        phases: list[str] = []
        tunnel = Tunnel(spec, on_phase=phases.append)
        began = time.monotonic()
        try:
            await tunnel.start()
            address = tunnel.address
            assert address is not None
            say(
                f"[3/5] tunnel ready in {time.monotonic() - began:.2f}s on {address} -> "
                f"{spec.target} via {spec.via} ({' > '.join(phases)})"
            )
            await _show_traffic(address, say)
            stats = tunnel.stats()
            say(
                f"[5/5] stats: {stats.connections_total} connections "
                f"({stats.connections_active} active), {stats.bytes_out:,} bytes to target, "
                f"{stats.bytes_in:,} bytes back"
            )
        finally:
            await tunnel.close()
            server.close()
            await server.wait_closed()
            target.close()
            await target.wait_closed()
    say("closed the tunnel, the SSH server and the target. demo ok.")


async def _show_traffic(address: Endpoint, say: Callable[[str], None]) -> None:
    reply = await exchange(address, b"hello through the tunnel\n")
    say(f"[4/5] sent 'hello through the tunnel', the target answered {reply.decode().strip()!r}")
    payload = os.urandom(BULK_BYTES)
    began = time.monotonic()
    echoed = await exchange(address, payload)
    seconds = time.monotonic() - began
    if hashlib.sha256(echoed).digest() != hashlib.sha256(payload).digest():
        raise RuntimeError("demo: the echoed bulk data does not match")
    say(
        f"      echoed {len(payload) // 2**20} MiB through the tunnel and back in {seconds:.2f}s; "
        "SHA-256 matches"
    )
