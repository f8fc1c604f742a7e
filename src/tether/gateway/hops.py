"""How tether's own ssh commands reach a gateway's sshd (a relay, or a site's through it): with
one key (and its certificate), the host checked against the gateway's host CA under the name
its certificate carries, nothing prompting, and nothing of the user's ssh config."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tether.gateway.names import RELAY_PRINCIPAL

RELAYS_AND_SITES = f"{RELAY_PRINCIPAL},*.site.tether"


def known_hosts_line(host_ca: str, names: str = RELAYS_AND_SITES) -> str:
    """The known_hosts line that trusts the gateway's host CA for ``names`` (by default the
    relays and the sites, which clients and agents reach), and nothing else."""
    return f"@cert-authority {names} {host_ca}\n"


def known_hosts_lines(host_cas: Sequence[str], names: str = RELAYS_AND_SITES) -> str:
    """A line per host CA key: during a rollover either CA's host certificates are good."""
    return "".join(known_hosts_line(ca, names) for ca in host_cas)


def ssh_options(
    *, key: Path, known_hosts: Path, alias: str, certificate: Path | None = None
) -> list[str]:
    """`-o` words for `ssh -F /dev/null`: log in with ``key`` (and ``certificate``), and accept
    only a host certificate of the gateway's host CA for ``alias``."""
    options = {
        "IdentityFile": str(key),
        "IdentitiesOnly": "yes",
        "BatchMode": "yes",
        "StrictHostKeyChecking": "yes",
        "UserKnownHostsFile": str(known_hosts),
        "GlobalKnownHostsFile": "/dev/null",
        "HostKeyAlias": alias,
        "ExitOnForwardFailure": "yes",
        "ControlMaster": "no",
    }
    if certificate is not None:
        options["CertificateFile"] = str(certificate)
    words: list[str] = []
    for name, value in options.items():
        words += ["-o", f"{name}={value}"]
    return words
