"""Issuing certificates: only for a live grant, only for the user's own key, for minutes and
never past the grant; every issuance and refusal in the audit log."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tether.gateway import audit, enrol, keygen, layout, policy
from tether.errors import AccessRefused
from tether.gateway.signer import issue, parse_client_key_id, revoke_issued
from tether.spec import Endpoint


@pytest.fixture
def gateway(tmp_path: Path) -> layout.Gateway:
    gateway = layout.init(tmp_path / "gw")
    enrol.add_site(gateway, "lab", [Endpoint("relay.example", 2222)])
    return gateway


def user_key(tmp_path: Path, name: str) -> str:
    keygen.generate(tmp_path / name, name)
    return (tmp_path / f"{name}.pub").read_text().strip()


def shown(certificate: str, tmp_path: Path) -> str:
    path = tmp_path / "shown-cert.pub"
    path.write_text(certificate + "\n")
    return subprocess.run(
        ["ssh-keygen", "-L", "-f", str(path)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TZ": "UTC"},  # it prints times in local time
    ).stdout


def audit_lines(gateway: layout.Gateway) -> list[dict[str, object]]:
    return [json.loads(line) for line in gateway.audit.read_text().splitlines()]


def test_a_grant_gets_a_certificate_for_its_one_target(
    gateway: layout.Gateway, tmp_path: Path
) -> None:
    key = user_key(tmp_path, "alice")
    policy.add_user(gateway.policy, "alice", key)
    policy.grant(gateway.policy, "alice", "lab", "db", None)
    now = datetime.now(UTC)
    issued = issue(gateway, "alice", key, "lab", "db", now=now)
    text = shown(issued.certificate, tmp_path)
    assert text.split("Principals:")[1].split("Critical")[0].split() == ["via:lab", "target:lab/db"]
    end = f"{issued.valid_before:%Y%m%d%H%M%S}Z"
    assert f'Key ID: "alice@lab/db@{end}"' in text and f"Serial: {issued.serial}" in text
    assert parse_client_key_id(f"alice@lab/db@{end}") == (
        "alice",
        "lab",
        "db",
        issued.valid_before.replace(microsecond=0),
    )
    assert issued.valid_before == now + timedelta(minutes=5)
    assert issued.certificate.split()[1] != key.split()[1]
    (line,) = audit_lines(gateway)
    assert line["event"] == "issued" and line["serial"] == issued.serial
    assert line["key"] == audit.fingerprint(key) and line["target"] == "db"
    fingerprint = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(tmp_path / "alice.pub")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[1]
    assert audit.fingerprint(key) == fingerprint


def test_a_grant_ending_soon_bounds_the_certificate(
    gateway: layout.Gateway, tmp_path: Path
) -> None:
    key = user_key(tmp_path, "alice")
    policy.add_user(gateway.policy, "alice", key)
    now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    policy.grant(gateway.policy, "alice", "lab", "db", now + timedelta(minutes=2))
    issued = issue(gateway, "alice", key, "lab", "db", now=now)
    assert issued.valid_before == now + timedelta(minutes=2)
    valid = shown(issued.certificate, tmp_path).split("Valid:")[1].splitlines()[0]
    assert valid.strip() == "from 2030-01-01T11:59:00 to 2030-01-01T12:02:00"


@pytest.mark.parametrize("case", ["no grant", "other target", "expired", "other key", "stranger"])
def test_no_certificate_without_a_live_grant_for_this_key(
    gateway: layout.Gateway, tmp_path: Path, case: str
) -> None:
    key = user_key(tmp_path, "alice")
    policy.add_user(gateway.policy, "alice", key)
    now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    if case != "no grant":
        target = "web" if case == "other target" else "db"
        until = now - timedelta(seconds=1) if case == "expired" else None
        policy.grant(gateway.policy, "alice", "lab", target, until)
    asked = user_key(tmp_path, "mallory") if case == "other key" else key
    user = "stranger" if case == "stranger" else "alice"
    with pytest.raises(AccessRefused):
        issue(gateway, user, asked, "lab", "db", now=now)
    (line,) = audit_lines(gateway)
    assert line["event"] == "refused" and line["user"] == user


def revoked(gateway: layout.Gateway, certificate: str, tmp_path: Path) -> bool:
    """Whether the gateway's revocation list revokes ``certificate`` (as sshd would ask)."""
    path = tmp_path / "asked-cert.pub"
    path.write_text(certificate + "\n")
    done = subprocess.run(
        ["ssh-keygen", "-Q", "-f", str(gateway.revoked), str(path)], capture_output=True
    )
    return done.returncode != 0


def test_a_revoke_puts_the_certificates_still_in_date_in_the_revocation_list(
    gateway: layout.Gateway, tmp_path: Path
) -> None:
    alice, bob = user_key(tmp_path, "alice"), user_key(tmp_path, "bob")
    policy.add_user(gateway.policy, "alice", alice)
    policy.add_user(gateway.policy, "bob", bob)
    for user, target in (("alice", "echo"), ("alice", "db"), ("bob", "echo")):
        policy.grant(gateway.policy, user, "lab", target, None)
    old = issue(gateway, "alice", alice, "lab", "echo", now=datetime.now(UTC) - timedelta(hours=1))
    echo = issue(gateway, "alice", alice, "lab", "echo")
    db = issue(gateway, "alice", alice, "lab", "db")
    others = issue(gateway, "bob", bob, "lab", "echo")
    policy.revoke(gateway.policy, "alice", "lab", "echo")
    # Only alice's lab/echo certificate still in date: the expired one needs no entry.
    assert revoke_issued(gateway, "alice", "lab", "echo") == [echo.serial]
    assert revoked(gateway, echo.certificate, tmp_path)
    assert not revoked(gateway, db.certificate, tmp_path)
    assert not revoked(gateway, others.certificate, tmp_path)
    assert old.serial not in revoke_issued(gateway, "alice")
    # A user removed: every certificate of theirs still in date.
    policy.remove_user(gateway.policy, "alice")
    assert sorted(revoke_issued(gateway, "alice")) == sorted([echo.serial, db.serial])
    assert revoked(gateway, db.certificate, tmp_path)
