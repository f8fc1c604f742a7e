"""SSH: one asyncssh connection, one direct-tcpip channel per stream. The only asyncssh importer."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any, cast

import asyncssh

from tether.errors import (
    AuthenticationError,
    ConfigError,
    HostKeyError,
    TargetUnreachableError,
    TetherError,
    TransportUnreachableError,
)
from tether.relay import Conduit, End
from tether.spec import Endpoint, SshOptions, Via
from tether.transports.base import LossCallback, PhaseCallback, Transport

# AES-GCM first: hardware-accelerated almost everywhere, and one pass for cipher and MAC.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")

# Channel receive window and packet size we offer the server. A wider window keeps a high-latency
# link busy; 2 MiB matches OpenSSH's own default for forwarded channels.
CHANNEL_WINDOW = 2 * 1024 * 1024
CHANNEL_PACKET = 32 * 1024


def default_known_hosts() -> Path:
    return Path("~/.ssh/known_hosts").expanduser()


class _Client(asyncssh.SSHClient):
    """Reports progress and loss, and makes sure nothing ever prompts."""

    def __init__(self, on_phase: PhaseCallback | None, on_lost: LossCallback | None) -> None:
        self._on_phase = on_phase
        self._on_lost = on_lost
        self.closing = False

    def connection_made(self, conn: Any) -> None:
        if self._on_phase:
            self._on_phase("authenticating")

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing and self._on_lost is not None:
            self._on_lost(str(exc) if exc else "SSH connection closed by the server")

    def password_auth_requested(self) -> None:
        return None

    def kbdint_auth_requested(self) -> None:
        return None


class SshTransport(Transport):
    """Streams are direct-tcpip channels over a single SSH connection."""

    def __init__(self, via: Via, options: SshOptions) -> None:
        self.via = via
        self.options = options
        self.label = str(via)
        self._conn: Any = None
        self._client: _Client | None = None

    def _known_hosts(self) -> str | bytes:
        if self.options.known_hosts:
            path = Path(self.options.known_hosts)
            if not path.is_file():
                raise ConfigError(f"known_hosts: file not found: {path}")
            return str(path)
        path = default_known_hosts()
        # An empty list still verifies: every host is then unknown. Never pass None, which would
        # turn verification off.
        return str(path) if path.is_file() else b""

    def _connect_options(self, known_hosts: str | bytes) -> dict[str, Any]:
        ciphers = list(PREFERRED_CIPHERS) + [
            alg.decode()
            for alg in asyncssh.encryption.get_default_encryption_algs()
            if alg.decode() not in PREFERRED_CIPHERS
        ]
        kwargs: dict[str, Any] = {
            "port": self.via.port,
            "known_hosts": known_hosts,
            "encryption_algs": ciphers,
            "password_auth": False,
            "kbdint_auth": False,
            "keepalive_interval": self.options.keepalive_interval,
            "keepalive_count_max": self.options.keepalive_count_max,
        }
        if self.via.user:
            kwargs["username"] = self.via.user
        if self.options.identity_files:
            kwargs["client_keys"] = list(self.options.identity_files)
        if self.options.connect_timeout:
            kwargs["connect_timeout"] = self.options.connect_timeout
        return kwargs

    async def connect(
        self, on_phase: PhaseCallback | None = None, on_lost: LossCallback | None = None
    ) -> None:
        await self.close()  # a reconnect replaces whatever is left of the old connection
        known_hosts = self._known_hosts()
        try:
            self._conn, client = await asyncssh.create_connection(
                lambda: _Client(on_phase, on_lost),
                self.via.host,
                **self._connect_options(known_hosts),
            )
            self._client = cast(_Client, client)
        except asyncssh.HostKeyNotVerifiable as exc:
            raise await self._host_key_error(known_hosts) from exc
        except asyncssh.PermissionDenied as exc:
            raise AuthenticationError(
                f"SSH authentication to {self.via} failed: {exc.reason}",
                hint="check the user, identity_file and ssh-agent; tether never prompts",
            ) from exc
        except asyncssh.KeyImportError as exc:
            raise AuthenticationError(
                f"cannot load SSH key: {exc}", hint="load encrypted keys into ssh-agent"
            ) from exc
        except asyncssh.DisconnectError as exc:
            raise TransportUnreachableError(
                f"SSH server {self.via} disconnected: {exc.reason}"
            ) from exc
        except socket.gaierror as exc:
            raise TransportUnreachableError(
                f"cannot resolve SSH server {self.via.host}: {exc.strerror}"
            ) from exc
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise TransportUnreachableError(
                f"cannot reach SSH server {self.via}: {reason}"
            ) from exc

    async def _host_key_error(self, known_hosts: str | bytes) -> TetherError:
        """Explain a host-key failure: which key the server showed and how to trust it."""
        via = self.via
        try:
            key = await asyncio.wait_for(asyncssh.get_server_host_key(via.host, via.port), 10)
        except (TimeoutError, OSError, asyncssh.Error):
            key = None
        fingerprint = key.get_fingerprint() if key is not None else "unknown"
        changed = False
        if isinstance(known_hosts, str):
            try:
                port = via.port if via.port != 22 else None
                trusted = asyncssh.read_known_hosts(known_hosts).match(via.host, "", port)[0]
                changed = bool(trusted)
            except (OSError, ValueError, asyncssh.Error):
                changed = False
        where = known_hosts if isinstance(known_hosts, str) else str(default_known_hosts())
        host = via.host if via.port == 22 else f"[{via.host}]:{via.port}"
        if changed:
            return HostKeyError(
                f"host key for {host} does not match {where} (server offers {fingerprint}); "
                "this may be an attack",
                hint=f"if the change is expected, remove the old key: "
                f"ssh-keygen -R '{host}' -f {where}",
            )
        return HostKeyError(
            f"host key for {host} is not in {where} (server offers {fingerprint})",
            hint=f"after checking the fingerprint, trust it: "
            f"ssh-keyscan -p {via.port} {via.host} >> {where}",
        )

    async def open(self, target: Endpoint, end: End) -> Conduit:
        if self._conn is None:
            raise TransportUnreachableError(f"SSH connection to {self.via} is not open")
        try:
            channel, _ = await self._conn.create_connection(
                lambda: end,
                target.host,
                target.port,
                window=CHANNEL_WINDOW,
                max_pktsize=CHANNEL_PACKET,
            )
        except asyncssh.ChannelOpenError as exc:
            raise TargetUnreachableError(
                f"cannot connect to {target} through {self.via}: {exc.reason}"
            ) from exc
        except (asyncssh.Error, OSError) as exc:
            raise TransportUnreachableError(f"SSH connection to {self.via} failed: {exc}") from exc
        return channel  # type: ignore[no-any-return]

    async def close(self) -> None:
        if self._client is not None:
            self._client.closing = True
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()
            await conn.wait_closed()
