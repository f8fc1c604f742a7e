"""Enrolling a site (`tether gateway site add`) and removing it (`site remove`).

An enrolment is one TOML file, the only secret a site needs: the agent's key and its
certificate (principal ``site:SITE``: it may listen on the site's endpoint on the relays, and do
nothing else), the site sshd's host key and its certificate (principal ``SITE.site.tether``),
the relays' addresses, the site's endpoint port on them, the host CA's keys (to check the
relays) and the user CA's (whose certificates the site's sshd trusts): every key trusted when
it was written, so during a CA rollover both. Removing a site revokes its agent's
certificate (revoked.krl, which relays read) and drops its grants.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tether.errors import UsageError, shown
from tether.gateway import bundles, keygen, policy
from tether.gateway.cas import trusted_public_files
from tether.gateway.layout import Gateway
from tether.gateway.names import ACCOUNT, parse_name, site_host_alias, site_principal
from tether.gateway.serials import next_serial
from tether.spec import Endpoint

FORMAT = 2  # 1 held one key per CA, 2 a list of them (two during a CA rollover)
# An agent's and a site sshd's certificates live as long as the enrolment; a removed site's
# are revoked by serial before their end.
ENROLMENT_VALIDITY = "+52w"
FIRST_ENDPOINT_PORT = 42001
HEADER = """tether gateway enrolment of site {site}: the only secret the site needs.
Keep it private (it holds the agent's key); `tether gateway site remove` revokes it."""


@dataclass(frozen=True)
class Enrolled:
    site: str
    path: Path
    port: int


def add_site(
    gateway: Gateway,
    site: str,
    relays: list[Endpoint],
    *,
    port: int | None = None,
    account: str | None = None,
) -> Enrolled:
    """Enrol ``site``: its keys and certificates, its endpoint port, its enrolment file. Its
    agent logs in to the relays as ``account`` (the account they run as; by default the one
    enrolling, which runs the relays of this directory)."""
    parse_name(site, what="site")
    account = account or pwd.getpwuid(os.getuid()).pw_name
    if not ACCOUNT.match(account):
        raise UsageError(f"relay account: not an account name: {shown(account)}")
    if not relays:
        raise UsageError("a site needs at least one relay", hint="give --relay HOST:PORT")
    current = policy.load(gateway.policy)
    if site in current.sites:
        raise UsageError(f"site {site}: enrolled already", hint="remove it first")
    if port is None:
        taken = {s.port for s in current.sites.values()}
        port = next(p for p in range(FIRST_ENDPOINT_PORT, 65536) if p not in taken)
    path = gateway.enrolments / f"{site}.toml"
    if path.exists() or path.is_symlink():
        raise UsageError(f"{path}: exists already; not overwritten")
    work = Path(tempfile.mkdtemp(prefix=".enrol-", dir=gateway.root))  # 0700, on our disk
    try:
        agent_serial, host_serial = next_serial(gateway.serial), next_serial(gateway.serial)
        agent_key, agent_certificate = keygen.certified(
            work / "agent",
            f"agent-{site}",
            gateway.user_ca,
            key_id=f"agent:{site}",
            principals=[site_principal(site)],
            validity=ENROLMENT_VALIDITY,
            serial=agent_serial,
        )
        host_key, host_certificate = keygen.certified(
            work / "host",
            f"site-{site}",
            gateway.host_ca,
            key_id=f"site:{site}",
            principals=[site_host_alias(site)],
            validity=ENROLMENT_VALIDITY,
            serial=host_serial,
            host=True,
        )
        fields = {
            "format": FORMAT,
            "site": site,
            "relays": [str(relay) for relay in relays],
            "relay_account": account,
            "endpoint_port": port,
            "host_ca": gateway.trusted("host"),
            "user_ca": gateway.trusted("user"),
            "agent_key": agent_key,
            "agent_certificate": agent_certificate,
            "host_key": host_key,
            "host_certificate": host_certificate,
        }
        policy.add_site(gateway.policy, site, port=port, serial=agent_serial)
        try:
            bundles.write(path, HEADER.format(site=site).splitlines(), fields)
        except BaseException:
            policy.remove_site(gateway.policy, site)
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Enrolled(site, path, port)


def remove_site(gateway: Gateway, site: str) -> None:
    """Revoke ``site``'s agent certificate, drop it and its grants from the policy, and delete
    its enrolment file."""
    parse_name(site, what="site")
    serial = policy.remove_site(gateway.policy, site)
    if serial:
        revoke_everywhere(gateway, serial)
    (gateway.enrolments / f"{site}.toml").unlink(missing_ok=True)


def revoke_everywhere(gateway: Gateway, serial: int) -> None:
    """Revoke the certificate of ``serial`` under every trusted user CA: which one signed it is
    not recorded, and serials are the gateway's own, so no other certificate has it."""
    for ca in trusted_public_files(gateway.root, "user"):
        keygen.revoke(gateway.revoked, ca, [serial])
