"""The gateway across networks: the client, the relay and the site each in a network of its
own (network namespaces joined by veth pairs), the site reachable by no one, reached through
the agent's outbound link only. Needs root."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.gateway import wait_for_policy
from tests.support.netns import Netns, NetnsEcho
from tests.support.servers import echo_once
from tests.support.sshd_server import require_sshd
from tests.support.strict_dirs import strict_tmp
from tests.support.tether_process import TetherProcess, TetherRunner
from tests.support.waiting import wait_until_sync
from tether.gateway import enrol, keygen, layout, policy, relaybundle
from tether.spec import Endpoint

RELAY_PORT = 2222
SIGNER_PORT = 2223
TALK = """
import os, socket
address = (os.environ["TETHER_HOST"], int(os.environ["TETHER_PORT"]))
with socket.create_connection(address, timeout=10) as s:
    s.sendall(b"across three networks")
    s.shutdown(socket.SHUT_WR)
    print(s.makefile().read())
"""
CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()
except OSError as exc:
    print(type(exc).__name__)
    sys.exit(1)
"""

pytestmark = pytest.mark.needs_root


@dataclass
class Networks:
    relay: Netns  # its veth's other end is in this (the client's) namespace
    site: Netns  # joined to the relay's namespace only
    gateway: layout.Gateway
    key: Path
    known_hosts: Path
    target: NetnsEcho
    relay_process: TetherProcess
    agent: TetherProcess

    @property
    def via(self) -> str:
        return f"gw://{self.relay.peer_address}:{RELAY_PORT}"


@pytest.fixture
def networks(tether: TetherRunner) -> Iterator[Networks]:
    require_sshd()
    with (
        strict_tmp() as work,
        Netns() as relay_net,
        Netns(parent=relay_net) as site_net,
        NetnsEcho(site_net) as target,
    ):
        gateway = layout.init(work / "gw")
        # The signer beside the relay, on the relay's network's loopback: no one else can
        # reach it.
        signer_address = f"127.0.0.1:{SIGNER_PORT}"
        bundle = relaybundle.add_relay(gateway, "r1", [Endpoint.parse(signer_address)])
        signer = tether.spawn(
            "gateway", "signer", str(gateway.root), "--listen", signer_address,
            launcher=relay_net.launcher,
        )  # fmt: skip
        relay = tether.spawn(
            "gateway", "relay", str(bundle), "--listen", f"0.0.0.0:{RELAY_PORT}",
            "--state-dir", str(work / "relay"), launcher=relay_net.launcher,
        )  # fmt: skip
        try:
            signer.wait_for(lambda p: " ready on " in p.stderr, "the signer")
            relay.wait_for(lambda p: " ready on " in p.stderr, "the relay")
            # The site knows the relay by its address on the site's side of the relay.
            enrolled = enrol.add_site(
                gateway, "lab", [Endpoint(site_net.local_address, RELAY_PORT)]
            )
            agent = tether.spawn(
                "gateway", "agent", str(enrolled.path), "--target", f"echo={target.address}",
                "--state-dir", str(work / "agent"), launcher=site_net.launcher,
            )  # fmt: skip
            try:
                agent.wait_for(lambda p: " ready on " in p.stderr, "the agent")
                key = keygen.generate(work / "alice", "alice")
                policy.add_user(gateway.policy, "alice", Path(f"{key}.pub").read_text())
                policy.grant(gateway.policy, "alice", "lab", "echo", None)
                code, trusted, err = tether.run("gateway", "trust", str(gateway.root))
                assert code == 0, err
                known_hosts = work / "known_hosts"
                known_hosts.write_text(trusted)
                keys = work / "relay" / "authorized_keys"
                wait_until_sync(lambda: "'alice'" in keys.read_text(), "the relay to know alice")
                wait_for_policy(work / "relay", gateway, "the relay")
                yield Networks(relay_net, site_net, gateway, key, known_hosts, target, relay, agent)
            finally:
                agent.send_signal(15)
                agent.finish()
        finally:
            for process in (relay, signer):
                process.send_signal(15)
                process.finish()


def connects(launcher: list[str], host: str, port: int) -> bool:
    done = subprocess.run(
        [*launcher, sys.executable, "-c", CONNECT, host, str(port)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done.returncode == 0


def site_listeners(site: Netns) -> list[tuple[str, int]]:
    """Every TCP address something listens on in the site's network."""
    out = subprocess.run(
        [*site.launcher, "ss", "-ltnH"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    found = []
    for line in out.splitlines():
        local = line.split()[3]
        host, _, port = local.rpartition(":")
        found.append((host.strip("[]"), int(port)))
    return found


def test_a_client_reaches_the_site_through_the_relay_only(
    tether: TetherRunner, networks: Networks
) -> None:
    # This namespace (the client's) has no route to the site at all.
    assert not connects([], networks.site.peer_address, networks.target.port)
    flags = ["--via", networks.via, "--to", "lab/echo", "-i", str(networks.key)]
    flags += ["--known-hosts", str(networks.known_hosts), "--timeout", "20s"]
    code, out, err = tether.run("start", *flags, "--", sys.executable, "-c", TALK, deadline=60)
    assert code == 0, err
    assert out.strip().endswith("across three networks"), out


def test_the_site_accepts_no_connection_from_outside(networks: Networks) -> None:
    """While the agent serves, everything in the site's network listens on loopback only, and
    the relay's network (the only one with a route to the site) cannot connect to any of it."""
    listeners = site_listeners(networks.site)
    ports = {port for _, port in listeners}
    assert networks.target.port in ports and len(ports) >= 2  # the target and the site's sshd
    assert {host for host, _ in listeners} <= {"127.0.0.1", "::1"}, listeners
    for port in sorted(ports):
        assert not connects(networks.relay.launcher, networks.site.peer_address, port), port
    # The link is the agent's: from the site to the relay, outbound.
    assert connects(networks.site.launcher, networks.site.local_address, RELAY_PORT)


def test_a_cable_pulled_between_site_and_relay(tether: TetherRunner, networks: Networks) -> None:
    """The site's link goes down under a live tunnel: the tunnel sees the loss (keepalives
    through the whole path), keeps its port, and is back once the link is."""
    flags = ["--via", networks.via, "--to", "lab/echo", "-i", str(networks.key)]
    flags += ["--known-hosts", str(networks.known_hosts), "--port", "0", "--json"]
    flags += ["--keepalive-interval", "1", "--keepalive-count", "2", "--backoff-max", "1s"]
    tunnel = tether.spawn("start", *flags)
    port = int(tunnel.json_line()["local_port"])
    assert echo_once(port, b"before") == b"before"
    networks.site.link_down()
    try:
        wait_until_sync(lambda: tunnel_state(tether) == "reconnecting", "the loss", deadline=20)
    finally:
        networks.site.link_up()
    wait_until_sync(lambda: carries(port), "the tunnel to come back", deadline=90)
    tunnel.send_signal(15)
    assert tunnel.finish() == 0


def carries(port: int) -> bool:
    try:
        return echo_once(port, b"again", timeout=5) == b"again"
    except OSError:
        return False


def tunnel_state(tether: TetherRunner) -> str:
    (tunnel,) = [t for t in tether.list_json() if t["kind"] == "tunnel"]
    return str(tunnel["state"])
