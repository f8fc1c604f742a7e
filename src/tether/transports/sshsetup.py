"""What both SSH engines share: the checks made before the network (key files), and how a
host-key failure is explained, with the fix spelled for the host and port really used."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from tether.errors import ConfigError, HostKeyError
from tether.files import CONFIG_LIMIT, KEY_LIMIT, KNOWN_HOSTS_LIMIT, read_regular
from tether.spec import SshOptions
from tether.transports import sshcerts

log = logging.getLogger("tether")


def check_files(options: SshOptions) -> None:
    """A key, certificate, known_hosts or ssh_config that is named but missing, unreadable or
    not a file is a configuration error (exit 2), found before the network is touched. (ssh
    itself would take an unreadable known_hosts for an empty one.)"""
    named = [("identity_file", name, KEY_LIMIT) for name in options.identity_files]
    named += [("certificate_file", name, KEY_LIMIT) for name in options.certificate_files]
    if options.known_hosts:
        named.append(("known_hosts", options.known_hosts, KNOWN_HOSTS_LIMIT))
    if options.ssh_config:
        named.append(("ssh_config", options.ssh_config, CONFIG_LIMIT))
    for what, name, limit in named:
        try:
            data = read_regular(Path(name), limit=limit, what=what, error=ConfigError)
        except FileNotFoundError:
            raise ConfigError(f"{what}: file not found: {name}") from None
        if what == "known_hosts" and (skipped := unreadable_lines(data)):
            log.warning("known_hosts: skipped %d unreadable line(s) in %s", skipped, name)
        if what == "certificate_file":
            check_certificate(data, name)


def check_certificate(data: bytes, name: str) -> None:
    """A certificate_file must hold an OpenSSH user certificate (ssh would skip anything else
    without a word, and the login fail for no reason shown)."""
    lines = data.strip().splitlines()
    certificate = sshcerts.from_line(lines[0]) if lines else None
    if certificate is None:
        raise ConfigError(f"certificate_file: not an OpenSSH certificate: {name}")
    if not certificate.user:
        raise ConfigError(f"certificate_file: {name} is a host certificate, not a user's")


def unreadable_lines(data: bytes) -> int:
    """How many lines of a known_hosts file ssh skips: not UTF-8, or too few fields for an
    entry ([marker] hosts keytype key)."""
    skipped = 0
    for raw in data.splitlines():
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            skipped += 1
            continue
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) < (4 if line.startswith("@") else 3):
            skipped += 1
    return skipped


@dataclass(frozen=True)
class KeyProblem:
    """A host-key failure: which host (as known_hosts names it), what went wrong, what the
    server offers, and which known_hosts file was asked."""

    kind: str  # "unknown", "changed", "revoked" or "authority"
    hostname: str  # the real host name or address, after ssh_config
    port: int
    known_hosts: str
    fingerprint: str | None = None

    @property
    def host(self) -> str:
        """The host as known_hosts writes it: name, or [name]:port off port 22."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"

    def error(self) -> HostKeyError:
        offers = self.fingerprint or "unknown"
        where = self.known_hosts
        if self.kind == "revoked":
            return HostKeyError(
                f"host key for {self.host} ({offers}) is marked @revoked in {where}",
                hint="do not connect until the server has a new key",
            )
        if self.kind == "changed":
            return HostKeyError(
                f"host key for {self.host} does not match {where} (server offers {offers}); "
                "this may be an attack",
                hint=f"if the change is expected, remove the old key: "
                f"ssh-keygen -R '{self.host}' -f {where}",
            )
        if self.kind == "authority":
            return HostKeyError(
                f"{where} trusts only certificate authorities for {self.host}, and the server "
                f"offers no host certificate signed by one (it offers {offers})",
                hint="give the server a host certificate, or add its key to known_hosts",
            )
        return HostKeyError(
            f"host key for {self.host} is not in {where} (server offers {offers})",
            hint=f"after checking the fingerprint, trust it: "
            f"ssh-keyscan -p {self.port} {self.hostname} >> {where}",
        )
