"""Enrolling and removing a site: one private file with what the site needs, and a removal that
revokes the agent's certificate."""

from __future__ import annotations

import os
import re
import pwd
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

from tether.errors import ConfigError, UsageError
from tether.gateway.enrolment import read_targets
from tether.gateway import enrol, layout, policy
from tether.gateway.names import site_host_alias
from tether.spec import Endpoint

RELAY = Endpoint("relay.example", 2222)


def certificate_says(text: str, tmp_path: Path) -> str:
    path = tmp_path / "shown-cert.pub"
    path.write_text(text + "\n")
    return subprocess.run(
        ["ssh-keygen", "-L", "-f", str(path)], capture_output=True, text=True, check=True
    ).stdout


def test_an_enrolment_holds_what_a_site_needs(tmp_path: Path) -> None:
    gateway = layout.init(tmp_path / "gw")
    enrolled = enrol.add_site(gateway, "lab", [RELAY])
    assert stat.S_IMODE(os.stat(enrolled.path).st_mode) == 0o600
    data = tomllib.loads(enrolled.path.read_text())
    assert (data["site"], data["relays"], data["endpoint_port"]) == (
        "lab",
        ["relay.example:2222"],
        enrol.FIRST_ENDPOINT_PORT,
    )
    assert data["agent_key"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    # The agent logs in to the relays as the account that runs them: by default the enroller's.
    assert data["relay_account"] == pwd.getpwuid(os.getuid()).pw_name
    other = enrol.add_site(gateway, "edge", [RELAY], account="tether-relay")
    assert tomllib.loads(other.path.read_text())["relay_account"] == "tether-relay"
    with pytest.raises(UsageError):
        enrol.add_site(gateway, "bad", [RELAY], account="root\nAllowUsers x")
    agent = certificate_says(data["agent_certificate"], tmp_path)
    assert "user certificate" in agent and agent.split("Principals:")[1].split()[0] == "site:lab"
    host = certificate_says(data["host_certificate"], tmp_path)
    assert "host certificate" in host
    assert host.split("Principals:")[1].split()[0] == site_host_alias("lab")
    assert [ca.split()[1] for ca in data["host_ca"]] == [
        Path(f"{gateway.host_ca}.pub").read_text().split()[1]
    ]
    site = policy.load(gateway.policy).sites["lab"]
    assert site.port == enrol.FIRST_ENDPOINT_PORT and f"Serial: {site.serial}" in agent
    # No key is left behind in the gateway's directory, but the enrolment's.
    assert [p.name for p in gateway.root.iterdir() if p.name.startswith(".enrol-")] == []


def test_sites_get_their_own_ports_and_one_enrolment_each(tmp_path: Path) -> None:
    gateway = layout.init(tmp_path / "gw")
    first = enrol.add_site(gateway, "lab", [RELAY])
    second = enrol.add_site(gateway, "edge", [RELAY])
    assert first.port != second.port
    with pytest.raises(UsageError, match="enrolled already"):
        enrol.add_site(gateway, "lab", [RELAY])
    with pytest.raises(UsageError, match="not a name"):
        enrol.add_site(gateway, "../x", [RELAY])


def test_removing_a_site_revokes_its_agent(tmp_path: Path) -> None:
    gateway = layout.init(tmp_path / "gw")
    enrolled = enrol.add_site(gateway, "lab", [RELAY])
    certificate = tmp_path / "agent-cert.pub"
    certificate.write_text(tomllib.loads(enrolled.path.read_text())["agent_certificate"] + "\n")

    def revoked() -> bool:
        checked = subprocess.run(
            ["ssh-keygen", "-Q", "-f", str(gateway.revoked), str(certificate)],
            capture_output=True,
            text=True,
        )
        return "REVOKED" in checked.stdout

    assert not revoked()
    enrol.remove_site(gateway, "lab")
    assert revoked()
    assert not enrolled.path.exists() and "lab" not in policy.load(gateway.policy).sites
    with pytest.raises(UsageError, match="not enrolled"):
        enrol.remove_site(gateway, "lab")


def test_targets_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "targets.toml"
    path.write_text('[targets]\ndb = "10.0.0.5:5432"\nweb = "[::1]:80"\n')
    assert read_targets(path) == {"db": Endpoint("10.0.0.5", 5432), "web": Endpoint("::1", 80)}
    for text, key in (
        ('[targets]\nDB = "h:1"\n', "targets.DB"),
        ('[targets]\ndb = "h"\n', "targets.db"),
        ("[targets]\ndb = 5432\n", "targets.db"),
        ('db = "h:1"\n', "one [targets] table"),
        ('[targets]\ndb = "h:1"\n[other]\n', "one [targets] table"),
        ("[targets\n", "not TOML"),
    ):
        path.write_text(text)
        with pytest.raises(ConfigError, match=re.escape(key)):
            read_targets(path)
    with pytest.raises(ConfigError, match="no such targets file"):
        read_targets(tmp_path / "missing.toml")
