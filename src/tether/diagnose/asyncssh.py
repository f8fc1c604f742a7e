"""The asyncssh engine's side of a diagnosis: the tunnel's own connection, watched through its
callbacks, and the known_hosts line that vouches for the server's key."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import asyncssh

from tether.diagnose.engine import EngineProbe
from tether.diagnose.network import Peer, first_bytes
from tether.diagnose.report import Step
from tether.errors import ConfigError, TransportUnreachableError
from tether.files import KNOWN_HOSTS_LIMIT, read_regular
from tether.spec import Endpoint, SshOptions, Via
from tether.transports import sshcerts
from tether.transports.asyncssh import AsyncSshTransport
from tether.transports.sshidentities import DEFAULT_KEYS
from tether.transports.sshsetup import check_files, target_error

CERTIFICATE = "-cert-v01@openssh.com"


class _Seen:
    """What the login did, as the transport's watch hears it: the connection (its host key),
    the methods the server offers, and the keys offered."""

    def __init__(self) -> None:
        self.conn: asyncssh.SSHClientConnection | None = None
        self.methods: list[str] = []
        self.keys: list[asyncssh.SSHKeyPair] = []

    def connected(self, conn: asyncssh.SSHClientConnection) -> None:
        self.conn = conn

    def key_requested(self, methods: list[str], key: asyncssh.SSHKeyPair | None) -> None:
        if not self.methods:
            self.methods = methods
        if key is not None:
            self.keys.append(key)


class _Watched(AsyncSshTransport):
    """The tunnel's asyncssh transport, its login watched, and what ssh_config says for it."""

    def __init__(self, via: Via, options: SshOptions) -> None:
        self.seen = _Seen()
        super().__init__(via, options, watch=self.seen)

    def settings(self) -> tuple[dict[str, Any], Peer | None, list[str]]:
        """ssh_config as asyncssh reads it for the via; the first host it connects to; the
        known_hosts files."""
        files = self.config_files()
        config = self.load_config(files)
        resolved = self.resolve(files)
        shown: dict[str, Any] = {
            "hostname": resolved.hostname,
            "port": resolved.port,
            "user": config.get("User") or self.via.user,
            "proxyjump": config.get("ProxyJump"),
            # The login's files: tether's own, then ssh_config's (sshkeys.py).
            "identityfile": _unique(
                self.options.identity_files, cast(list[str], config.get("IdentityFile", []))
            ),
            "certificatefile": _unique(
                self.options.certificate_files,
                cast(list[str], config.get("CertificateFile", [])),
            ),
            "userknownhostsfile": resolved.known_hosts,
        }
        hop = None
        if not shown["proxyjump"]:
            hop = Peer(resolved.hostname, resolved.port, str(self.via))
        return {k: v for k, v in shown.items() if v}, hop, resolved.known_hosts

    def matched_line(self, key: asyncssh.SSHKey) -> dict[str, Any] | None:
        """The known_hosts line that trusts ``key`` for the server (or, failing one, that
        names an authority for it), as ``{"file", "line", "ca"}``."""
        resolved = self.resolve(self.config_files())
        fallback = None
        for name in resolved.known_hosts:
            path = Path(name).expanduser()
            try:
                data = read_regular(
                    path, limit=KNOWN_HOSTS_LIMIT, what="known_hosts", error=ConfigError
                )
            except FileNotFoundError:
                continue
            for number, raw in enumerate(data.splitlines(), 1):
                try:
                    entry = asyncssh.import_known_hosts(raw.decode("utf-8"))
                except (UnicodeDecodeError, ValueError):
                    continue  # skipped by the connection too
                trusted, authorities, _ = self.lookup(entry, resolved)
                if any(key == k for k in trusted):
                    return {"file": str(path), "line": number, "ca": False}
                if authorities and fallback is None:
                    fallback = {"file": str(path), "line": number, "ca": True}
        return fallback


class AsyncSshProbe(EngineProbe):
    """Connects with the tunnel's asyncssh transport and reports what its login saw."""

    engine = "asyncssh"

    def __init__(self, via: Via, options: SshOptions) -> None:
        super().__init__(via, options)
        self.transport: _Watched = _Watched(via, options)

    async def prepare(self) -> None:
        check_files(self.options)
        self.ssh_config, self.hop, _ = self.transport.settings()
        jump = self.ssh_config.get("proxyjump")
        if jump:
            first = str(jump).split(",")[0]
            # The hop as ssh_config makes it: its own HostName and Port.
            hop = _Watched(Via.parse("ssh://" + first.removeprefix("ssh://")), self.options)
            _, self.hop, _ = hop.settings()
            self.note = (
                f"ProxyJump {jump}: resolve, tcp and banner concern the first jump host "
                f"({first}); host_key and auth concern {self.via.host} itself"
            )

    def host_key_facts(self, step: Step) -> None:
        conn = self.transport.seen.conn
        key = conn.get_server_host_key() if conn is not None else None
        if key is None:
            return
        algorithm = key.get_algorithm()
        step.facts.update(algorithm=algorithm, fingerprint=key.get_fingerprint())
        step.detail = f"{algorithm} {key.get_fingerprint()}"
        found = self.transport.matched_line(key) if self.verified.is_set() else None
        if found is not None:
            what = "known_hosts_ca" if found.pop("ca") else "known_hosts"
            step.facts[what] = found
            how = "signed by the @cert-authority of" if what == "known_hosts_ca" else "matches"
            step.detail += f", {how} {found['file']}:{found['line']}"

    def auth_facts(self, step: Step) -> None:
        seen = self.transport.seen
        keys = [self._describe(key) for key in seen.keys]
        methods = seen.methods
        step.facts.update({"methods_offered": methods} if methods else {}, tried=keys)
        offers = ",".join(methods) or "unknown"
        if self.transport.connection is not None:  # logged in, with the last key tried
            step.facts.update(method="publickey", key=keys[-1] if keys else None)
            step.detail = "publickey" + (f" with {keys[-1]}" if keys else "")
            step.detail += f"; the server offers {offers}"
        else:
            step.detail = f"the server offers {offers}; tried {'; '.join(keys) or 'no key'}"

    def _describe(self, key: asyncssh.SSHKeyPair) -> str:
        """A key as ssh -v names it: where it came from, its type and fingerprint."""
        algorithm = key.algorithm.decode(errors="replace")
        public = bytes(key.public_data)
        with contextlib.suppress(ValueError):
            public = sshcerts.parse(public).key  # a certificate: ssh names the key it certifies
        # As ssh prints it: SHA256 of the key's wire form, in base64 without padding.
        digest = base64.b64encode(hashlib.sha256(public).digest()).decode().rstrip("=")
        fingerprint = f"SHA256:{digest}"
        source = "ssh-agent" if type(key).__name__ == "SSHAgentKeyPair" else "?"
        if source == "?":
            source = next((path for path in self._key_files() if _public(path) == public), "a key")
        kind = " certificate" if algorithm.endswith(CERTIFICATE) else ""
        return f"{source} {algorithm}{kind} {fingerprint}"

    def _key_files(self) -> list[str]:
        named = list(self.ssh_config.get("identityfile", []))
        return named + [f"~/.ssh/{name}" for name in DEFAULT_KEYS]

    async def probe(self, target: Endpoint, step: Step) -> None:
        conn = self.transport.connection
        if conn is None:
            raise TransportUnreachableError(f"SSH connection to {self.via} is not open")
        started = time.monotonic()
        try:
            reader, writer = await conn.open_connection(target.host, target.port)
        except asyncssh.ChannelOpenError as exc:
            raise target_error(target, str(self.via), exc.reason) from None
        except (asyncssh.Error, OSError) as exc:
            raise TransportUnreachableError(f"SSH connection to {self.via} failed: {exc}") from None
        step.detail = f"opened in {(time.monotonic() - started) * 1000:.1f} ms"
        await first_bytes(step, lambda: reader.read(65536), writer.close)


def _unique(*lists: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(item for items in lists for item in items))


def _public(path: str) -> bytes | None:
    """The public key blob of the key file ``path``, from its .pub (never the private key)."""
    with contextlib.suppress(OSError, ValueError, asyncssh.KeyImportError):
        return bytes(asyncssh.read_public_key(Path(f"{path}.pub").expanduser()).public_data)
    return None


__all__ = ["AsyncSshProbe"]
