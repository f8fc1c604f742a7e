"""`tether gateway agent` with `tether gateway relay`: a site served through outbound links
only, clients reaching its targets with certificates from the signer, and an agent whose site
was removed ending with exit 5."""

from __future__ import annotations

import json
import os
import pwd
import shlex
import subprocess
import time
from datetime import UTC, datetime, timedelta
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.gateway import Running, running_gateway
from tests.support.servers import EchoServer
from tests.support.tether_process import TetherRunner
from tests.support.waiting import wait_until_sync
from tether.gateway import enrol, keygen, policy
from tether.gateway.hops import known_hosts_line, ssh_options
from tether.gateway.names import RELAY_PRINCIPAL, site_host_alias
from tether.gateway.signer import issue


@pytest.fixture
def running(tether: TetherRunner, echo_server: EchoServer) -> Iterator[Running]:
    with running_gateway(tether, {"echo": echo_server.address}) as run:
        yield run


def client_ssh(run: Running, key: Path, alias: str, certificate: bool = True) -> list[str]:
    """ssh with ``key`` to a gateway host known as ``alias``, trusting the gateway's host CA."""
    known = run.work / "client_known_hosts"
    ca = Path(f"{run.gateway.host_ca}.pub").read_text().split()
    known.write_text(known_hosts_line(f"{ca[0]} {ca[1]}"))
    cert = Path(f"{key}-cert.pub") if certificate else None
    options = ssh_options(key=key, certificate=cert, known_hosts=known, alias=alias)
    return ["ssh", "-F", "/dev/null", *options, "-l", pwd.getpwuid(os.getuid()).pw_name]


def client_argv(run: Running, key: Path, target: str) -> list[str]:
    """A client's hand-built path: what tether's gw:// transport will write as a config."""
    hop = [*client_ssh(run, key, RELAY_PRINCIPAL), "-p", str(run.relay_port)]
    hop += ["-W", f"127.0.0.1:{run.endpoint_port}", "127.0.0.1"]
    inner = client_ssh(run, key, site_host_alias("lab"))
    return [*inner, "-o", f"ProxyCommand={shlex.join(hop)}", "-W", target, "site"]


def test_a_client_reaches_a_target_behind_the_agent(
    running: Running, echo_server: EchoServer
) -> None:
    key = certified_user(running, "alice")
    done = subprocess.run(
        client_argv(running, key, echo_server.address),
        input="behind the agent\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.stdout == "behind the agent\n", done.stderr


def test_a_removed_sites_agent_is_cut_and_ends_with_exit_5(running: Running) -> None:
    """The relay cuts the agent's live session (the reaper), and refuses its next logins."""
    began = time.monotonic()
    enrol.remove_site(running.gateway, "lab")
    assert running.agent.finish(deadline=60) == 5
    last = running.agent.stderr.splitlines()[-1]
    assert last.startswith("tether: error: ") and "refused this site's certificate" in last
    assert time.monotonic() - began < 30
    audited_cut(running, "its site was removed")


def test_a_revoked_grant_cuts_the_live_session_within_5s(
    running: Running, echo_server: EchoServer
) -> None:
    key = certified_user(running, "carol")
    with echo_session(running, key, echo_server.address) as session:
        began = time.monotonic()
        policy.revoke(running.gateway.policy, "carol", "lab", "echo")
        session.wait(timeout=20)
        took = time.monotonic() - began
        assert took < 5, f"the session was cut after {took:.1f}s"
    audited_cut(running, "access revoked")


def audited_cut(running: Running, reason: str) -> None:
    """Wait for the audit log's line of a session cut for ``reason``. The relay hands the line
    to a signer as it cuts the session, and the signer writes it: the session can be seen to end
    first."""

    def said() -> bool:
        events = map(json.loads, running.gateway.audit.open())
        return any(e["event"] == "cut" and e["reason"] == reason for e in events)

    wait_until_sync(said, f"the audit log to say a session was cut: {reason}")


def certified_user(run: Running, name: str, grant_for: timedelta | None = None) -> Path:
    """A user with a grant of lab/echo and a certificate for it, beside their new key."""
    key = keygen.generate(run.work / name, name)
    public = Path(f"{key}.pub").read_text()
    policy.add_user(run.gateway.policy, name, public)
    until = None if grant_for is None else datetime.now(UTC) + grant_for
    policy.grant(run.gateway.policy, name, "lab", "echo", until)
    issued = issue(run.gateway, name, public, "lab", "echo")
    Path(f"{key}-cert.pub").write_text(issued.certificate + "\n")
    run.relay_has_policy()
    return key


@contextmanager
def echo_session(run: Running, key: Path, target: str) -> Iterator[subprocess.Popen[bytes]]:
    """A client's session to ``target``, proven to carry bytes, open until the block ends."""
    session = subprocess.Popen(
        client_argv(run, key, target),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert session.stdin is not None and session.stdout is not None
        session.stdin.write(b"still here\n")
        session.stdin.flush()
        assert session.stdout.readline() == b"still here\n"
        yield session
    finally:
        session.kill()
        session.wait()


def fetch_certificate(run: Running, key: Path, target: str) -> subprocess.CompletedProcess[str]:
    """Ask the relay's signer for a certificate, logging in with the user's own key."""
    argv = [*client_ssh(run, key, RELAY_PRINCIPAL, certificate=False), "-p", str(run.relay_port)]
    argv += ["127.0.0.1", "sign", target]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


def test_a_user_gets_a_certificate_from_the_relay_with_their_own_key(
    running: Running, echo_server: EchoServer
) -> None:
    key = keygen.generate(running.work / "bob", "bob")
    policy.add_user(running.gateway.policy, "bob", Path(f"{key}.pub").read_text())
    policy.grant(running.gateway.policy, "bob", "lab", "echo", None)
    relay_keys = running.relay_state() / "authorized_keys"
    wait_until_sync(lambda: "'bob'" in relay_keys.read_text(), "the relay to know bob")
    fetched = fetch_certificate(running, key, "lab/echo")
    assert fetched.returncode == 0, fetched.stderr
    answer = json.loads(fetched.stdout)
    # With the certificate, the way to the target as the site's agent announced it.
    assert answer["target"] == echo_server.address
    assert answer["port"] == running.endpoint_port
    assert answer["account"] == pwd.getpwuid(os.getuid()).pw_name
    Path(f"{key}-cert.pub").write_text(answer["certificate"] + "\n")
    done = subprocess.run(
        client_argv(running, key, echo_server.address),
        input="signed by the relay\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.stdout == "signed by the relay\n", done.stderr
    unknown = fetch_certificate(running, key, "lab/other")
    assert unknown.returncode == 4 and unknown.stdout == ""
    assert "serves no target other" in unknown.stderr, unknown.stderr
    policy.revoke(running.gateway.policy, "bob", "lab", "echo")
    refused = fetch_certificate(running, key, "lab/echo")
    assert refused.returncode == 5 and refused.stdout == ""
    assert "refused" in refused.stderr and refused.stderr.count("\n") == 1, refused.stderr
    # The key may do nothing else: no shell, no forwarding.
    assert fetch_certificate(running, key, "; sh").returncode == 2


def test_a_session_ends_when_its_grant_does(running: Running, echo_server: EchoServer) -> None:
    """OpenSSH lets a session outlive its certificate (whose end is the grant's here); the
    relay does not let it outlive the grant."""
    key = certified_user(running, "dave", grant_for=timedelta(seconds=6))
    end = next(
        datetime.fromisoformat(str(e["valid_before"]))
        for e in map(json.loads, running.gateway.audit.open())
        if e["event"] == "issued" and e["user"] == "dave"
    )
    with echo_session(running, key, echo_server.address) as session:
        session.wait(timeout=30)
        ended = datetime.now(UTC)
        assert ended >= end.replace(microsecond=0)
        assert (ended - end).total_seconds() < 5
