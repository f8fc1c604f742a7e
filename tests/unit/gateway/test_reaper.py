"""Which sessions the relay's reaper ends (reaper.access_ended), and how it cuts one."""

from __future__ import annotations

import os
import signal
import subprocess
from datetime import UTC, datetime, timedelta

import pytest

from tether.gateway import reaper
from tether.gateway.policy import Grant, Policy, Site
from tether.gateway.reaper import access_ended
from tether.gateway.sessions import Login
from tether.gateway.signer import client_key_id
from tether.spec import Endpoint

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def policy_with(*grants: Grant, serial: int = 7) -> Policy:
    return Policy(users={}, sites={"lab": Site("lab", 42001, serial)}, grants=grants)


def client(end: datetime) -> Login:
    return Login(client_key_id("alice", "lab", "db", end), 12, "127.0.0.1", 50000)


def test_a_live_grant_keeps_its_session_past_the_certificates_end() -> None:
    live = policy_with(Grant("alice", "lab", "db", None))
    assert access_ended(client(NOW - timedelta(minutes=1)), live, NOW) is None


def test_a_revoked_or_expired_grant_ends_its_session() -> None:
    login = client(NOW + timedelta(minutes=4))
    assert access_ended(login, policy_with(), NOW) == "access revoked"
    expired = policy_with(Grant("alice", "lab", "db", NOW - timedelta(seconds=1)))
    assert access_ended(login, expired, NOW) == "access revoked"
    # A grant of another target, or to another user, keeps nothing alive.
    others = policy_with(Grant("alice", "lab", "web", None), Grant("bob", "lab", "db", None))
    assert access_ended(login, others, NOW) == "access revoked"


def test_an_agent_of_a_removed_or_re_enrolled_site_is_cut() -> None:
    agent = Login("agent:lab", 7, "127.0.0.1", 50001)
    assert access_ended(agent, policy_with(serial=7), NOW) is None
    assert access_ended(agent, policy_with(serial=8), NOW) == "its site was removed"
    gone = Policy(users={}, sites={}, grants=())
    assert access_ended(agent, gone, NOW) == "its site was removed"


def test_a_key_id_tether_did_not_write_is_left_alone() -> None:
    assert access_ended(Login("someone", 3, "127.0.0.1", 1), policy_with(), NOW) is None


async def test_a_cut_is_recorded_before_its_session_is_killed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The audit line leaves first: a relay that dies right after the kill has still sent it."""
    session = subprocess.Popen(["sleep", "300"])
    done: list[str] = []  # each audit line's event, and "kill" when the session is signalled
    kill = os.kill

    def killing(pid: int, signum: int) -> None:
        done.append("kill")
        kill(pid, signum)

    monkeypatch.setattr(reaper, "holder", lambda root, host, port: session.pid)
    monkeypatch.setattr(os, "kill", killing)
    try:
        sessions = reaper.Sessions(
            Endpoint("127.0.0.1", 2222), lambda event, **_: done.append(event)
        )
        sessions.heard(ACCEPTED.format(key_id=client(NOW).key_id))
        assert await sessions.reap(1, policy_with(), NOW)
        assert done == ["opened", "cut", "kill"]
        assert session.wait(timeout=10) == -signal.SIGTERM
    finally:
        session.kill()
        session.wait()


ACCEPTED = (
    "Accepted publickey for tether from 127.0.0.1 port 50000 ssh2: ED25519-CERT SHA256:abc "
    "ID {key_id} (serial 12) CA ED25519 SHA256:def"
)
