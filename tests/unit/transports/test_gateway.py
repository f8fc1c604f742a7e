"""The gw:// transport's own parts: the signer's answer read as a peer's words, and the config
it writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tether.errors import TransportUnreachableError
from tether.spec import Endpoint, SshOptions, Via
from tether.transports.gateway import Answer, GatewayTransport

CERT = "ssh-ed25519-cert-v01@openssh.com AAAAIHNzaC1lZDI1NTE5LWNlcnQtdjAxQG9wZW5zc2guY29t"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBo="
GOOD = {"certificate": CERT, "key": KEY, "port": 42001, "account": "svc", "target": "db:5432"}


def test_a_good_answer() -> None:
    answer = Answer(json.dumps(GOOD))
    assert (answer.port, answer.account, answer.target) == (42001, "svc", Endpoint("db", 5432))


@pytest.mark.parametrize(
    "changes",
    [
        {"certificate": CERT + "\nHost *\n  ProxyCommand sh"},
        {"certificate": "ssh-ed25519 AAAA"},
        {"key": KEY + " comment"},
        {"port": 0},
        {"port": "42001"},
        {"port": True},
        {"account": "svc\n  ProxyCommand sh"},
        {"account": "-oProxyCommand=sh"},
        {"target": "db"},
        {"target": 'db:1"\nHost *'},
        {"certificate": None},
    ],
)
def test_a_hostile_answer_is_refused(changes: dict[str, object]) -> None:
    with pytest.raises(TransportUnreachableError):
        Answer(json.dumps({**GOOD, **changes}))
    with pytest.raises(TransportUnreachableError):
        Answer("not json")


def test_the_config_names_the_relay_and_the_site_by_their_certificates_names(
    tmp_path: Path,
) -> None:
    transport = GatewayTransport(
        Via.parse("gw://ops@relay.example:2222"),
        SshOptions(known_hosts=str(tmp_path / "kh")),
        "lab",
        "db",
    )
    argv = transport.ssh_argv(tmp_path / "config", tmp_path / "control")
    # The master logs in to the site, never with the relay's port or user.
    assert argv[-2:] == ["--", "lab.site.tether"] and "-p" not in argv and "-l" not in argv
    assert transport.label == "gw://ops@relay.example:2222 lab/db"
