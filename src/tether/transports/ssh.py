"""SSH: one asyncssh connection, one direct-tcpip channel per stream. The only asyncssh importer."""

from __future__ import annotations

import asyncio
import logging
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
    describe,
)
from tether import paths
from tether.files import KEY_LIMIT, KNOWN_HOSTS_LIMIT, read_regular
from tether.relay import Conduit, End
from tether.spec import Endpoint, SshOptions, Via
from tether.transports.base import LossCallback, PhaseCallback, Transport

log = logging.getLogger("tether")

# AES-GCM first: hardware-accelerated almost everywhere, and one pass for cipher and MAC.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")

# Channel receive window and packet size we offer the server. A wider window keeps a high-latency
# link busy; 2 MiB matches OpenSSH's own default for forwarded channels.
CHANNEL_WINDOW = 2 * 1024 * 1024
CHANNEL_PACKET = 32 * 1024


def load_known_hosts(data: bytes, path: Path) -> asyncssh.SSHKnownHosts:
    """Parse known_hosts as OpenSSH does: a line that is not UTF-8 or not an entry is skipped
    (with one warning), not fatal."""
    lines = []
    skipped = 0
    for raw in data.splitlines():
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            skipped += 1
    try:
        known = asyncssh.import_known_hosts("\n".join(lines))
    except ValueError:
        good = []
        for line in lines:
            try:
                asyncssh.import_known_hosts(line)
            except ValueError:
                skipped += 1
            else:
                good.append(line)
        known = asyncssh.import_known_hosts("\n".join(good))
    if skipped:
        log.warning("known_hosts: skipped %d unreadable line(s) in %s", skipped, path)
    return known


class _Client(asyncssh.SSHClient):
    """Reports progress and loss, and makes sure nothing ever prompts."""

    def __init__(self, on_phase: PhaseCallback | None, on_lost: LossCallback | None) -> None:
        self._on_phase = on_phase
        self._on_lost = on_lost
        self.closing = False

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
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
        self._conn: asyncssh.SSHClientConnection | None = None
        self._client: _Client | None = None

    def _known_hosts(self) -> tuple[asyncssh.SSHKnownHosts, Path]:
        """The known hosts to verify the server with, and the file they came from.

        A missing default file means an empty list: every host is then unknown. Never None,
        which would turn verification off.
        """
        named = self.options.known_hosts
        path = Path(named) if named else paths.known_hosts()
        try:
            data = read_regular(
                path, limit=KNOWN_HOSTS_LIMIT, what="known_hosts", error=ConfigError
            )
        except FileNotFoundError:
            if self.options.known_hosts:
                raise ConfigError(f"known_hosts: file not found: {path}") from None
            data = b""
        return load_known_hosts(data, path), path

    def _check_identity_files(self) -> None:
        """A key that is missing, unreadable or not a file is a configuration error (exit 2),
        found before the network is touched."""
        for name in self.options.identity_files:
            try:
                read_regular(Path(name), limit=KEY_LIMIT, what="identity_file", error=ConfigError)
            except FileNotFoundError:
                raise ConfigError(f"identity_file: file not found: {name}") from None

    def _connect_options(self, known_hosts: asyncssh.SSHKnownHosts) -> dict[str, Any]:
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
        known_hosts, known_hosts_path = self._known_hosts()
        self._check_identity_files()
        try:
            self._conn, client = await asyncssh.create_connection(
                lambda: _Client(on_phase, on_lost),
                self.via.host,
                **self._connect_options(known_hosts),
            )
            self._client = cast(_Client, client)
        except asyncssh.HostKeyNotVerifiable as exc:
            raise await self._host_key_error(known_hosts, known_hosts_path) from exc
        except asyncssh.PermissionDenied as exc:
            raise AuthenticationError(
                f"SSH authentication to {self.via} failed: {exc.reason}",
                hint="check the user, identity_file and ssh-agent; tether never prompts",
                options=("identity_file",),
            ) from exc
        except asyncssh.KeyImportError as exc:
            if "passphrase" not in str(exc).lower():
                raise ConfigError(f"identity_file: not a usable private key: {exc}") from exc
            raise AuthenticationError(
                f"cannot load SSH key: {exc}", hint="load encrypted keys into ssh-agent"
            ) from exc
        except (asyncssh.DisconnectError, ConnectionResetError, BrokenPipeError) as exc:
            trusted, authorities, _ = self._lookup(known_hosts)
            if authorities and not trusted:
                # Only @cert-authority lines match, so only certificate host keys were offered,
                # and a server without a host certificate drops the key exchange (with a
                # disconnect, an EOF or a reset, as it happens).
                raise await self._host_key_error(known_hosts, known_hosts_path) from exc
            raise TransportUnreachableError(
                f"SSH server {self.via} disconnected: {describe(exc)}"
            ) from exc
        except socket.gaierror as exc:
            raise TransportUnreachableError(
                f"cannot resolve SSH server {self.via.host}: {exc.strerror}"
            ) from exc
        except OSError as exc:
            raise TransportUnreachableError(
                f"cannot reach SSH server {self.via}: {describe(exc)}"
            ) from exc
        except (asyncssh.Error, ValueError, UnicodeError) as exc:
            # The rest of what asyncssh may raise: a protocol error, a value it refuses.
            raise TransportUnreachableError(
                f"SSH connection to {self.via} failed: {describe(exc)}"
            ) from exc

    def _lookup(
        self, known_hosts: asyncssh.SSHKnownHosts
    ) -> tuple[list[Any], list[Any], list[Any]]:
        """The trusted keys, authorities and revoked keys known_hosts holds for the server.

        Also looked up as OpenSSH writes the entry, "[host]:port": asyncssh forgets the revoked
        keys of a port-specific entry when it finds no trusted key for it.
        """
        via = self.via
        port = via.port if via.port != 22 else None
        lookups = [known_hosts.match(via.host, "", port)]
        if port:
            lookups.append(known_hosts.match(f"[{via.host}]:{via.port}", "", None))
        trusted, authorities, revoked = (
            [key for found in lookups for key in found[kind]] for kind in range(3)
        )
        return trusted, authorities, revoked

    async def _host_key_error(
        self, known_hosts: asyncssh.SSHKnownHosts, where: Path
    ) -> TetherError:
        """Explain a host-key failure: which key the server showed and how to trust it."""
        via = self.via
        try:
            key = await asyncio.wait_for(asyncssh.get_server_host_key(via.host, via.port), 10)
        except (TimeoutError, OSError, ValueError, asyncssh.Error):
            key = None
        fingerprint = key.get_fingerprint() if key is not None else "unknown"
        trusted, authorities, revoked = self._lookup(known_hosts)
        host = via.host if via.port == 22 else f"[{via.host}]:{via.port}"
        if key is not None and any(key == k for k in revoked):
            return HostKeyError(
                f"host key for {host} ({fingerprint}) is marked @revoked in {where}",
                hint="do not connect until the server has a new key",
            )
        if trusted:
            return HostKeyError(
                f"host key for {host} does not match {where} (server offers {fingerprint}); "
                "this may be an attack",
                hint=f"if the change is expected, remove the old key: "
                f"ssh-keygen -R '{host}' -f {where}",
            )
        if authorities:
            return HostKeyError(
                f"{where} trusts only certificate authorities for {host}, and the server offers "
                f"no host certificate signed by one (it offers {fingerprint})",
                hint="give the server a host certificate, or add its key to known_hosts",
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
                # End has the shape of an asyncssh session without importing asyncssh.
                lambda: cast("asyncssh.SSHTCPSession[bytes]", end),
                target.host,
                target.port,
                # The window is what a paused channel may buffer: it shrinks with the tunnel's
                # per-connection share when many are open.
                window=max(CHANNEL_PACKET, min(CHANNEL_WINDOW, 2 * end.relay.high_water)),
                max_pktsize=CHANNEL_PACKET,
            )
        except asyncssh.ChannelOpenError as exc:
            raise TargetUnreachableError(
                f"cannot connect to {target} through {self.via}: {exc.reason}"
            ) from exc
        except (asyncssh.Error, OSError) as exc:
            raise TransportUnreachableError(f"SSH connection to {self.via} failed: {exc}") from exc
        return channel

    async def close(self) -> None:
        if self._client is not None:
            self._client.closing = True
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()
            await conn.wait_closed()
