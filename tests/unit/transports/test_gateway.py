"""The gw:// transport's own parts: the signer's answer read as a peer's words, and the config
it writes."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tether.errors import (
    AccessRefused,
    AuthenticationError,
    TetherError,
    TransportUnreachableError,
)
from tether.spec import Endpoint, SshOptions, Via
from tether.transports import gateway as gateway_module
from tether.transports.gateway import Answer, GatewayTransport
from tether.transports.relayorder import Candidate

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


# -- several relays, asked in turn ---------------------------------------------------------------
class Signers:
    """Stand-ins for the relays' signers, by address: what each answers, and who was asked."""

    def __init__(self, answers: dict[str, TetherError | None]) -> None:
        self.answers = answers
        self.asked: list[str] = []
        self.reply: dict[str, object] = GOOD

    async def __call__(self, relay: Candidate, config: Path, identities: list[str]) -> Answer:
        self.asked.append(relay.address.host)
        failure = self.answers.get(relay.address.host)
        if failure is None:
            return Answer(json.dumps(self.reply))
        if isinstance(failure, HangingError):
            await asyncio.sleep(3600)
        raise failure


class HangingError(TetherError):
    """A signer that never answers."""


async def addresses(host: str, port: int) -> list[str]:
    return ["10.0.0.1", "10.0.0.2"] if host == "relays.example" else [host]


def several(tmp_path: Path, via: str, signers: Signers) -> GatewayTransport:
    transport = GatewayTransport(
        Via.parse(via), SshOptions(known_hosts=str(tmp_path / "kh")), "lab", "db",
        resolver=addresses,
    )  # fmt: skip
    transport._sign = signers  # type: ignore[method-assign]
    return transport


def relay_in(config: Path) -> tuple[str, str]:
    """The HostName and Port the master's config gives tether-relay."""
    block = config.read_text().split("Host tether-relay\n", 1)[1].split("Host ", 1)[0]
    settings = dict(line.split(None, 1) for line in block.strip().splitlines())
    return settings["HostName"], settings["Port"]


async def test_a_relay_that_fails_is_passed_over_and_asked_last_next_time(
    tmp_path: Path,
) -> None:
    unreachable = TransportUnreachableError("cannot reach SSH server gw://10.0.0.1: refused")
    signers = Signers({"10.0.0.1": unreachable})
    transport = several(tmp_path, "gw://relays.example,10.0.0.3", signers)
    config = await transport.prepare(tmp_path)
    assert signers.asked == ["10.0.0.1", "10.0.0.2"]
    assert relay_in(config) == ('"10.0.0.2"', "22")
    assert await transport.server_address() == ("10.0.0.2", 22)
    # The next connection (a reconnect) asks the relay that signed first, the failed one last.
    signers.asked.clear()
    signers.answers["10.0.0.2"] = TransportUnreachableError("relay gw://10.0.0.2: not linked")
    (tmp_path / "again").mkdir()
    config = await transport.prepare(tmp_path / "again")
    assert signers.asked == ["10.0.0.2", "10.0.0.3"]
    assert relay_in(config) == ('"10.0.0.3"', "22")


async def test_a_refusal_of_access_is_final(tmp_path: Path) -> None:
    signers = Signers({"10.0.0.1": AccessRefused("access to lab/db refused: no grant")})
    transport = several(tmp_path, "gw://10.0.0.1,10.0.0.2", signers)
    with pytest.raises(AccessRefused, match="no grant"):
        await transport.prepare(tmp_path)
    assert signers.asked == ["10.0.0.1"]


async def test_when_every_relay_fails_one_line_names_them_all(tmp_path: Path) -> None:
    signers = Signers(
        {
            "10.0.0.1": TransportUnreachableError("cannot reach SSH server gw://10.0.0.1: refused"),
            "10.0.0.2": AuthenticationError("gw://10.0.0.2: Permission denied (publickey)"),
        }
    )
    transport = several(tmp_path, "gw://10.0.0.1,10.0.0.2", signers)
    with pytest.raises(AuthenticationError) as failed:  # the relay that answered says more
        await transport.prepare(tmp_path)
    message = failed.value.message
    assert message == (
        "no relay signed for lab/db: cannot reach SSH server gw://10.0.0.1: refused; "
        "gw://10.0.0.2: Permission denied (publickey)"
    )
    assert failed.value.exit_code == 5 and str(failed.value) == message


async def test_a_relay_that_hangs_is_passed_over_in_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gateway_module, "RELAY_TIMEOUT", 0.05)
    signers = Signers({"10.0.0.1": HangingError("")})
    transport = several(tmp_path, "gw://10.0.0.1,10.0.0.2", signers)
    config = await transport.prepare(tmp_path)
    assert relay_in(config) == ('"10.0.0.2"', "22")
    assert [c.address.host for c in transport.relays.ordered()] == ["10.0.0.2", "10.0.0.1"]


# -- a reconnect keeps its certificate ------------------------------------------------------------
def lasting(minutes: float) -> dict[str, object]:
    until = datetime.now(UTC) + timedelta(minutes=minutes)
    return {**GOOD, "valid_before": until.isoformat()}


@pytest.mark.parametrize("value", [None, "soon", "2026-12-06T10:00:00", 1765000000])
def test_an_answer_without_a_zoned_end_is_never_kept(value: object) -> None:
    answer = Answer(json.dumps({**GOOD, "valid_before": value}))
    assert answer.valid_before is None and not answer.lasts(0)


async def test_a_reconnect_keeps_the_certificate_of_the_master_that_connected(
    tmp_path: Path,
) -> None:
    signers = Signers({})
    signers.reply = lasting(5)
    transport = several(tmp_path, "gw://10.0.0.1,10.0.0.2", signers)
    await transport.prepare(tmp_path)
    assert signers.asked == ["10.0.0.1"]
    transport.attempt_ended(None)  # the master is up
    transport.relays.failed(transport.relays.ordered()[0])  # then the relay in use is lost
    (tmp_path / "again").mkdir()
    config = await transport.prepare(tmp_path / "again")
    assert signers.asked == ["10.0.0.1"]  # no signer asked: the certificate is the same
    assert (tmp_path / "again" / "id-cert.pub").read_text() == CERT + "\n"
    assert relay_in(config) == ('"10.0.0.2"', "22")  # through the next relay in order
    # An attempt that timed out says nothing against the certificate: kept again.
    transport.attempt_ended(TimeoutError())
    (tmp_path / "third").mkdir()
    await transport.prepare(tmp_path / "third")
    assert signers.asked == ["10.0.0.1"]
    # Any other failure drops it (a relay refusing a revoked certificate only closes the
    # connection): the next attempt asks a signer (the healthy first).
    transport.attempt_ended(TransportUnreachableError("Connection closed by UNKNOWN port 65535"))
    (tmp_path / "fourth").mkdir()
    await transport.prepare(tmp_path / "fourth")
    assert signers.asked == ["10.0.0.1", "10.0.0.2"]


async def test_a_certificate_serves_two_masters_at_most(tmp_path: Path) -> None:
    """A session cut while its relay stays up (its access ended, say) is reconnected with the
    kept certificate once; cut again, the next attempt asks a signer."""
    signers = Signers({})
    signers.reply = lasting(5)
    transport = several(tmp_path, "gw://10.0.0.1", signers)
    for attempt in range(3):
        (tmp_path / str(attempt)).mkdir()
        await transport.prepare(tmp_path / str(attempt))
        transport.attempt_ended(None)
    assert signers.asked == ["10.0.0.1", "10.0.0.1"]  # signed, kept once, signed again


async def test_a_certificate_near_its_end_is_not_kept(tmp_path: Path) -> None:
    signers = Signers({})
    signers.reply = lasting(0.5)
    transport = several(tmp_path, "gw://10.0.0.1,10.0.0.2", signers)
    await transport.prepare(tmp_path)
    transport.attempt_ended(None)
    (tmp_path / "again").mkdir()
    await transport.prepare(tmp_path / "again")
    assert signers.asked == ["10.0.0.1", "10.0.0.1"]
