"""A CA rollover on a running gateway (`tether gateway ca add|use|retire`): a tunnel keeps
working through each step, reconnects with a certificate of the new CA, and a certificate of a
retired CA is refused."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from tests.support.gateway import Client, Running, alice, carries, running_gateway, started, user
from tests.support.servers import EchoServer
from tests.support.tether_process import TetherRunner
from tests.support.waiting import wait_until_sync
from tether.gateway import enrol, keygen, policy, relaybundle
from tether.gateway.hops import ssh_options
from tether.gateway.names import RELAY_PRINCIPAL
from tether.spec import Endpoint

DEADLINE = 45.0


def ca(tether: TetherRunner, run: Running, step: str, kind: str) -> None:
    code, _, err = tether.run("gateway", "ca", step, str(run.gateway.root), kind)
    assert code == 0, err


def relay_trusts(run: Running, count: int) -> None:
    """Wait until relay r1 was fed ``count`` user CA keys, and takes their certificates."""
    path = run.relay_state() / "user_ca.pub"
    wait_until_sync(
        lambda: len(path.read_text().splitlines()) == count, f"r1 to trust {count} user CAs"
    )


def reenrol(run: Running, granted: bool) -> None:
    """Enrol the site again, as an operator does in a rollover, and restart its agent."""
    run.agent.send_signal(signal.SIGTERM)
    assert run.agent.finish() == 0
    enrol.remove_site(run.gateway, "lab")
    relays = [Endpoint("127.0.0.1", port) for port in run.relay_ports.values()]
    enrol.add_site(run.gateway, "lab", relays, port=run.endpoint_port)
    if granted:  # removing the site dropped its grants
        policy.grant(run.gateway.policy, "alice", "lab", "echo", None)
    run.agent = run.start_agent()


def reissue_relay(run: Running) -> None:
    """Issue relay r1's bundle again, and restart it from the new one."""
    run.relay.send_signal(signal.SIGTERM)
    assert run.relay.finish() == 0
    relaybundle.remove_relay(run.gateway, "r1")
    relaybundle.add_relay(run.gateway, "r1", [Endpoint("127.0.0.1", run.signer_port)])
    run.relay = run.relays["r1"] = run.start_relay()


def issued(run: Running) -> int:
    """How many certificates the signer has issued to clients."""
    lines = run.gateway.audit.read_text().splitlines()
    return sum(json.loads(line)["event"] == "issued" for line in lines)


def logs_in(client: Client, key: Path) -> subprocess.CompletedProcess[str]:
    """ssh to relay r1 with ``key`` and its certificate (a client's, for lab): 1 from the
    session's /bin/false once in, 255 if refused."""
    options = ssh_options(
        key=key,
        certificate=Path(f"{key}-cert.pub"),
        known_hosts=client.known_hosts,
        alias=RELAY_PRINCIPAL,
    )
    port = str(client.run.relay_port)
    argv = ["ssh", "-F", "/dev/null", *options, "-T", "-p", port, "-l", user(), "127.0.0.1"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=20)


def test_a_user_ca_rollover_keeps_the_tunnel_and_retires_the_old_ca(
    tether: TetherRunner, echo_server: EchoServer
) -> None:
    with running_gateway(tether, {"echo": echo_server.address}) as run:
        old = run.gateway.user_ca
        ca(tether, run, "add", "user")
        relay_trusts(run, 2)
        reenrol(run, granted=False)  # the site's sshd learns the new CA
        client = alice(tether, run)
        tunnel, port = started(tether, client)  # its certificate is the old CA's
        assert issued(run) == 1

        # A client certificate of the old CA, kept to try it after the retire.
        probe = keygen.generate(run.work / "probe", "probe")
        keygen.sign(old, Path(f"{probe}.pub"), key_id="probe", principals=["via:lab"],
                    validity="+30m", serial=999_999)  # fmt: skip

        ca(tether, run, "use", "user")
        assert carries(port)
        run.relay.send_signal(signal.SIGTERM)  # the tunnel reconnects: with the certificate
        assert run.relay.finish() == 0  # it has (the old CA's, trusted yet), or a new one
        run.relay = run.relays["r1"] = run.start_relay()
        wait_until_sync(lambda: carries(port), "the tunnel to come back", deadline=DEADLINE)

        assert logs_in(client, probe).returncode == 1  # trusted yet: in, to /bin/false
        reissue_relay(run)  # its login certificate, and the agent's, of the new CA before
        reenrol(run, granted=True)  # the old one is retired
        wait_until_sync(lambda: carries(port), "the tunnel after the re-issue", DEADLINE)
        ca(tether, run, "retire", "user")
        relay_trusts(run, 1)
        refused = logs_in(client, probe)
        assert refused.returncode == 255 and "Permission denied" in refused.stderr
        # Everything of the new CA goes on: the relay's feed, the agent, the tunnel.
        assert carries(port)
        run.relay.send_signal(signal.SIGTERM)  # and reconnects, with the new CA only trusted
        assert run.relay.finish() == 0
        run.relay = run.relays["r1"] = run.start_relay()
        wait_until_sync(lambda: carries(port), "the tunnel after the retire", DEADLINE)
        assert issued(run) >= 2  # after `use`: of the new CA (test_cas.py), the old refused
        assert tunnel.proc.poll() is None
        tunnel.send_signal(signal.SIGTERM)
        assert tunnel.finish() == 0


def test_a_host_ca_rollover_keeps_a_client_that_trusts_both(
    tether: TetherRunner, echo_server: EchoServer
) -> None:
    with running_gateway(tether, {"echo": echo_server.address}) as run:
        ca(tether, run, "add", "host")
        reenrol(run, granted=False)  # the agent learns the new CA before a relay shows it
        client = alice(tether, run)  # her known_hosts: both `trust` lines
        assert client.known_hosts.read_text().count("@cert-authority") == 2
        tunnel, port = started(tether, client)

        ca(tether, run, "use", "host")  # the signer's host certificate is the new CA's
        reissue_relay(run)  # the relay's host certificate, then the site's, of the new CA
        wait_until_sync(lambda: carries(port), "the tunnel through the new relay", DEADLINE)
        reenrol(run, granted=True)
        wait_until_sync(lambda: carries(port), "the tunnel to the new site", DEADLINE)

        ca(tether, run, "retire", "host")
        code, trusted, err = tether.run("gateway", "trust", str(run.gateway.root))
        assert code == 0 and trusted.count("@cert-authority") == 1, err
        known = run.relay_state() / "known_hosts"
        wait_until_sync(lambda: known.read_text().count("@cert-authority") == 1, "r1 fed")
        # A new start with only the new line works; the old tunnel carries on.
        client.known_hosts.write_text(trusted)
        other, other_port = started(tether, client, name="db2")
        assert carries(port) and carries(other_port)
        for process in (tunnel, other):
            process.send_signal(signal.SIGTERM)
            assert process.finish() == 0
