"""The gateway's whole path with tether's generated configs and stock OpenSSH: a client's
session runs through the relay, over the agent's outbound `ssh -R`, end to end to the site's
sshd, which opens only the target the client's certificate names."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.gateway import Relay, agent_link, certified, gateway_sshd, running_relay
from tests.support.servers import EchoServer, free_port
from tests.support.strict_dirs import strict_tmp
from tether.gateway import keygen, policy
from tether.gateway.names import site_host_alias, target_principal
from tether.gateway.signer import issue
from tether.gateway.sshdconfig import site_principals
from tether.spec import Endpoint


@dataclass
class Site:
    relay: Relay
    sshd_port: int

    def client_argv(self, key: Path, target: str) -> list[str]:
        """The client's inner session to the site's sshd, carried through the relay by a
        ProxyCommand (tether writes it as a ProxyJump in a generated config), opening
        ``target``."""
        relay = self.relay
        hop = [*relay.argv(key), "-W", f"127.0.0.1:{relay.site_port}", "127.0.0.1"]
        inner = relay.argv(key, alias=site_host_alias("lab"))
        return [*inner, "-o", f"ProxyCommand={shlex.join(hop)}", "-W", target, "site"]


@pytest.fixture
def site(echo_server: EchoServer) -> Iterator[Site]:
    """Relay, site sshd (targets: echo = the echo server) and the agent's `ssh -R` between."""
    with strict_tmp() as work, running_relay(work) as relay:
        gateway = relay.gateway
        host_key = keygen.generate(work / "site_host", "site")
        certificate = keygen.sign(
            gateway.host_ca,
            work / "site_host.pub",
            key_id="site-lab",
            principals=[site_host_alias("lab")],
            validity="+1h",
            serial=3,
            host=True,
        )
        port = free_port()
        targets = {"echo": Endpoint("127.0.0.1", echo_server.port)}
        with gateway_sshd(
            work,
            "site",
            port,
            host_key,
            certificate,
            Path(f"{gateway.user_ca}.pub"),
            site_principals("lab", targets),
        ):
            agent = certified(relay, "agent", ["site:lab"])
            with agent_link(relay, agent, f"127.0.0.1:{port}"):
                yield Site(relay, port)


def test_a_client_reaches_its_target_end_to_end(site: Site, echo_server: EchoServer) -> None:
    client = certified(site.relay, "client", ["via:lab", target_principal("lab", "echo")])
    done = subprocess.run(
        site.client_argv(client, echo_server.address),
        input="through the gateway\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.stdout == "through the gateway\n", done.stderr
    # The relay saw a session that opened the site's endpoint, and nothing of the target.
    relay_log = (site.relay.work / "relay.log").read_text()
    site_log = (site.relay.work / "site.log").read_text()
    assert "ID client (serial 7)" in relay_log and "ID client (serial 7)" in site_log


def test_a_certificate_opens_its_one_target_only(site: Site, echo_server: EchoServer) -> None:
    client = certified(site.relay, "client", ["via:lab", target_principal("lab", "echo")])
    elsewhere = f"127.0.0.1:{site.sshd_port}"  # reachable from the site, not granted
    done = subprocess.run(
        site.client_argv(client, elsewhere), input="x", capture_output=True, text=True, timeout=30
    )
    assert done.stdout == "" and "administratively prohibited" in done.stderr, done.stderr
    # A target the site does not serve: the site refuses the login itself.
    stranger = certified(site.relay, "stranger", ["via:lab", target_principal("lab", "other")])
    done = subprocess.run(
        site.client_argv(stranger, echo_server.address),
        input="x",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.stdout == "" and "Permission denied" in done.stderr, done.stderr


def test_a_site_host_key_cannot_pass_for_another_site(site: Site, echo_server: EchoServer) -> None:
    client = certified(site.relay, "client", ["via:lab", target_principal("lab", "echo")])
    argv = site.client_argv(client, echo_server.address)
    argv[argv.index(f"HostKeyAlias={site_host_alias('lab')}")] = (
        f"HostKeyAlias={site_host_alias('edge')}"
    )
    done = subprocess.run(argv, input="x", capture_output=True, text=True, timeout=30)
    assert done.returncode == 255 and "Host key verification failed" in done.stderr, done.stderr


def test_a_certificate_from_the_signer_reaches_the_target(
    site: Site, echo_server: EchoServer
) -> None:
    gateway = site.relay.gateway
    key = keygen.generate(site.relay.work / "alice", "alice")
    public = Path(f"{key}.pub").read_text()
    policy.add_site(gateway.policy, "lab", port=site.relay.site_port, serial=0)
    policy.add_user(gateway.policy, "alice", public)
    policy.grant(gateway.policy, "alice", "lab", "echo", None)
    issued = issue(gateway, "alice", public, "lab", "echo")
    Path(f"{key}-cert.pub").write_text(issued.certificate + "\n")
    done = subprocess.run(
        site.client_argv(key, echo_server.address),
        input="signed\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.stdout == "signed\n", done.stderr
    site_log = (site.relay.work / "site.log").read_text()
    assert (
        f"ID alice@lab/echo@{issued.valid_before:%Y%m%d%H%M%S}Z (serial {issued.serial})"
        in site_log
    )
