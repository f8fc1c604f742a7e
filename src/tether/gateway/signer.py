"""Issuing a client's certificate: the user's own public key, signed by the gateway's user CA
for one target, for minutes (never past the grant), after the policy says yes. Every issuance
and every refusal goes to the audit log.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tether.errors import AccessRefused
from tether.gateway import audit, cas, keygen, policy
from tether.gateway.layout import Gateway
from tether.gateway.names import parse_name, target_principal, via_principal
from tether.gateway.serials import next_serial

LIFETIME = timedelta(minutes=5)
# Certificates start a little in the past: a client whose clock runs behind must not see one
# that is not yet valid.
SKEW = timedelta(minutes=1)


@dataclass(frozen=True)
class Issued:
    certificate: str  # one line, as a KEY-cert.pub file holds it
    serial: int
    valid_before: datetime


def issue(
    gateway: Gateway,
    user: str,
    public_key: str,
    site: str,
    target: str,
    *,
    now: datetime | None = None,
    lifetime: timedelta = LIFETIME,
    relay: str | None = None,
) -> Issued:
    """A certificate for ``user``'s ``public_key`` that opens ``site``/``target`` only, asked
    for through ``relay`` (which the audit lines name)."""
    now = now or datetime.now(UTC)
    parse_name(site, what="site")
    parse_name(target, what="target")
    key = policy.parse_public_key(public_key, what="public key")
    current = policy.load(gateway.policy)
    known = current.users.get(user)
    where = {"user": user, "site": site, "target": target, "key": audit.fingerprint(key)}
    if relay is not None:
        where["relay"] = relay
    if known is None or known.key != key:
        audit.record(gateway.audit, "refused", reason="unknown user or key", **where)
        raise AccessRefused(f"access to {site}/{target} refused: this key is not {user}'s")
    grant = next(
        (
            g
            for g in current.grants
            if (g.user, g.site, g.target) == (user, site, target) and g.live(now)
        ),
        None,
    )
    if grant is None:
        audit.record(gateway.audit, "refused", reason="no grant", **where)
        raise AccessRefused(f"access to {site}/{target} refused: {user} has no grant of it")
    valid_before = now + lifetime
    if grant.until is not None:
        valid_before = min(valid_before, grant.until)
    serial = next_serial(gateway.serial)
    work = Path(tempfile.mkdtemp(prefix=".issue-", dir=gateway.root))
    try:
        public = work / "key.pub"
        public.write_text(key + "\n")
        certificate = keygen.sign(
            gateway.user_ca,
            public,
            key_id=client_key_id(user, site, target, valid_before),
            principals=[via_principal(site), target_principal(site, target)],
            validity=f"{_stamp(now - SKEW)}:{_stamp(valid_before)}",
            serial=serial,
        )
        kind, blob = certificate.read_text().split()[:2]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    audit.record(
        gateway.audit, "issued", serial=serial, valid_before=valid_before.isoformat(), **where
    )
    return Issued(f"{kind} {blob}", serial, valid_before)


def client_key_id(user: str, site: str, target: str, valid_before: datetime) -> str:
    """USER@SITE/TARGET@END: the relay reads a session's user, target and end of validity from
    the key id sshd logs, which only the CA could have written."""
    return f"{user}@{site}/{target}@{_stamp(valid_before)}"


def parse_client_key_id(key_id: str) -> tuple[str, str, str, datetime] | None:
    """The user, site, target and end of validity a client certificate's key id names."""
    found = re.fullmatch(r"([a-z0-9_-]+)@([a-z0-9_-]+)/([a-z0-9_-]+)@(\d{14})Z", key_id)
    if found is None:
        return None
    end = datetime.strptime(found[4], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    return found[1], found[2], found[3], end


def _stamp(moment: datetime) -> str:
    """A time as ssh-keygen -V reads it, in UTC."""
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%SZ")


def issue_for(
    gateway: Gateway, user: str, site: str, target: str, *, relay: str | None = None
) -> Issued:
    """A certificate for the key the policy names ``user`` with (the key they logged in to
    ``relay`` with: its authorized_keys line asks for that user only)."""
    known = policy.load(gateway.policy).users.get(user)
    if known is None:
        audit.record(gateway.audit, "refused", reason="unknown user", user=user, site=site,
                     target=target, relay=relay)  # fmt: skip
        raise AccessRefused(f"access to {site}/{target} refused: no user {user}")
    return issue(gateway, user, known.key, site, target, relay=relay)


def revoke_issued(
    gateway: Gateway, user: str, site: str | None = None, target: str | None = None
) -> list[int]:
    """Put the certificates still in date issued to ``user`` (for ``site``/``target`` only, if
    named) into the revocation list, after the policy has taken their access away: relays then
    refuse them at the login, not only cut their sessions, and a client holding one (a
    reconnect keeps its certificate) asks a signer again and is told. The serials, from the
    audit log's issuances."""
    now = datetime.now(UTC)
    serials = []
    for line in audit.history(gateway.audit):
        if line.get("event") != "issued" or line.get("user") != user:
            continue
        if site is not None and (line.get("site"), line.get("target")) != (site, target):
            continue
        serial, until = line.get("serial"), line.get("valid_before")
        try:
            valid_before = datetime.fromisoformat(until) if isinstance(until, str) else None
        except ValueError:
            continue
        if isinstance(serial, int) and valid_before is not None and valid_before > now:
            serials.append(serial)
    if serials:
        for ca in cas.trusted_public_files(gateway.root, "user"):
            keygen.revoke(gateway.revoked, ca, serials)
    return serials
