"""A user's tunnel through a gateway: `tether start --via gw://RELAY --to SITE/TARGET`, through
tether's own relay and agent processes, with a certificate the user never handles."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.gateway import Running, running_gateway
from tests.support.servers import EchoServer
from tests.support.tether_process import TetherRunner
from tether.gateway import keygen, policy


@dataclass
class Client:
    run: Running
    key: Path
    known_hosts: Path
    via: str

    def flags(self, target: str = "lab/echo") -> list[str]:
        return [
            "--via",
            self.via,
            "--to",
            target,
            "-i",
            str(self.key),
            "--known-hosts",
            str(self.known_hosts),
        ]


@pytest.fixture
def client(tether: TetherRunner, echo_server: EchoServer) -> Iterator[Client]:
    with running_gateway(tether, {"echo": echo_server.address}) as run:
        key = keygen.generate(run.work / "alice", "alice")
        policy.add_user(run.gateway.policy, "alice", Path(f"{key}.pub").read_text())
        policy.grant(run.gateway.policy, "alice", "lab", "echo", None)
        code, trusted, err = tether.run("gateway", "trust", str(run.gateway.root))
        assert code == 0, err
        known_hosts = run.work / "known_hosts"
        known_hosts.write_text(trusted)
        keys = run.gateway.relay_run / "authorized_keys"
        deadline = time.monotonic() + 10
        while "'alice'" not in keys.read_text():  # the relay follows the policy each second
            assert time.monotonic() < deadline, "the relay never learnt alice's key"
            time.sleep(0.05)
        yield Client(run, key, known_hosts, f"gw://127.0.0.1:{run.relay_port}")


def test_run_through_the_gateway(tether: TetherRunner, client: Client) -> None:
    talk = (
        "import os, socket\n"
        "address = (os.environ['TETHER_HOST'], int(os.environ['TETHER_PORT']))\n"
        "with socket.create_connection(address) as s:\n"
        "    s.sendall(b'through the gateway')\n"
        "    s.shutdown(socket.SHUT_WR)\n"
        "    print(s.makefile().read())\n"
    )
    code, out, err = tether.run("start", *client.flags(), "--", sys.executable, "-c", talk)
    assert code == 0, err
    assert out.strip().endswith("through the gateway"), out
    events = [json.loads(line) for line in client.run.gateway.audit.open()]
    issued = [e for e in events if e["event"] == "issued" and e["user"] == "alice"]
    assert len(issued) == 1 and issued[0]["target"] == "echo"


def test_a_target_without_a_grant_is_refused_with_exit_5(
    tether: TetherRunner, client: Client
) -> None:
    policy.revoke(client.run.gateway.policy, "alice", "lab", "echo")
    code, _, err = tether.run("start", *client.flags(), "--run", "true")
    assert code == 5, err
    assert "refused" in err and err.count("\n") == 1, err


def test_a_target_the_site_does_not_serve_fails_in_one_line(
    tether: TetherRunner, client: Client
) -> None:
    code, _, err = tether.run(
        "start", *client.flags("lab/nothing"), "--timeout", "3s", "--run", "true"
    )
    assert code != 0 and "serves no target nothing" in err, err


def test_revoking_ends_a_running_tunnel_with_exit_5(tether: TetherRunner, client: Client) -> None:
    tunnel = tether.spawn("start", *client.flags(), "--name", "db")
    tunnel.wait_for(lambda p: "ready" in p.stderr, "the tunnel")
    began = time.monotonic()
    policy.revoke(client.run.gateway.policy, "alice", "lab", "echo")
    assert tunnel.finish(deadline=30) == 5
    took = time.monotonic() - began
    assert took < 10, f"the tunnel ended {took:.1f}s after the revoke"
    last = tunnel.stderr.strip().splitlines()[-1]
    assert "access ended" in last, tunnel.stderr
