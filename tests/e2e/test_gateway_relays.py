"""A gateway with several relays: an agent links to each, a client asks them in turn and goes
through the first that signs, a killed relay hands the tunnel to the other, and a refusal of
access is final on the first relay that says it.

Two relays of one gateway cannot share a host: each holds the site's endpoint on its loopback
at the one port the enrolment names, so the second runs in a network namespace of its own,
reached through a veth pair (which needs root). Their signer listens on this side of that pair,
where both reach it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.balancer import Balancer, balancing, config, directives, readme_config
from tests.support.gateway import Running, running_gateway
from tests.support.netns import Netns
from tests.support.servers import EchoServer, SilentServer, echo_once, free_port
from tests.support.sshd_server import require_sshd
from tests.support.strict_dirs import strict_tmp
from tests.support.tether_process import TetherProcess, TetherRunner
from tests.support.waiting import wait_until_sync
from tether.gateway import announce, enrol, keygen, layout, policy, relaybundle
from tether.gateway.sessions import leftovers
from tether.gateway.relay import TICK
from tether.gateway.sshdconfig import CLIENT_ALIVE_INTERVAL, SILENT_PEER_DROPPED
from tether.procs import descendants, halt_tree, halted
from tether.spec import Endpoint

TALK = (
    "import os, socket\n"
    "address = (os.environ['TETHER_HOST'], int(os.environ['TETHER_PORT']))\n"
    "with socket.create_connection(address, timeout=10) as s:\n"
    "    s.sendall(b'through a relay')\n"
    "    s.shutdown(socket.SHUT_WR)\n"
    "    print(s.makefile().read())\n"
)


def user_key(gateway: layout.Gateway, work: Path, name: str, *, granted: bool) -> Path:
    """A user of the gateway, with a grant of lab/echo or without."""
    key = keygen.generate(work / name, name)
    policy.add_user(gateway.policy, name, Path(f"{key}.pub").read_text())
    if granted:
        policy.grant(gateway.policy, name, "lab", "echo", None)
    return key


def trusted(tether: TetherRunner, gateway: layout.Gateway, work: Path) -> Path:
    """A known_hosts file with the gateway's `trust` line."""
    code, line, err = tether.run("gateway", "trust", str(gateway.root))
    assert code == 0, err
    known_hosts = work / "known_hosts"
    known_hosts.write_text(line)
    return known_hosts


def knows(state: Path, user: str) -> bool:
    """Whether the relay whose state directory is ``state`` lets ``user``'s key ask for a
    certificate (it follows the policy a signer feeds it)."""
    keys = state / "authorized_keys"
    return keys.exists() and f"'{user}'" in keys.read_text()


def audit(gateway: layout.Gateway) -> list[dict[str, object]]:
    return [json.loads(line) for line in gateway.audit.open()]


def flags(via: str, key: Path, known_hosts: Path) -> list[str]:
    return ["--via", via, "--to", "lab/echo", "-i", str(key), "--known-hosts", str(known_hosts)]


def carries(port: int) -> bool:
    try:
        return echo_once(port, b"again", timeout=5) == b"again"
    except OSError:
        return False


# -- one relay up, another not -------------------------------------------------------------------
@dataclass
class Users:
    run: Running
    alice: Path  # granted lab/echo
    bob: Path  # no grant
    known_hosts: Path

    @property
    def relay(self) -> str:
        return f"127.0.0.1:{self.run.relay_port}"


@pytest.fixture
def users(tether: TetherRunner, echo_server: EchoServer) -> Iterator[Users]:
    with running_gateway(tether, {"echo": echo_server.address}) as run:
        alice = user_key(run.gateway, run.work, "alice", granted=True)
        bob = user_key(run.gateway, run.work, "bob", granted=False)
        known_hosts = trusted(tether, run.gateway, run.work)
        wait_until_sync(lambda: knows(run.relay_state(), "bob"), "the relay to know the users")
        yield Users(run, alice, bob, known_hosts)


def test_a_client_whose_first_relay_is_down_goes_through_the_next(
    tether: TetherRunner, users: Users
) -> None:
    via = f"gw://127.0.0.1:{free_port()},{users.relay}"  # nothing listens on the first
    code, out, err = tether.run(
        "start", *flags(via, users.alice, users.known_hosts), "--", sys.executable, "-c", TALK
    )
    assert code == 0, err
    assert out.strip().endswith("through a relay"), out
    # The user is told which relay was passed over, and why.
    (passed,) = [line for line in err.splitlines() if "signed by relay" in line]
    assert passed.startswith("tether: warning: "), passed
    assert via.split(",")[0] in passed and "Connection refused" in passed, passed
    assert passed.endswith(f"; signed by relay gw://{users.relay}"), passed
    # diagnose walks the path through the relay that answered, and says the first did not.
    code, out, err = tether.run("diagnose", *flags(via, users.alice, users.known_hosts), "--json")
    assert code == 0, err
    report = json.loads(out)
    steps = {step["name"]: step for step in report["steps"]}
    assert [steps[n]["status"] for n in ("resolve", "tcp", "banner", "host_key", "auth")] == [
        "ok"
    ] * 5
    assert steps["host_key"]["facts"]["relay"] == f"gw://{users.relay}"
    assert any(note.startswith(f"relay {via.split(',')[0]}: ") for note in report["notes"])


def test_when_no_relay_answers_one_line_names_them_all(tether: TetherRunner, users: Users) -> None:
    first, second = free_port(), free_port()
    via = f"gw://127.0.0.1:{first},127.0.0.1:{second}"
    code, _, err = tether.run("start", *flags(via, users.alice, users.known_hosts), "--run", "true")
    assert code == 4, err
    (line,) = err.strip().splitlines()
    assert "no relay signed for lab/echo: " in line, line
    assert f"127.0.0.1:{first}" in line and f"127.0.0.1:{second}" in line, line


def test_a_refusal_is_final_and_never_asked_of_the_next_relay(
    tether: TetherRunner, users: Users
) -> None:
    with SilentServer() as second:  # a relay that would hold any login it got
        via = f"gw://{users.relay},127.0.0.1:{second.port}"
        began = time.monotonic()
        code, _, err = tether.run(
            "start", *flags(via, users.bob, users.known_hosts), "--run", "true"
        )
        took = time.monotonic() - began
        assert code == 5, err
        assert "refused" in err and err.count("\n") == 1, err
        assert second.accepted == 0, "the refusal was taken to the second relay"
        assert took < 15, f"the refusal took {took:.1f}s"
    refused = [e for e in audit(users.run.gateway) if e["event"] == "refused"]
    assert [e["user"] for e in refused] == ["bob"]


# -- two relays up ------------------------------------------------------------------------------
@dataclass
class TwoRelays:
    work: Path
    gateway: layout.Gateway
    states: tuple[Path, Path]  # the relays' state directories
    listens: tuple[Endpoint, Endpoint]
    relays: list[TetherProcess]  # the relay now running at each address
    agent: TetherProcess
    key: Path
    known_hosts: Path
    # Starts relay N (0: r1) again, as the fixture did, and stops it with the rest after.
    start_relay: Callable[[int], TetherProcess]

    @property
    def via(self) -> str:
        return "gw://" + ",".join(str(listen) for listen in self.listens)


def listed(tether: TetherRunner, kind: str) -> list[dict[str, object]]:
    return [entry for entry in tether.list_json() if entry["kind"] == kind]


def linked(tether: TetherRunner) -> int:
    """The relays the agent is linked to, as its status says."""
    (agent,) = listed(tether, "agent")
    return int(str(agent["connections_active"]))


def talks_through(tether: TetherRunner, two_relays: TwoRelays, listen: Endpoint) -> None:
    """A tunnel whose via names the relay at ``listen`` alone carries a connection to the site."""
    code, out, err = tether.run(
        "start", *flags(f"gw://{listen}", two_relays.key, two_relays.known_hosts),
        "--", sys.executable, "-c", TALK,
    )  # fmt: skip
    assert code == 0, err
    assert out.strip().endswith("through a relay"), out


@pytest.fixture
def two_relays(tether: TetherRunner, echo_server: EchoServer) -> Iterator[TwoRelays]:
    """A gateway whose site lab is enrolled with two relays, the first here on loopback, the
    second in a namespace of its own; alice is granted lab/echo; the agent is ready."""
    require_sshd()
    with strict_tmp() as work, Netns() as elsewhere:
        gateway = layout.init(work / "gw")
        signer = Endpoint(elsewhere.local_address, free_port())
        bundles = [relaybundle.add_relay(gateway, name, [signer]) for name in ("r1", "r2")]
        listens = (Endpoint("127.0.0.1", free_port()), Endpoint(elsewhere.peer_address, 2222))
        states = (work / "relay-r1", work / "relay-r2")
        # The site's endpoint on a free port of this loopback, where r1 holds it: another
        # gateway on this host (another run's) may hold the first one enrolments pick.
        enrolled = enrol.add_site(gateway, "lab", list(listens), port=free_port())
        key = user_key(gateway, work, "alice", granted=True)
        launchers: tuple[list[str], list[str]] = ([], elsewhere.launcher)
        started: list[TetherProcess] = []  # all stopped after, the last first
        relays: list[TetherProcess] = []

        def start_relay(n: int) -> TetherProcess:
            relay = tether.spawn(
                "gateway", "relay", str(bundles[n]), "--listen", str(listens[n]),
                "--state-dir", str(states[n]), launcher=launchers[n],
            )  # fmt: skip
            started.append(relay)
            relays[n : n + 1] = [relay]
            relay.wait_for(lambda p: " ready on " in p.stderr, f"relay r{n + 1}")
            return relay

        try:
            signing = tether.spawn("gateway", "signer", str(gateway.root), "--listen", str(signer))
            started.append(signing)
            signing.wait_for(lambda p: " ready on " in p.stderr, "the signer")
            for n in range(2):
                start_relay(n)
            agent = tether.spawn(
                "gateway", "agent", str(enrolled.path), f"--target=echo={echo_server.address}",
                "--state-dir", str(work / "agent"),
            )  # fmt: skip
            started.append(agent)
            agent.wait_for(lambda p: " ready on " in p.stderr, "the agent")
            known_hosts = trusted(tether, gateway, work)
            wait_until_sync(
                lambda: all(knows(state, "alice") for state in states), "the relays to know alice"
            )
            # Ready once one relay is linked: the tests start once both are.
            wait_until_sync(lambda: linked(tether) == 2, "the agent to link to both relays")
            yield TwoRelays(
                work, gateway, states, listens, relays, agent, key, known_hosts, start_relay
            )
        finally:
            for process in reversed(started):
                if process.proc.poll() is None:
                    process.send_signal(signal.SIGTERM)
                process.finish()


@pytest.mark.needs_root
def test_an_agent_links_to_both_relays(tether: TetherRunner, two_relays: TwoRelays) -> None:
    # Each relay keeps what the agent announced (its link's session, just after the link).
    wait_until_sync(
        lambda: all(announce.load(state, "lab") for state in two_relays.states),
        "the agent's announcement on each relay",
    )
    (agent,) = listed(tether, "agent")
    assert (agent["state"], agent["connections_active"], agent["connections_total"]) == (
        "ready",
        2,
        2,
    )
    assert agent["via"] == ", ".join(f"gw://{listen}" for listen in two_relays.listens)
    # Each relay counts the agent's session among its own (as its sshd's log says).
    wait_until_sync(
        lambda: [int(str(r["connections_active"])) for r in listed(tether, "relay")] == [1, 1],
        "each relay's status to show the agent's link",
    )
    # Either relay alone carries a tunnel to the site.
    for listen in two_relays.listens:
        talks_through(tether, two_relays, listen)


@pytest.mark.needs_root
def test_a_killed_relay_hands_the_tunnel_to_the_other(
    tether: TetherRunner, two_relays: TwoRelays, figures: dict[str, str]
) -> None:
    """The relay in use dies with its sessions (as its host would): the tunnel keeps its port
    and comes back through the other relay, which the agent stayed linked to."""
    args = [*flags(two_relays.via, two_relays.key, two_relays.known_hosts), "--name", "db"]
    tunnel = tether.spawn("start", *args, "--backoff-max", "1s", "--port", "0")
    tunnel.wait_for(lambda p: "ready" in p.stderr, "the tunnel")
    port = int(re.search(r"ready on 127\.0\.0\.1:(\d+)", tunnel.stderr)[1])  # type: ignore[index]
    assert echo_once(port, b"before") == b"before"
    (entry,) = listed(tether, "tunnel")
    assert entry["via"] == two_relays.via
    gateway = two_relays.gateway
    signed = [e["relay"] for e in audit(gateway) if e["event"] == "issued"]
    assert signed == ["r1"]  # the first relay asked for the certificate

    first = two_relays.relays[0]
    first.proc.kill()
    first.finish()
    for pid in leftovers(two_relays.listens[0].port):  # its sessions, the tunnel's among them
        os.kill(pid, signal.SIGKILL)
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass  # the port is still bound: accepted, and held while the tunnel reconnects
    wait_until_sync(lambda: carries(port), "the tunnel through the other relay", deadline=30)
    gap = time.monotonic() - began
    figures["gateway: a killed relay to a connection carried through the other"] = f"{gap:.1f}s"
    assert tunnel.proc.poll() is None
    # It kept its certificate (minutes of validity left): one login to the other relay, no
    # signer asked, and the same serial opens the session there.
    (issued,) = [e for e in audit(gateway) if e["event"] == "issued"]

    def opened_on_r2() -> list[dict[str, object]]:
        return [e for e in audit(gateway) if e["event"] == "opened" and e["relay"] == "r2"]

    wait_until_sync(lambda: len(opened_on_r2()) >= 2, "r2 to record the agent's and the tunnel's")
    assert issued["serial"] in {e["serial"] for e in opened_on_r2()}

    def first_down() -> bool:
        (agent,) = listed(tether, "agent")
        error = str(agent["last_error"])
        return agent["state"] == "reconnecting" and str(two_relays.listens[0]) in error

    # The agent says which relay it lost, and still serves through the other.
    wait_until_sync(first_down, "the agent to name the relay it lost")
    (agent,) = listed(tether, "agent")
    assert (agent["connections_active"], agent["connections_total"]) == (1, 2)
    tunnel.send_signal(signal.SIGTERM)
    assert tunnel.finish() == 0


@pytest.mark.needs_root
def test_a_revoke_cuts_the_tunnels_on_both_relays_within_5s(
    tether: TetherRunner, two_relays: TwoRelays, figures: dict[str, str]
) -> None:
    """One tunnel through each relay: a revoke reaches both relays through the signer's feeds,
    each cuts its session within 5 s, and neither lets a new one start."""
    tunnels = []
    for n, listen in enumerate(two_relays.listens):
        args = [*flags(f"gw://{listen}", two_relays.key, two_relays.known_hosts)]
        tunnel = tether.spawn("start", *args, "--name", f"db{n}", "--port", "0")
        tunnel.wait_for(lambda p: "ready" in p.stderr, "a tunnel")
        tunnels.append(tunnel)
    began = time.monotonic()
    policy.revoke(two_relays.gateway.policy, "alice", "lab", "echo")

    def cut_on(relay: str) -> bool:
        return any(e["event"] == "cut" and e["relay"] == relay for e in audit(two_relays.gateway))

    wait_until_sync(lambda: cut_on("r1") and cut_on("r2"), "both relays to cut", deadline=10)
    took = time.monotonic() - began
    figures["gateway: a revoke to its cut on both relays"] = f"{took:.1f}s"
    assert took < 5, f"the revoke took {took:.1f}s to reach both relays"
    for tunnel in tunnels:
        assert tunnel.finish(deadline=30) == 5
        assert "access ended" in tunnel.stderr.strip().splitlines()[-1], tunnel.stderr
    for listen in two_relays.listens:
        args = flags(f"gw://{listen}", two_relays.key, two_relays.known_hosts)
        code, _, err = tether.run("start", *args, "--run", "true")
        assert code == 5 and "refused" in err, err


def agent_lost(tether: TetherRunner, listen: Endpoint) -> bool:
    """Whether the agent says it is not linked to the relay at ``listen``."""
    (agent,) = listed(tether, "agent")
    return agent["state"] == "reconnecting" and str(listen) in str(agent["last_error"])


def agent_links(gateway: layout.Gateway, event: str, since: int) -> set[str]:
    """The relays whose audit says the site's agent's link was ``event`` (opened, closed), from
    audit line ``since`` on."""
    return {
        str(e["relay"])
        for e in audit(gateway)[since:]
        if e["event"] == event and e["key_id"] == "agent:lab"
    }


@pytest.mark.needs_root
def test_an_agent_relinks_to_a_relay_restarted_after_a_kill(
    tether: TetherRunner, two_relays: TwoRelays, figures: dict[str, str]
) -> None:
    """r1 dies with its sessions, the agent's link among them: the agent, linked to r2 still,
    names the relay it lost. r1 started again (its bundle, address and state directory) gets
    the link back from the same agent, never restarted, and carries a tunnel that names r1
    alone."""
    agent, gateway = two_relays.agent, two_relays.gateway
    first, listen = two_relays.relays[0], two_relays.listens[0]
    first.proc.kill()
    first.finish()
    for pid in leftovers(listen.port):  # its sessions: the agent's link
        os.kill(pid, signal.SIGKILL)
    wait_until_sync(
        lambda: agent_lost(tether, listen), "the agent to name the relay it lost", deadline=30
    )
    (entry,) = listed(tether, "agent")
    assert (entry["connections_active"], entry["connections_total"]) == (1, 2)

    mark = len(audit(gateway))
    two_relays.start_relay(0)
    began = time.monotonic()
    # The link's reconnects back off while r1 is down (1 s, doubling): a few seconds here.
    wait_until_sync(lambda: linked(tether) == 2, "the agent to link to r1 again", deadline=60)
    figures["gateway: a restarted relay to the agent's link back"] = (
        f"{time.monotonic() - began:.1f}s"
    )
    (entry,) = listed(tether, "agent")
    assert (entry["pid"], entry["state"]) == (agent.pid, "ready")
    assert agent.proc.poll() is None
    wait_until_sync(
        lambda: agent_links(gateway, "opened", mark) == {"r1"},
        "the restarted relay's audit of the agent's link",
    )
    talks_through(tether, two_relays, listen)
    assert [e["relay"] for e in audit(gateway)[mark:] if e["event"] == "issued"] == ["r1"]


@pytest.mark.needs_root
def test_a_frozen_agent_is_dropped_by_both_relays(
    tether: TetherRunner, two_relays: TwoRelays, figures: dict[str, str]
) -> None:
    """The agent stopped with every process below it (SIGSTOP), as a frozen host: its links
    stay open and answer nothing. Each relay's sshd gives up on its link within its keepalives'
    bound (sshdconfig.SILENT_PEER_DROPPED), which frees the site's endpoint there for the next
    link, and the relay sees the session gone at its next count. Resumed, the same agent links
    to both relays again by itself, and a tunnel through each carries. No tunnel crosses the
    links while the agent is frozen: a client's traffic through a link puts sshd's probes off."""
    gateway, agent = two_relays.gateway, two_relays.agent
    mark = len(audit(gateway))
    # sshd's own bound, the relay's count of its sessions after (each TICK) and the audit
    # line's way to the signer; and one of sshd's probe periods (two intervals on Debian 12's
    # sshd): a wake-up of its loop for anything but the peer's input starts its wait for the
    # next probe over (40.1 and 44.4 s on an idle host here, 45.1 s in a CI run).
    bound = SILENT_PEER_DROPPED + TICK + 2 * CLIENT_ALIVE_INTERVAL
    try:
        below = halt_tree(agent.pid)
        began = time.monotonic()
        assert below and all(halted(pid) for pid in [agent.pid, *below]), below
        wait_until_sync(
            lambda: agent_links(gateway, "closed", mark) == {"r1", "r2"},
            "both relays to drop the frozen agent's links",
            deadline=bound + 30,
        )
        took = time.monotonic() - began
        figures["gateway: a frozen agent dropped by both relays"] = f"{took:.1f}s"
        assert took <= bound, f"the relays took {took:.1f}s to drop a frozen agent"
        # Nothing of the agent ran meanwhile: no link came back by itself.
        assert all(halted(pid) for pid in [agent.pid, *below])
        assert agent_links(gateway, "opened", mark) == set()
        dropped = len(audit(gateway))
    finally:
        for pid in [agent.pid, *descendants(agent.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    began = time.monotonic()
    # Each link's ssh finds its connection closed, and the link starts again (1 s after).
    wait_until_sync(
        lambda: agent_links(gateway, "opened", dropped) == {"r1", "r2"},
        "the agent to link to both relays again",
        deadline=60,
    )
    wait_until_sync(lambda: linked(tether) == 2, "the agent to say it is linked to both")
    figures["gateway: a resumed agent to its links to both relays back"] = (
        f"{time.monotonic() - began:.1f}s"
    )
    (entry,) = listed(tether, "agent")
    assert (entry["pid"], entry["state"]) == (agent.pid, "ready")
    for listen in two_relays.listens:
        talks_through(tether, two_relays, listen)
    issued = [e["relay"] for e in audit(gateway)[dropped:] if e["event"] == "issued"]
    assert issued == ["r1", "r2"]


# -- two relays behind a balancer ---------------------------------------------------------------
@dataclass
class Balanced:
    relays: TwoRelays
    balancer: Balancer

    @property
    def via(self) -> str:
        """What a user names: the balancer's one address."""
        return f"gw://{self.balancer.listen}"


@pytest.fixture
def balanced(two_relays: TwoRelays) -> Iterator[Balanced]:
    """haproxy on this namespace's loopback in front of both relays, as the README configures
    it; the agent names each relay directly, as the README says it should."""
    listen = Endpoint("127.0.0.1", free_port())
    relays = dict(zip(("r1", "r2"), two_relays.listens, strict=True))
    with balancing(two_relays.work, listen, relays) as balancer:
        yield Balanced(two_relays, balancer)


def test_the_balancer_tests_run_the_readmes_haproxy_configuration() -> None:
    """The same directives, but for where haproxy listens and logs, the relays it names and the
    checks' pace."""
    ours = config(Endpoint("127.0.0.1", 2222), {"r1": Endpoint("127.0.0.1", 2223)}, Path("/s"))
    assert directives(ours) == directives(readme_config())


def opened_by_clients(gateway: layout.Gateway, since: int = 0) -> list[str]:
    """The relay of each client session opened (agents' links left out), from audit line
    ``since`` on."""
    return [
        str(e["relay"])
        for e in audit(gateway)[since:]
        if e["event"] == "opened" and not str(e["key_id"]).startswith("agent:")
    ]


def opened_once(gateway: layout.Gateway, count: int, since: int = 0) -> list[str]:
    """opened_by_clients once it has ``count`` lines. A relay's line of a session reaches the
    log through the signer, a little after the session carries bytes."""
    wait_until_sync(
        lambda: len(opened_by_clients(gateway, since)) >= count,
        f"the audit log to have {count} client sessions opened",
    )
    return opened_by_clients(gateway, since)


def through(tether: TetherRunner, balanced: Balanced, name: str) -> tuple[TetherProcess, int]:
    """A tunnel through the balancer, reconnecting quickly, proven to carry, and its port."""
    relays = balanced.relays
    args = [*flags(balanced.via, relays.key, relays.known_hosts), "--name", name]
    tunnel = tether.spawn("start", *args, "--backoff-max", "1s", "--port", "0")
    tunnel.wait_for(lambda p: "ready" in p.stderr, f"tunnel {name}")
    found = re.search(r"ready on 127\.0\.0\.1:(\d+)", tunnel.stderr)
    assert found is not None, tunnel.stderr
    port = int(found[1])
    assert echo_once(port, b"before") == b"before"
    return tunnel, port


@contextmanager
def tunnels_through(
    tether: TetherRunner, balanced: Balanced, count: int, prefix: str = "lb"
) -> Iterator[list[tuple[TetherProcess, int]]]:
    """``count`` tunnels through the balancer, one after the other; all ended after."""
    started: list[tuple[TetherProcess, int]] = []
    try:
        for n in range(count):
            started.append(through(tether, balanced, f"{prefix}{n}"))
        yield started
    finally:
        for tunnel, _ in started:
            if tunnel.proc.poll() is None:
                tunnel.send_signal(signal.SIGTERM)
            tunnel.finish()


@pytest.mark.needs_root
def test_tunnels_through_a_balancer_are_spread_over_both_relays(
    tether: TetherRunner, balanced: Balanced
) -> None:
    """Each tunnel is two connections to the balancer (the certificate's request, then the
    session), which may reach different relays: either signs, since the agent is linked to
    both; with leastconn the sessions share the relays evenly."""
    gateway = balanced.relays.gateway
    with tunnels_through(tether, balanced, 10) as tunnels:
        for _, port in tunnels:
            assert carries(port)
        sessions = opened_once(gateway, 10)
        assert len(sessions) == 10, sessions
        shares = {relay: sessions.count(relay) for relay in ("r1", "r2")}
        # 5 and 5 as a rule; one more on either side if a certificate's request had not quite
        # closed (to haproxy) when its session arrived.
        assert min(shares.values()) >= 4, shares


@pytest.mark.needs_root
def test_a_relay_down_behind_the_balancer_leaves_every_tunnel_to_the_other(
    tether: TetherRunner, balanced: Balanced, figures: dict[str, str]
) -> None:
    """r1 dies with its sessions: haproxy's check marks it down, the tunnels it carried come
    back through the balancer (to r2) on the ports they held, and new ones all go to r2."""
    relays, balancer = balanced.relays, balanced.balancer
    gateway = relays.gateway
    with tunnels_through(tether, balanced, 4) as tunnels:
        before = opened_once(gateway, 4)
        assert set(before) == {"r1", "r2"}, before  # two each, as a rule
        mark = len(audit(gateway))

        first = relays.relays[0]
        first.proc.kill()
        first.finish()
        for pid in leftovers(relays.listens[0].port):  # its sessions: the tunnels' it held
            os.kill(pid, signal.SIGKILL)
        began = time.monotonic()
        for _, port in tunnels:  # still bound: accepted, and held while a tunnel reconnects
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        wait_until_sync(
            lambda: balancer.states().get("r1") == "DOWN", "haproxy to mark r1 down", deadline=15
        )
        figures["balancer: a killed relay to haproxy marking it down"] = (
            f"{time.monotonic() - began:.1f}s"
        )
        for n, (tunnel, port) in enumerate(tunnels):
            wait_until_sync(partial(carries, port), f"tunnel lb{n} to carry again", deadline=30)
            assert tunnel.proc.poll() is None
        # Those that were on r1 came back, through r2; those on r2 never left it.
        came_back = opened_once(gateway, before.count("r1"), mark)
        assert came_back == ["r2"] * before.count("r1")
        assert balancer.states() == {"r1": "DOWN", "r2": "UP"}

        mark = len(audit(gateway))
        with tunnels_through(tether, balanced, 3, prefix="after") as more:
            for _, port in more:
                assert carries(port)
        assert opened_once(gateway, 3, mark) == ["r2"] * 3
