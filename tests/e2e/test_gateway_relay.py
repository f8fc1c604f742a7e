"""A relay's sshd, as tether generates it, against real OpenSSH clients: each certificate can do
exactly what its principal says and nothing else, and clients check the relay's host key
through the gateway's host CA."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gateway import Relay, agent_link, certified, listens, running_relay
from tests.support.servers import EchoServer, free_port
from tests.support.strict_dirs import strict_tmp
from tests.support.waiting import wait_until_sync
from tether.gateway import enrol, keygen, layout
from tether.gateway.names import RELAY_PRINCIPAL
from tether.spec import Endpoint


@pytest.fixture
def relay() -> Iterator[Relay]:
    with strict_tmp() as work, running_relay(work) as running:
        yield running


@pytest.fixture
def agent_serving(relay: Relay, echo_server: EchoServer) -> Iterator[Path]:
    """An agent of site lab listening on its endpoint, forwarding to the echo server."""
    agent = certified(relay, "agent", ["site:lab"])
    with agent_link(relay, agent, echo_server.address):
        yield agent


def test_a_client_reaches_its_site_through_the_agent(relay: Relay, agent_serving: Path) -> None:
    client = certified(relay, "client", ["via:lab"])
    done = relay.ssh(client, "-W", f"127.0.0.1:{relay.site_port}", "127.0.0.1", stdin="hello\n")
    assert done.stdout == "hello\n", done.stderr


def test_a_client_opens_nothing_but_its_sites_endpoint(
    relay: Relay, agent_serving: Path, echo_server: EchoServer
) -> None:
    client = certified(relay, "client", ["via:lab"])
    for target in (echo_server.address, f"127.0.0.1:{relay.port}"):
        done = relay.ssh(client, "-W", target, "127.0.0.1", stdin="hello\n")
        assert done.returncode != 0 and done.stdout == "", target
        assert "administratively prohibited" in done.stderr, done.stderr


def test_an_agent_listens_nowhere_else_and_opens_nothing(
    relay: Relay, echo_server: EchoServer
) -> None:
    agent = certified(relay, "agent", ["site:lab"])
    other = free_port()
    done = relay.ssh(agent, "-N", "-R", f"127.0.0.1:{other}:{echo_server.address}", "127.0.0.1")
    assert done.returncode != 0 and not listens(other), done.stderr
    done = relay.ssh(agent, "-W", echo_server.address, "127.0.0.1", stdin="x")
    assert done.returncode != 0 and done.stdout == ""


def test_another_sites_agent_cannot_take_the_endpoint(
    relay: Relay, echo_server: EchoServer
) -> None:
    intruder = certified(relay, "intruder", ["site:edge"])
    forward = f"127.0.0.1:{relay.site_port}:{echo_server.address}"
    done = relay.ssh(intruder, "-N", "-R", forward, "127.0.0.1")
    assert done.returncode != 0 and not listens(relay.site_port), done.stderr


@pytest.mark.parametrize("args", [["true"], ["-t", "sh"]], ids=["command", "pty"])
def test_no_certificate_gets_a_shell(relay: Relay, args: list[str]) -> None:
    for key in (certified(relay, "agent", ["site:lab"]), certified(relay, "client", ["via:lab"])):
        done = relay.ssh(key, *args, "127.0.0.1")
        assert done.returncode != 0, (key, done.stdout)


def test_refused_without_a_known_principal_or_in_date_certificate(relay: Relay) -> None:
    for key in (
        certified(relay, "nobody", ["site:other", "lab"]),
        certified(relay, "expired", ["via:lab"], validity="-10m:-5m"),
    ):
        done = relay.ssh(key, "-W", f"127.0.0.1:{relay.site_port}", "127.0.0.1")
        assert "Permission denied" in done.stderr, (key, done.stderr)
    plain = keygen.generate(relay.work / "plain", "plain")  # a key with no certificate
    done = relay.ssh(plain, "-W", f"127.0.0.1:{relay.site_port}", "127.0.0.1")
    assert "Permission denied" in done.stderr, done.stderr


def test_a_relay_outside_the_gateway_is_not_trusted(relay: Relay, tmp_path: Path) -> None:
    """The same address with another host CA's certificate: refused, never trusted on first use."""
    other = layout.init(tmp_path / "other")
    ca = Path(f"{other.host_ca}.pub").read_text().strip()
    relay.known_hosts.write_text(f"@cert-authority {RELAY_PRINCIPAL} {ca}\n")
    client = certified(relay, "client", ["via:lab"])
    done = relay.ssh(client, "-W", f"127.0.0.1:{relay.site_port}", "127.0.0.1")
    assert done.returncode == 255 and "Host key verification failed" in done.stderr, done.stderr


def test_a_removed_sites_agent_is_refused(relay: Relay, echo_server: EchoServer) -> None:
    """`site remove` revokes the agent's certificate in the list the relay reads at each login."""
    enrolled = enrol.add_site(
        relay.gateway, "lab", [Endpoint("127.0.0.1", relay.port)], port=relay.site_port
    )
    data = tomllib.loads(enrolled.path.read_text())
    key = relay.work / "lab-agent"
    key.write_text(data["agent_key"])
    key.chmod(0o600)
    Path(f"{key}-cert.pub").write_text(data["agent_certificate"] + "\n")
    with agent_link(relay, key, echo_server.address):
        pass  # the enrolled agent may listen on its endpoint
    wait_until_sync(lambda: not listens(relay.site_port), "the endpoint to close")
    enrol.remove_site(relay.gateway, "lab")
    forward = f"127.0.0.1:{relay.site_port}:{echo_server.address}"
    refused = relay.ssh(key, "-N", "-R", forward, "127.0.0.1")
    assert refused.returncode == 255 and "Permission denied" in refused.stderr, refused.stderr
