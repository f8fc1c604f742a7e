"""SSH: one asyncssh connection, one direct-tcpip channel per stream (asyncssh's other importers
are sshkeys.py, which picks the login's keys, diagnose/asyncssh.py, and demo.py's server)."""

from __future__ import annotations

import asyncio
import getpass
import logging
import re
import socket
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, cast

import asyncssh
from asyncssh.config import SSHClientConfig

from tether.errors import (
    AuthenticationError,
    ConfigError,
    HostKeyError,
    TargetFailure,
    TetherError,
    TransportUnreachableError,
    UsageError,
    describe,
    map_exceptions,
)
from tether import paths
from tether.files import KNOWN_HOSTS_LIMIT, read_regular
from tether.relay import Conduit, End
from tether.spec import DEFAULT_SSH_PORT, Endpoint, SshOptions, Via
from tether.transports import sshcerts, sshkeys
from tether.transports.base import LossCallback, PhaseCallback, RelayingTransport
from tether.transports.sshsetup import (
    KeyProblem,
    check_files,
    hop_refused,
    login_refused,
    target_error,
)

log = logging.getLogger("tether")

# AES-GCM first: hardware-accelerated almost everywhere, and one pass for cipher and MAC.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")

# asyncssh's words for a login that no key passed: who logged in where.
_DENIED_LOGIN = re.compile(r"Permission denied for user (\S+) on host (\S+)")

# Channel receive window and packet size we offer the server. A wider window keeps a high-latency
# link busy; 2 MiB matches OpenSSH's own default for forwarded channels.
CHANNEL_WINDOW = 2 * 1024 * 1024
CHANNEL_PACKET = 32 * 1024


def load_known_hosts(data: bytes, path: Path, *, warn: bool = True) -> asyncssh.SSHKnownHosts:
    """Parse known_hosts as OpenSSH does: a line that is not UTF-8 or not an entry is skipped
    (with one warning, unless the caller has given it), not fatal."""
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
    if skipped and warn:
        log.warning("known_hosts: skipped %d unreadable line(s) in %s", skipped, path)
    return known


def channel_failure(code: int, reason: str) -> TargetFailure:
    """What a refused direct-tcpip channel means to a SOCKS client. sshd says "administratively
    prohibited" for its own rules, and for a failed connect the errno's or the resolver's words."""
    if code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED:
        return "prohibited"
    if code != asyncssh.OPEN_CONNECT_FAILED:
        return "other"
    return "refused" if "refused" in reason.lower() else "unreachable"


@dataclass(frozen=True)
class _Resolved:
    """Where ssh_config leads for the via: the real host and port, and known_hosts files."""

    hostname: str
    port: int
    known_hosts: list[str]
    proxied: bool  # reached through a jump host or a ProxyCommand
    user: str = ""  # ssh_config's User, else the local user's name
    jump: str = ""  # ssh_config's ProxyJump, as it spells it


class LoginWatch(Protocol):
    """What `tether diagnose` hears of a login: the connection once it is made (its public
    accessors tell the server's host key), and each time a key is asked for, the methods the
    server offers then and the key offered (None: no key left)."""

    def connected(self, conn: asyncssh.SSHClientConnection) -> None: ...
    def key_requested(self, methods: list[str], key: asyncssh.SSHKeyPair | None) -> None: ...


class TunnelClient(asyncssh.SSHClient):
    """Reports progress and loss, offers the login's keys one at a time (as ssh would, in
    sshkeys.py's order), and makes sure nothing ever prompts."""

    def __init__(
        self,
        on_phase: PhaseCallback | None,
        on_lost: LossCallback | None,
        keys: list[asyncssh.SSHKeyPair] | None = None,
        watch: LoginWatch | None = None,
    ) -> None:
        self._on_phase = on_phase
        self._on_lost = on_lost
        self._keys = list(keys or [])
        self._watch = watch
        self._conn: asyncssh.SSHClientConnection | None = None
        self.closing = False
        #: The CA of the host certificate the server offered, when known_hosts trusts none.
        self.host_authority: str | None = None

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        self._conn = conn
        if self._watch is not None:
            self._watch.connected(conn)

    def public_key_auth_requested(self) -> list[asyncssh.SSHKeyPair] | None:
        key = self._keys.pop(0) if self._keys else None
        watch, conn = self._watch, self._conn
        if watch is not None and conn is not None and not (key and sshkeys.placeholder(key)):
            watch.key_requested(list(conn.get_server_auth_methods()), key)
        return [key] if key is not None else None

    def begin_auth(self, username: str) -> None:
        # Called once the server has sent its version, the key exchange is done and its host
        # key is verified: a server that accepts TCP and never speaks stays "connecting".
        if self._on_phase:
            self._on_phase("authenticating")

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing and self._on_lost is not None:
            self._on_lost(str(exc) if exc else "SSH connection closed by the server")

    def validate_host_ca_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        # Never trusted here (known_hosts alone decides): remembered, so that the error can
        # say which authority to trust instead of the bare key.
        self.host_authority = key.get_fingerprint()
        return False

    def password_auth_requested(self) -> None:
        return None

    def kbdint_auth_requested(self) -> None:
        return None


class AsyncSshTransport(RelayingTransport):
    """Streams are direct-tcpip channels over a single SSH connection."""

    engine = "asyncssh"

    def __init__(self, via: Via, options: SshOptions, *, watch: LoginWatch | None = None) -> None:
        self.via = via
        self.options = options
        self.label = str(via)
        self._watch = watch  # tether diagnose's: what the login does
        self._conn: asyncssh.SSHClientConnection | None = None
        self._client: TunnelClient | None = None

    @property
    def connection(self) -> asyncssh.SSHClientConnection | None:
        """The SSH connection, once logged in (tether diagnose opens its probe on it)."""
        return self._conn

    def config_files(self) -> list[str]:
        """The user's ssh_config, which asyncssh applies as OpenSSH would (HostName, Port,
        User, IdentityFile, ProxyJump, ...)."""
        path = Path(self.options.ssh_config or paths.ssh_config()).expanduser()
        return [str(path)] if path.is_file() else []

    def load_config(self, config_files: list[str]) -> SSHClientConfig:
        """ssh_config for the via, as asyncssh reads it."""
        with map_exceptions({OSError: ConfigError, ValueError: ConfigError}, "ssh_config"):
            config = SSHClientConfig.load(
                None,
                config_files,
                False,
                False,
                False,
                getpass.getuser(),
                self.via.user or (),
                self.via.host,
                self.via.port if self.via.port_given else (),
            )
        return cast(SSHClientConfig, config)

    def resolve(self, config_files: list[str]) -> _Resolved:
        """The real host, port and known_hosts files after ssh_config, as asyncssh reads it."""
        config = self.load_config(config_files)
        hostname = str(config.get("Hostname", self.via.host))
        port = int(cast(int, config.get("Port", DEFAULT_SSH_PORT)))
        if self.options.known_hosts:
            files = [self.options.known_hosts]
        else:
            listed = cast(list[str], config.get("UserKnownHostsFile", []))
            files = [f for f in listed if f != "none"] or [str(paths.known_hosts())]
        user = str(config.get("User", "") or getpass.getuser())
        jump = str(config.get("ProxyJump") or "")
        proxied = bool(jump) or bool(config.get("ProxyCommand"))
        return _Resolved(hostname, port, files, proxied, user, jump)

    def _known_hosts(self, resolved: _Resolved) -> asyncssh.SSHKnownHosts:
        """The known hosts to verify the server with. A missing file means no entries: every
        host is then unknown. Never None, which would turn verification off, whatever the
        user's config says."""
        data = b""
        for index, name in enumerate(resolved.known_hosts):
            path = Path(name).expanduser()
            try:
                data += read_regular(
                    path, limit=KNOWN_HOSTS_LIMIT, what="known_hosts", error=ConfigError
                )
                data += b"\n"
            except FileNotFoundError:
                if self.options.known_hosts and index == 0:
                    raise ConfigError(f"known_hosts: file not found: {path}") from None
        # A known_hosts named in the options was checked (and warned about) by check_files.
        named = bool(self.options.known_hosts)
        return load_known_hosts(data, Path(resolved.known_hosts[0]), warn=not named)

    def _connect_options(
        self, known_hosts: asyncssh.SSHKnownHosts, config_files: list[str]
    ) -> dict[str, Any]:
        ciphers = list(PREFERRED_CIPHERS) + [
            alg.decode()
            for alg in asyncssh.encryption.get_default_encryption_algs()
            if alg.decode() not in PREFERRED_CIPHERS
        ]
        kwargs: dict[str, Any] = {
            "config": config_files,
            "known_hosts": known_hosts,
            "encryption_algs": ciphers,
            "password_auth": False,
            "kbdint_auth": False,
            "keepalive_interval": self.options.keepalive_interval,
            "keepalive_count_max": self.options.keepalive_count_max,
        }
        if self.via.port_given:
            kwargs["port"] = self.via.port
        if self.via.user:
            kwargs["username"] = self.via.user
        # The keys and certificates ssh would offer, in its order, the agent's among them
        # (sshkeys.py), come from TunnelClient one at a time: asyncssh loads no key of its own
        # and asks the agent for nothing more.
        kwargs["client_keys"] = None
        kwargs["agent_path"] = None
        if self.options.connect_timeout:
            kwargs["connect_timeout"] = self.options.connect_timeout
        return kwargs

    async def server_address(self) -> tuple[str, int] | None:
        try:
            resolved = self.resolve(self.config_files())
        except TetherError:
            return None
        return None if resolved.proxied else (resolved.hostname, resolved.port)

    async def connect(
        self, on_phase: PhaseCallback | None = None, on_lost: LossCallback | None = None
    ) -> None:
        await self.close()  # a reconnect replaces whatever is left of the old connection
        check_files(self.options)
        config_files = self.config_files()
        resolved = self.resolve(config_files)
        known_hosts = self._known_hosts(resolved)
        login = sshkeys.Login([])
        # The server's own connection, once made (a ProxyJump hop's login comes before it).
        made: list[TunnelClient] = []

        def client_factory() -> TunnelClient:
            # A ProxyJump hop's connection is made before this one, and not by this factory:
            # its logins take keys of their own (asyncssh's, from ssh_config).
            made.append(TunnelClient(on_phase, on_lost, login.keys, self._watch))
            return made[-1]

        try:
            login = await sshkeys.prepare(self.options, self.load_config(config_files))
            self._conn, client = await asyncssh.create_connection(
                client_factory,
                self.via.host,
                **self._connect_options(known_hosts, config_files),
            )
            self._client = cast(TunnelClient, client)
        except asyncssh.HostKeyNotVerifiable as exc:
            if resolved.jump and not made:
                raise await self._hop_host_key_error(exc.reason, resolved.jump) from exc
            authority = made[-1].host_authority if made else None
            raise await self._host_key_error(known_hosts, resolved, authority) from exc
        except asyncssh.PermissionDenied as exc:
            if resolved.jump and not made:
                denied = _DENIED_LOGIN.fullmatch(exc.reason)
                hop = f"{denied.group(1)}@{denied.group(2)}" if denied else resolved.jump
                raise hop_refused(hop, resolved.jump, str(self.via)) from exc
            user = self.via.user or resolved.user
            raise sshcerts.refusal(str(self.via), login.offered, user) or login_refused(
                str(self.via),
                exc.reason,
                login.locked[0] if login.locked else None,
                agent=login.agent_found,
            ) from exc
        except asyncssh.KeyImportError as exc:
            if "passphrase" not in str(exc).lower():
                raise ConfigError(f"identity_file: not a usable private key: {exc}") from exc
            raise AuthenticationError(
                f"cannot load SSH key: {exc}", hint="load encrypted keys into ssh-agent"
            ) from exc
        except (asyncssh.DisconnectError, ConnectionResetError, BrokenPipeError) as exc:
            trusted, authorities, _ = self.lookup(known_hosts, resolved)
            if authorities and not trusted:
                # Only @cert-authority lines match, so only certificate host keys were offered,
                # and a server without a host certificate drops the key exchange (with a
                # disconnect, an EOF or a reset, as it happens).
                raise await self._host_key_error(known_hosts, resolved) from exc
            raise TransportUnreachableError(
                f"SSH server {self.via} disconnected: {describe(exc)}"
            ) from exc
        except socket.gaierror as exc:
            raise TransportUnreachableError(
                f"cannot resolve SSH server {resolved.hostname}: {exc.strerror}"
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
        finally:
            await login.close()  # the agent has signed what it had to

    def lookup(
        self, known_hosts: asyncssh.SSHKnownHosts, resolved: _Resolved
    ) -> tuple[list[Any], list[Any], list[Any]]:
        """The trusted keys, authorities and revoked keys known_hosts holds for the server.

        Also looked up as OpenSSH writes the entry, "[host]:port": asyncssh forgets the revoked
        keys of a port-specific entry when it finds no trusted key for it.
        """
        host, port = resolved.hostname, resolved.port
        lookups = [known_hosts.match(host, "", port if port != DEFAULT_SSH_PORT else None)]
        if port != DEFAULT_SSH_PORT:
            lookups.append(known_hosts.match(f"[{host}]:{port}", "", None))
        trusted, authorities, revoked = (
            [key for found in lookups for key in found[kind]] for kind in range(3)
        )
        return trusted, authorities, revoked

    async def _hop_host_key_error(self, reason: str, jump: str) -> HostKeyError:
        """A ProxyJump hop's host key failed: explained as for the server, for the hop whose
        host asyncssh names (it checks a hop against the known_hosts that ssh_config gives
        the hop, not the tunnel's)."""
        host = reason.rpartition(" for host ")[2]
        hops = [hop.removeprefix("ssh://") for hop in jump.split(",")]
        for hop in hops:
            try:
                via = Via.parse(f"ssh://{hop}", what="ProxyJump")
            except UsageError:
                break
            transport = AsyncSshTransport(via, replace(self.options, known_hosts=None))
            resolved = transport.resolve(transport.config_files())
            if resolved.hostname != host and hop != hops[-1]:
                continue
            known_hosts = transport._known_hosts(resolved)
            return await transport._host_key_error(known_hosts, resolved, jump=jump)
        error = HostKeyError(f"host key of jump host {host} (ProxyJump {jump}): {reason}")
        error.hop = host
        return error

    async def _host_key_error(
        self,
        known_hosts: asyncssh.SSHKnownHosts,
        resolved: _Resolved,
        authority: str | None = None,
        *,
        jump: str | None = None,
    ) -> HostKeyError:
        """Explain a host-key failure: which key the server showed and how to trust it, for
        the host and port ssh_config really leads to."""
        key = None
        if not resolved.proxied:  # behind a jump host or a ProxyCommand: not to be asked
            try:
                key = await asyncio.wait_for(
                    asyncssh.get_server_host_key(resolved.hostname, resolved.port), 10
                )
            except (TimeoutError, OSError, ValueError, asyncssh.Error):
                key = None
        trusted, authorities, revoked = self.lookup(known_hosts, resolved)
        kind = "unknown"
        if key is not None and any(key == k for k in revoked):
            kind = "revoked"
        elif trusted:
            kind = "changed"
        elif authorities:
            kind = "authority"
        fingerprint = key.get_fingerprint() if key is not None else None
        where = str(Path(resolved.known_hosts[0]).expanduser())
        problem = KeyProblem(kind, resolved.hostname, resolved.port, where, fingerprint, jump=jump)
        if kind == "unknown" and authority is not None:
            problem = replace(problem, authority=authority)
        return problem.error()

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
            failure = channel_failure(exc.code, exc.reason)
            raise target_error(target, str(self.via), exc.reason, failure) from exc
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
