"""Adding a relay to a gateway (`tether gateway relays add`) and removing it, and reading the
bundle a relay runs from (`tether gateway relay BUNDLE`).

A bundle is one private TOML file: the relay's host key and its certificate (principal
``tether-relay``, which clients and agents check), its login key and certificate to the
signers (principal ``relay:NAME``), the signers' addresses and account, and the CAs' public
halves. It holds no CA key: a relay verifies certificates and never issues one. Removing a relay
revokes its login certificate, so no signer takes it again.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.errors import UsageError
from tether.gateway import bundles, keygen, policy
from tether.gateway.bundles import (
    account,
    as_text,
    ca_keys,
    certificate,
    private_key,
    text,
)
from tether.gateway.enrol import revoke_everywhere
from tether.gateway.layout import Gateway
from tether.gateway.names import RELAY_PRINCIPAL, parse_name, relay_principal
from tether.gateway.serials import next_serial
from tether.spec import Endpoint

FORMAT = 2  # 1 held one key per CA, 2 a list of them (two during a CA rollover)
# As an enrolment's: a removed relay's certificates are revoked by serial before their end.
BUNDLE_VALIDITY = "+52w"
MAX_SIGNERS = 16
HEADER = """tether gateway relay bundle of relay {relay}: what the relay needs, and no CA key.
Keep it private (it holds the relay's keys); `tether gateway relays remove` revokes it."""


@dataclass(frozen=True)
class RelayBundle:
    relay: str
    signers: tuple[Endpoint, ...]
    signer_account: str  # the account the signers run as: the relay logs in as it
    host_cas: tuple[str, ...]  # until a signer feeds the CAs it trusts now
    user_cas: tuple[str, ...]
    host_key: str
    host_certificate: str
    login_key: str
    login_certificate: str

    @classmethod
    def load(cls, path: Path) -> RelayBundle:
        return bundles.load(path, "relay bundle", "not a relay bundle", cls._checked)

    @classmethod
    def _checked(cls, data: dict[str, Any]) -> RelayBundle:
        if data.get("format") not in (1, FORMAT) or data.get("kind") != "relay":
            raise UsageError("not a relay bundle this tether reads (format, kind)")
        signers = data.get("signers")
        if not isinstance(signers, list) or not 0 < len(signers) <= MAX_SIGNERS:
            raise UsageError(f"signers: expected a list of 1 to {MAX_SIGNERS} addresses")
        return cls(
            relay=parse_name(text(data, "relay"), what="relay"),
            signers=tuple(Endpoint.parse(as_text(s, "signers"), what="signers") for s in signers),
            signer_account=account(text(data, "signer_account"), "signer_account"),
            host_cas=ca_keys(data, "host_ca"),
            user_cas=ca_keys(data, "user_ca"),
            host_key=private_key(data, "host_key"),
            host_certificate=certificate(data, "host_certificate"),
            login_key=private_key(data, "login_key"),
            login_certificate=certificate(data, "login_certificate"),
        )


def add_relay(
    gateway: Gateway, relay: str, signers: list[Endpoint], *, signer_account: str | None = None
) -> Path:
    """Add ``relay``: its keys and certificates, its bundle (DIR/relays/RELAY.toml, returned).
    It logs in to ``signers`` as ``signer_account`` (by default the account adding it, which
    runs this directory's signer)."""
    parse_name(relay, what="relay")
    signer_account = account(signer_account or pwd.getpwuid(os.getuid()).pw_name, "signer account")
    if not 0 < len(signers) <= MAX_SIGNERS:
        raise UsageError(
            f"a relay needs 1 to {MAX_SIGNERS} signers", hint="give --signer HOST:PORT"
        )
    if relay in policy.load(gateway.policy).relays:
        raise UsageError(f"relay {relay}: added already", hint="remove it first")
    path = gateway.relays / f"{relay}.toml"
    if path.exists() or path.is_symlink():
        raise UsageError(f"{path}: exists already; not overwritten")
    work = Path(tempfile.mkdtemp(prefix=".relay-", dir=gateway.root))  # 0700, on our disk
    try:
        host_serial, login_serial = next_serial(gateway.serial), next_serial(gateway.serial)
        host_key, host_certificate = keygen.certified(
            work / "host",
            f"relay-{relay}",
            gateway.host_ca,
            key_id=f"relay:{relay}",
            principals=[RELAY_PRINCIPAL],
            validity=BUNDLE_VALIDITY,
            serial=host_serial,
            host=True,
        )
        login_key, login_certificate = keygen.certified(
            work / "login",
            f"relay-login-{relay}",
            gateway.user_ca,
            key_id=f"relay:{relay}",
            principals=[relay_principal(relay)],
            validity=BUNDLE_VALIDITY,
            serial=login_serial,
        )
        fields = {
            "format": FORMAT,
            "kind": "relay",
            "relay": relay,
            "signers": [str(signer) for signer in signers],
            "signer_account": signer_account,
            "host_ca": gateway.trusted("host"),
            "user_ca": gateway.trusted("user"),
            "host_key": host_key,
            "host_certificate": host_certificate,
            "login_key": login_key,
            "login_certificate": login_certificate,
        }
        policy.add_relay(gateway.policy, relay, serial=login_serial)
        try:
            bundles.write(path, HEADER.format(relay=relay).splitlines(), fields)
        except BaseException:
            policy.remove_relay(gateway.policy, relay)
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return path


def remove_relay(gateway: Gateway, relay: str) -> None:
    """Revoke ``relay``'s login certificate, drop it from the policy (its signer sessions end
    within a second) and delete its bundle."""
    parse_name(relay, what="relay")
    serial = policy.remove_relay(gateway.policy, relay)
    if serial:
        revoke_everywhere(gateway, serial)
    (gateway.relays / f"{relay}.toml").unlink(missing_ok=True)
    (gateway.status / f"{relay}.json").unlink(missing_ok=True)
