"""A CA's rollover (`tether gateway ca add|use|retire`): which keys are trusted and which signs
at each step, what each step refuses, and what the gateway's files carry meanwhile."""

from __future__ import annotations

import os
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from tether.cli.app import cli
from tether.errors import ConfigError, UsageError
from tether.gateway import cas, enrol, layout, relaybundle, signer
from tether.gateway.enrolment import Enrolment
from tether.gateway.feed import State, Trusted
from tether.gateway.policy import add_user, grant
from tether.spec import Endpoint

RELAY = Endpoint("relay.example.com", 2222)


def public_key(path: Path) -> str:
    return " ".join(Path(f"{path}.pub").read_text().split()[:2])


def signed_by(certificate: Path) -> str:
    """The SHA-256 fingerprint of the CA that signed ``certificate``."""
    shown = subprocess.run(
        ["ssh-keygen", "-L", "-f", str(certificate)], capture_output=True, text=True, check=True
    ).stdout
    return shown.split("Signing CA: ")[1].split()[1]


def fingerprint(key: Path) -> str:
    shown = subprocess.run(
        ["ssh-keygen", "-l", "-f", f"{key}.pub"], capture_output=True, text=True, check=True
    ).stdout
    return shown.split()[1]


@pytest.mark.parametrize("kind", cas.KINDS)
def test_add_trusts_both_use_signs_with_the_new_retire_drops_the_old(
    tmp_path: Path, kind: cas.Kind
) -> None:
    gateway = layout.init(tmp_path / "gw")
    old = cas.signing_key(gateway.root, kind)
    assert gateway.trusted(kind) == [public_key(old)]

    new = cas.add(gateway.root, kind)
    assert new == gateway.root / "ca" / f"{kind}_ca-2"
    assert stat.S_IMODE(os.stat(new).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(gateway.root / "ca" / cas.STATE).st_mode) == 0o600
    assert cas.signing_key(gateway.root, kind) == old  # trusted first, not yet signing
    assert gateway.trusted(kind) == [public_key(old), public_key(new)]
    other: cas.Kind = "host" if kind == "user" else "user"
    assert len(gateway.trusted(other)) == 1  # one CA's rollover leaves the other alone

    assert cas.use(gateway.root, kind) == new
    assert cas.signing_key(gateway.root, kind) == new
    assert gateway.trusted(kind) == [public_key(old), public_key(new)]

    assert cas.retire(gateway.root, kind) == old
    assert gateway.trusted(kind) == [public_key(new)]
    assert not old.exists() and not Path(f"{old}.pub").exists()
    # A gateway whose first CA is retired is a gateway still, and rolls over again.
    layout.Gateway.existing(gateway.root)
    assert cas.add(gateway.root, kind) == gateway.root / "ca" / f"{kind}_ca-3"


def test_each_step_refuses_out_of_order(tmp_path: Path) -> None:
    root = layout.init(tmp_path / "gw").root
    with pytest.raises(UsageError, match="no new user CA to sign with"):
        cas.use(root, "user")
    with pytest.raises(UsageError, match="no old user CA to retire"):
        cas.retire(root, "user")
    cas.add(root, "user")
    with pytest.raises(UsageError, match="rollover is under way already"):
        cas.add(root, "user")
    with pytest.raises(UsageError, match="the old user CA signs now: it cannot be retired"):
        cas.retire(root, "user")
    cas.use(root, "user")
    with pytest.raises(UsageError, match="the newest signs already"):
        cas.use(root, "user")
    with pytest.raises(UsageError, match="not a CA"):
        cas.parse_kind("root")


def test_the_cli_refuses_in_one_line(tmp_path: Path) -> None:
    root = layout.init(tmp_path / "gw").root
    done = CliRunner().invoke(cli, ["gateway", "ca", "add", str(root), "user"])
    assert done.exit_code == 0, done.output
    done = CliRunner().invoke(cli, ["gateway", "ca", "retire", str(root), "user"])
    assert done.exit_code == 2
    errors = [line for line in done.output.splitlines() if line.startswith("tether: error:")]
    assert len(errors) == 1 and len(done.output.splitlines()) == 1, done.output
    assert errors[0].startswith("tether: error: the old user CA signs now: it cannot be retired")
    assert "Traceback" not in done.output
    done = CliRunner().invoke(cli, ["gateway", "ca", "use", str(root), "both"])
    assert done.exit_code == 2 and "Usage:" not in done.output


def test_a_state_file_tether_did_not_write_is_one_error(tmp_path: Path) -> None:
    gateway = layout.init(tmp_path / "gw")
    (gateway.root / "ca" / cas.STATE).write_text('{"user": {"signing": 3, "trusted": [1]}}')
    with pytest.raises(ConfigError, match="not a CA state tether wrote"):
        layout.Gateway.existing(gateway.root)


def test_clients_certificates_follow_the_signing_user_ca(tmp_path: Path) -> None:
    gateway = layout.init(tmp_path / "gw")
    key = tmp_path / "alice"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    add_user(gateway.policy, "alice", Path(f"{key}.pub").read_text())
    enrol.add_site(gateway, "lab", [RELAY])
    grant(gateway.policy, "alice", "lab", "db", None)
    old = gateway.user_ca

    def issued() -> str:
        certificate = tmp_path / "issued-cert.pub"
        certificate.write_text(signer.issue_for(gateway, "alice", "lab", "db").certificate)
        return signed_by(certificate)

    new = cas.add(gateway.root, "user")
    assert issued() == fingerprint(old)
    cas.use(gateway.root, "user")
    assert issued() == fingerprint(new)


def test_using_a_new_host_ca_certifies_the_signer_again(tmp_path: Path) -> None:
    gateway = layout.init(tmp_path / "gw")
    old = gateway.host_ca
    assert signed_by(gateway.signer_certificate) == fingerprint(old)
    new = cas.add(gateway.root, "host")
    assert signed_by(gateway.signer_certificate) == fingerprint(old)
    cas.use(gateway.root, "host")
    assert signed_by(gateway.signer_certificate) == fingerprint(new)
    assert stat.S_IMODE(os.stat(gateway.signer_certificate).st_mode) == 0o600


def test_enrolments_bundles_and_the_feed_carry_every_trusted_key(tmp_path: Path) -> None:
    gateway = layout.init(tmp_path / "gw")
    cas.add(gateway.root, "user")
    cas.add(gateway.root, "host")
    users, hosts = tuple(gateway.trusted("user")), tuple(gateway.trusted("host"))
    assert len(users) == len(hosts) == 2

    enrolment = Enrolment.load(enrol.add_site(gateway, "lab", [RELAY]).path)
    assert (enrolment.user_cas, enrolment.host_cas) == (users, hosts)
    bundle = relaybundle.RelayBundle.load(
        relaybundle.add_relay(gateway, "r1", [Endpoint("127.0.0.1", 2201)])
    )
    assert (bundle.user_cas, bundle.host_cas) == (users, hosts)

    state = State.read(gateway)
    assert state.trusted == Trusted(users, hosts)
    assert Trusted.parse(state.message()) == state.trusted
    # A signer older than rollovers sends no keys: the relay keeps its own.
    assert Trusted.parse({"policy": "", "krl": ""}) is None
    assert Trusted.parse({"user_cas": ["ssh-ed25519 nope"], "host_cas": list(hosts)}) is None


def test_an_enrolment_of_one_key_per_ca_is_still_read(tmp_path: Path) -> None:
    gateway = layout.init(tmp_path / "gw")
    path = enrol.add_site(gateway, "lab", [RELAY]).path
    data = tomllib.loads(path.read_text())
    old = path.read_text().replace("format = 2", "format = 1")
    old = old.replace(f'host_ca = ["{data["host_ca"][0]}"]', f'host_ca = "{data["host_ca"][0]}"')
    old = old.replace(f'user_ca = ["{data["user_ca"][0]}"]', f'user_ca = "{data["user_ca"][0]}"')
    assert 'host_ca = "' in old and 'user_ca = "' in old
    path.write_text(old)
    enrolment = Enrolment.load(path)
    assert enrolment.host_cas == tuple(data["host_ca"])
    assert enrolment.user_cas == tuple(data["user_ca"])


def test_removing_a_site_revokes_its_agent_under_either_user_ca(tmp_path: Path) -> None:
    gateway = layout.init(tmp_path / "gw")
    cas.add(gateway.root, "user")
    cas.use(gateway.root, "user")  # its agent's certificate is the new CA's
    path = enrol.add_site(gateway, "lab", [RELAY]).path
    certificate = tmp_path / "agent-cert.pub"
    certificate.write_text(tomllib.loads(path.read_text())["agent_certificate"] + "\n")
    enrol.remove_site(gateway, "lab")
    checked = subprocess.run(
        ["ssh-keygen", "-Q", "-f", str(gateway.revoked), str(certificate)],
        capture_output=True,
        text=True,
    )
    assert "REVOKED" in checked.stdout, checked
