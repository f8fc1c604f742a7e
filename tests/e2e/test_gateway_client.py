"""A user's tunnel through a gateway: `tether start --via gw://RELAY --to SITE/TARGET`, through
tether's own relay and agent processes, with a certificate the user never handles."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from tests.support.gateway import Client, alice, carries, running_gateway, started
from tests.support.servers import EchoServer, echo_once
from tests.support.ssh_setups import add_to_agent, private_agent
from tests.support.tether_process import TetherRunner
from tests.support.waiting import wait_until_sync
from tether.gateway import policy
from tether.gateway.sessions import leftovers
from tether.gateway.relay import COUNT


@pytest.fixture
def client(tether: TetherRunner, echo_server: EchoServer) -> Iterator[Client]:
    with running_gateway(tether, {"echo": echo_server.address}) as run:
        yield alice(tether, run)


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
    """Revoked mid-transfer: the connection moving bytes is cut within 5 s, and the tunnel
    ends with exit 5."""
    tunnel, port = started(tether, client)
    moving = socket.create_connection(("127.0.0.1", port), timeout=10)
    cut = threading.Event()

    def stream() -> None:
        block = b"y" * 65536
        try:
            while True:
                moving.sendall(block)
                if not moving.recv(65536):
                    break
        except OSError:
            pass
        cut.set()

    streamer = threading.Thread(target=stream, daemon=True)
    streamer.start()
    began = time.monotonic()
    policy.revoke(client.run.gateway.policy, "alice", "lab", "echo")
    assert cut.wait(10), "the transfer went on after the revoke"
    assert time.monotonic() - began < 5, "the transfer was cut too late"
    moving.close()
    assert tunnel.finish(deadline=30) == 5
    took = time.monotonic() - began
    assert took < 10, f"the tunnel ended {took:.1f}s after the revoke"
    last = tunnel.stderr.strip().splitlines()[-1]
    assert "access ended" in last, tunnel.stderr
    audit_log = client.run.gateway.audit
    wait_until_sync(
        lambda: any(
            e["event"] == "closed" and e.get("cut") == "access revoked"
            for e in map(json.loads, audit_log.open())
        ),
        "the cut session's close in the audit log",
    )


def test_a_killed_agent_that_comes_back_brings_the_tunnel_back(
    tether: TetherRunner, client: Client
) -> None:
    tunnel, port = started(tether, client)
    run = client.run
    run.agent.proc.kill()
    run.agent.finish()
    run.agent = run.start_agent()
    # The local port stayed bound all along: each try below is accepted, then carried once the
    # tunnel is back through the new agent (with the certificate it had, or a new one if an
    # attempt failed while the agent was away).
    wait_until_sync(lambda: carries(port), "the tunnel to come back", deadline=30)
    assert tunnel.proc.poll() is None
    tunnel.send_signal(signal.SIGTERM)
    assert tunnel.finish() == 0

    def sessions() -> int:
        """The tunnel's sessions in the audit log: its line of a session reaches the log
        through the signer, a little after the session carries bytes."""
        events = [e for e in map(json.loads, run.gateway.audit.open())]
        issued = {e["serial"] for e in events if e["event"] == "issued"}
        return len([e for e in events if e["event"] == "opened" and e["serial"] in issued])

    # Its session before the kill, and one after.
    wait_until_sync(lambda: sessions() >= 2, "the audit log to have both sessions")


def test_a_restarted_relay_brings_the_tunnel_back(tether: TetherRunner, client: Client) -> None:
    tunnel, port = started(tether, client)
    run = client.run
    run.relay.send_signal(signal.SIGTERM)
    assert run.relay.finish() == 0
    run.relay = run.start_relay()
    # Both the agent and the tunnel come back by themselves.
    wait_until_sync(lambda: carries(port), "the tunnel to come back", deadline=45)
    assert tunnel.proc.poll() is None and run.agent.proc.poll() is None
    tunnel.send_signal(signal.SIGTERM)
    assert tunnel.finish() == 0


def test_a_frozen_agent_is_dropped_by_the_relay_and_replaced(
    tether: TetherRunner, client: Client
) -> None:
    """A stopped agent keeps its endpoint until the relay's keepalives give up on it (about
    40 s: sshdconfig.SILENT_PEER_DROPPED); then a second agent of the site takes its place, and
    the tunnel is back."""
    tunnel, port = started(tether, client)
    run = client.run
    frozen = run.agent
    frozen.send_signal(signal.SIGSTOP)
    try:
        run.agent = run.start_agent("agent2", wait=False)
        wait_until_sync(lambda: carries(port), "the tunnel to come back", deadline=60)
    finally:
        frozen.send_signal(signal.SIGCONT)
        frozen.send_signal(signal.SIGTERM)
        frozen.finish()
    tunnel.send_signal(signal.SIGTERM)
    assert tunnel.finish() == 0


def test_a_killed_relays_sessions_are_ended_by_the_next_relay(
    tether: TetherRunner, client: Client
) -> None:
    """sshd's sessions outlive their listener: after SIGKILL of the relay, the tunnel's session
    would go on where no reaper sees it. The next relay on the port ends them first, and the
    tunnel then goes through it, cut as any other when its access ends."""
    tunnel, port = started(tether, client)
    run = client.run
    run.relay.proc.kill()
    run.relay.finish()
    assert leftovers(run.relay_port), "no session outlived the relay: nothing to test"
    assert carries(port)  # still carried by the session the killed relay left
    run.relay = run.start_relay()

    def said_leftovers() -> bool:  # the relay's audit lines reach the gateway through a signer
        events = [json.loads(line) for line in run.gateway.audit.open()]
        return any(e["event"] == "leftovers" and e["relay"] == "r1" for e in events)

    wait_until_sync(said_leftovers, "the audit log to say what the relay ended")
    wait_until_sync(lambda: carries(port), "the tunnel to come back", deadline=45)
    policy.revoke(run.gateway.policy, "alice", "lab", "echo")
    assert tunnel.finish(deadline=30) == 5


def test_background_reuse_list_and_stop_through_the_gateway(
    tether: TetherRunner, client: Client
) -> None:
    args = [*client.flags(), "--name", "db", "--background", "--reuse", "--json"]
    code, out, err = tether.run("start", *args)
    assert code == 0, err
    first = json.loads(out)
    code, out, err = tether.run("start", *args)
    assert code == 0, err
    assert json.loads(out)["pid"] == first["pid"]  # the same tunnel, reused
    listed = [t for t in tether.list_json() if t["kind"] == "tunnel"]
    assert [(t["name"], t["via"], t["state"]) for t in listed] == [("db", client.via, "ready")]
    assert listed[0]["target_host"] == "lab/echo" and listed[0]["engine"] == "openssh"
    code, table, _ = tether.run("list")
    assert "lab/echo" in table and "lab/echo:0" not in table
    assert echo_once(int(first["local_port"]), b"listed") == b"listed"
    code, _, err = tether.run("stop", "db")
    assert code == 0, err
    assert [t for t in tether.list_json() if t["kind"] == "tunnel"] == []


def test_the_python_api_with_the_key_in_ssh_agent(client: Client) -> None:
    """No identity file: the signer and both hops use the key ssh-agent holds."""
    script = (
        "import socket, sys, tether\n"
        "with tether.open(to='lab/echo', via=sys.argv[1], known_hosts=sys.argv[2]) as t:\n"
        "    with socket.create_connection((t.host, t.port), timeout=10) as s:\n"
        "        s.sendall(b'from the api')\n"
        "        print(s.recv(64).decode())\n"
    )
    with private_agent(client.run.work) as sock:
        add_to_agent(sock, client.key)
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        done = subprocess.run(
            [sys.executable, "-c", script, client.via, str(client.known_hosts)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "from the api"


def test_diagnose_walks_the_gateway_path(tether: TetherRunner, client: Client) -> None:
    code, out, err = tether.run("diagnose", *client.flags(), "--json")
    assert code == 0, err
    report = json.loads(out)
    steps = {step["name"]: step["status"] for step in report["steps"]}
    assert [steps[n] for n in ("resolve", "tcp", "banner", "host_key", "auth", "channel")] == [
        "ok"
    ] * 6
    policy.revoke(client.run.gateway.policy, "alice", "lab", "echo")
    code, out, err = tether.run("diagnose", *client.flags(), "--json")
    assert code == 5, err
    report = json.loads(out)
    assert report["failed_step"] == "host_key" and "refused" in report["error"]


def test_every_session_is_opened_and_closed_in_the_audit_log(
    tether: TetherRunner, client: Client
) -> None:
    """A session's lines join to its issuance by serial; its close says how long and how many
    bytes each way (as the relay's kernel counted them)."""
    tunnel, port = started(tether, client)
    payload = b"x" * 200_000
    assert echo_once(port, payload) == payload

    def relay_counted() -> bool:
        (relay,) = [t for t in tether.list_json() if t["kind"] == "relay"]
        both = 2 * len(payload)
        return int(relay["bytes_out"]) >= both and int(relay["bytes_in"]) >= both

    # The relay counts every COUNT seconds, and its status sums its sessions: the client's and
    # the agent's link each carried the payload each way once a count has seen the whole echo.
    wait_until_sync(relay_counted, "the relay to count the session's bytes", deadline=3 * COUNT)
    tunnel.send_signal(signal.SIGTERM)
    assert tunnel.finish() == 0
    audit_log = client.run.gateway.audit

    def events() -> list[dict[str, object]]:
        return [json.loads(line) for line in audit_log.open()]

    (issued,) = [e for e in events() if e["event"] == "issued"]
    serial = issued["serial"]
    wait_until_sync(
        lambda: any(e["event"] == "closed" and e["serial"] == serial for e in events()),
        "the session's close in the audit log",
    )
    (opened,) = [e for e in events() if e["event"] == "opened" and e["serial"] == serial]
    (closed,) = [e for e in events() if e["event"] == "closed" and e["serial"] == serial]
    assert opened["key_id"] == closed["key_id"] and str(opened["key_id"]).startswith(
        "alice@lab/echo@"
    )
    # Which relay, by its name and its address: the gateway's one log gathers every relay's.
    assert opened["relay"] == "r1" and opened["listen"] == f"127.0.0.1:{client.run.relay_port}"
    assert float(str(closed["seconds"])) > 0
    # Both ways carried the payload, inside SSH. The close says the last count, which may have
    # come a moment before the transfer's last packets (the agent's link then held the rest of
    # the sum above): most of it, then.
    assert int(str(closed["bytes_from_client"])) >= 0.9 * len(payload)
    assert int(str(closed["bytes_to_client"])) >= 0.9 * len(payload)
    agents = [e for e in events() if e["event"] == "opened" and e["key_id"] == "agent:lab"]
    assert agents != []
