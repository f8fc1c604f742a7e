"""Which sessions the relay's reaper ends (reaper.access_ended)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tether.gateway.policy import Grant, Policy, Site
from tether.gateway.reaper import access_ended
from tether.gateway.sessions import Login
from tether.gateway.signer import client_key_id

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
