"""`tether gateway status`: gathered from a policy and hand-written status files (fresh, stale,
left, missing, unreadable, hostile), and rendered as tables or JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tether.cli.gatewaystatus import render_status
from tether.errors import ConfigError
from tether.gateway.gatewaystatus import MAX_SESSIONS, STALE, GatewayStatus, gather
from tether.gateway.layout import Gateway
from tether.gateway.signer import client_key_id

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHQ6EOaTwWyasL+lWPWkjnlX2ZShGJsW+DQHtxY2MAHM"
POLICY = f"""
[users.alice]
key = "{KEY}"
[users.bob]
key = "{KEY}"
[sites.lab]
port = 42001
[sites.web]
port = 42002
[relays.r1]
serial = 3
[relays.r2]
serial = 4
[relays.r3]
serial = 5
[[grants]]
user = "alice"
target = "lab/db"
[[grants]]
user = "bob"
target = "lab/db"
until = 2026-12-07T12:00:00Z
"""
CERT_END = NOW + timedelta(minutes=4)


@pytest.fixture
def gateway(tmp_path: Path) -> Gateway:
    gateway = Gateway(tmp_path)
    gateway.policy.write_text(POLICY)
    gateway.status.mkdir()
    return gateway


def said(gateway: Gateway, relay: str, record: object, *, raw: str | None = None) -> None:
    """A status file as a signer's feed writes it."""
    text = raw if raw is not None else json.dumps(record)
    (gateway.status / f"{relay}.json").write_text(text)


def heard(at: datetime, status: object) -> dict[str, object]:
    return {"relay": "ignored", "time": at.isoformat(timespec="seconds"), "status": status}


def session(key_id: str, **fields: object) -> dict[str, object]:
    entry: dict[str, object] = {
        "key_id": key_id,
        "serial": 12,
        "peer": "127.0.0.1:50000",
        "seconds": 75,
        "bytes_from_client": 100,
        "bytes_to_client": 2048,
    }
    return {**entry, **fields}


def alice(target: str = "db", user: str = "alice") -> str:
    return client_key_id(user, "lab", target, CERT_END)


def test_relays_up_down_and_never_seen(gateway: Gateway) -> None:
    said(gateway, "r1", heard(NOW - timedelta(seconds=2), {"listen": "0.0.0.0:2222"}))
    stale = NOW - STALE - timedelta(seconds=1)
    said(gateway, "r2", heard(stale, {"listen": "0.0.0.0:2222", "sessions": [session(alice())]}))
    said(gateway, "gone", heard(NOW, {}))  # a relay no longer in the policy: not shown
    status = gather(gateway, NOW)
    states = {r.name: (r.state, r.last_heard) for r in status.relays}
    assert states == {
        "r1": ("up", NOW - timedelta(seconds=2)),
        "r2": ("down", stale),
        "r3": ("never_seen", None),
    }
    assert status.sessions == ()  # a relay that is down has no session anyone knows of
    text = render_status(status, as_json=False)
    assert f"down since {stale:%Y-%m-%d %H:%M:%S}Z" in text
    assert "never seen" in text


def test_a_relay_whose_feed_ended_is_down_at_once(gateway: Gateway) -> None:
    left = NOW - timedelta(seconds=1)
    said(gateway, "r1", {"relay": "r1", "time": left.isoformat(), "left": True})
    (relay, *_) = gather(gateway, NOW).relays
    assert (relay.state, relay.last_heard) == ("down", left)


def test_sites_and_sessions(gateway: Gateway) -> None:
    sessions = [
        session("agent:lab", serial=2),
        session(alice(), peer="203.0.113.7:50122"),
        session(alice(user="bob")),
        session(alice("web")),  # no grant: the relay is cutting it
    ]
    said(gateway, "r1", heard(NOW, {"listen": "0.0.0.0:2222", "sessions": sessions}))
    said(gateway, "r2", heard(NOW, {"listen": "0.0.0.0:2223", "sessions": [sessions[0]]}))
    status = gather(gateway, NOW)
    assert [(s.name, s.relays) for s in status.sites] == [("lab", ("r1", "r2")), ("web", ())]
    r1 = status.relays[0]
    assert (r1.listen, r1.sites, r1.sessions, r1.omitted) == ("0.0.0.0:2222", ("lab",), 3, 0)
    grants = {(s.user, s.target): (s.granted, s.grant_until) for s in status.sessions}
    assert grants == {
        ("alice", "db"): (True, None),
        ("alice", "web"): (False, None),
        ("bob", "db"): (True, datetime(2026, 12, 7, 12, 0, tzinfo=UTC)),
    }
    first = status.sessions[0]
    assert (first.relay, first.site, first.peer, first.seconds) == (
        "r1",
        "lab",
        "203.0.113.7:50122",
        75,
    )
    assert (first.bytes_from_client, first.bytes_to_client) == (100, 2048)
    assert first.certificate_until == CERT_END

    text = render_status(status, as_json=False)
    rows = text.splitlines()
    assert rows[0].split("  ")[0] == "RELAY"
    assert any("alice" in row and "until revoked" in row and "4m00s left" in row for row in rows)
    assert any("bob" in row and "1d00h left (to 2026-12-07 12:00:00Z)" in row for row in rows)
    assert any("lab/web" in row and "none: being cut" in row for row in rows)
    assert any(row.startswith("lab ") and "r1, r2" in row for row in rows)


def test_the_json_document_and_its_keys(gateway: Gateway) -> None:
    said(gateway, "r1", heard(NOW, {"listen": "0.0.0.0:2222", "sessions": [session(alice())]}))
    document = json.loads(render_status(gather(gateway, NOW), as_json=True))
    assert list(document) == ["time", "relays", "sites", "sessions"]
    assert document["time"] == "2026-12-06T12:00:00+00:00"
    assert document["relays"][0] == {
        "name": "r1",
        "state": "up",
        "last_heard": "2026-12-06T12:00:00+00:00",
        "listen": "0.0.0.0:2222",
        "sites": [],
        "sessions": 1,
        "omitted": 0,
    }
    assert document["relays"][2]["state"] == "never_seen"
    assert document["sites"][0] == {"name": "lab", "port": 42001, "relays": []}
    assert document["sessions"] == [
        {
            "relay": "r1",
            "user": "alice",
            "site": "lab",
            "target": "db",
            "serial": 12,
            "peer": "127.0.0.1:50000",
            "seconds": 75,
            "bytes_from_client": 100,
            "bytes_to_client": 2048,
            "granted": True,
            "grant_until": None,
            "certificate_until": "2026-12-06T12:04:00+00:00",
        }
    ]


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[1, 2]",
        '"a string"',
        '{"time": 12}',
        '{"time": "yesterday"}',
        '{"time": "2026-12-06T12:00:00"}',  # no zone
        '{"status": {}}',
        '{"time": "2026-12-06T12:00:00+00:00", "status": []}',
        '{"time": "2026-12-06T12:00:00+00:00"}',
        "[" * 100_000 + "]" * 100_000,
        "\xff\xfe",
    ],
)
def test_an_unreadable_status_file(gateway: Gateway, raw: str) -> None:
    said(gateway, "r1", None, raw=raw)
    (relay, *_) = gather(gateway, NOW).relays
    assert (relay.state, relay.last_heard) == ("unreadable", None)
    assert "unreadable" in render_status(gather(gateway, NOW), as_json=False)


def test_a_status_file_that_is_a_directory_is_unreadable(gateway: Gateway) -> None:
    (gateway.status / "r1.json").mkdir()
    assert gather(gateway, NOW).relays[0].state == "unreadable"


def test_hostile_values_are_left_out_and_never_printed_raw(gateway: Gateway) -> None:
    bad = [
        "a string",
        None,
        session("x" * 500),
        session("root@lab/db@20261206120000Z; rm"),
        session("agent:nosuchsite"),
        session(alice(), serial=-1),
        session(alice(), serial=True),
        session(alice(), seconds=float("nan")),
        session(alice(), seconds=float("inf")),
        session(alice(), bytes_to_client=2**64),
        session(alice(), bytes_from_client="12"),
        session(alice(), peer=["127.0.0.1"]),
        session(alice(), peer="p" * 1000),
    ]
    good = session(alice(), peer="\x1b[2J10.0.0.1:22\nr9  up")
    hostile = {"listen": "\x1b]0;owned\x07:22", "sessions": [*bad, good]}
    said(gateway, "r1", heard(NOW, hostile))
    status = gather(gateway, NOW)
    r1 = status.relays[0]
    assert (r1.sessions, r1.omitted, r1.sites) == (1, len(bad), ())
    text = render_status(status, as_json=False)
    assert "\x1b" not in text and "\x07" not in text
    assert "\\x1b[2J10.0.0.1:22\\nr9  up" in text
    assert len(text.splitlines()) == 4 + 1 + 3 + 1 + 2  # no row was forged
    document = render_status(status, as_json=True)
    assert "\x1b" not in document and json.loads(document)["sessions"][0]["peer"] == good["peer"]


def test_a_relay_claiming_too_many_sessions_is_bounded(gateway: Gateway) -> None:
    many = [session(alice(), peer=f"127.0.0.1:{n}") for n in range(MAX_SESSIONS + 5)]
    said(gateway, "r1", heard(NOW, {"sessions": many, "listen": 22}))
    status = gather(gateway, NOW)
    assert (status.relays[0].sessions, status.relays[0].omitted) == (MAX_SESSIONS, 5)
    assert status.relays[0].listen is None
    assert f"{MAX_SESSIONS} (5 omitted)" in render_status(status, as_json=False)


def test_the_sessions_a_relay_did_not_list_are_counted_as_omitted(gateway: Gateway) -> None:
    # A relay lists MAX_TOLD sessions at most, and says how many more it holds.
    listed = [session(alice(), peer=f"127.0.0.1:{n}") for n in range(3)]
    said(gateway, "r1", heard(NOW, {"sessions": listed, "listen": "x:22", "untold": 4000}))
    assert (gather(gateway, NOW).relays[0].sessions, gather(gateway, NOW).relays[0].omitted) == (
        3,
        4000,
    )
    for bogus in ("4000", -1, 2**64, True):
        said(gateway, "r1", heard(NOW, {"sessions": listed, "listen": "x:22", "untold": bogus}))
        assert gather(gateway, NOW).relays[0].omitted == 0


def test_an_invalid_policy_is_a_one_line_error(gateway: Gateway) -> None:
    gateway.policy.write_text("[relays.r1]\nserial = -1\n")
    with pytest.raises(ConfigError, match=r"relays\.r1\.serial"):
        gather(gateway, NOW)


def test_an_empty_gateway(gateway: Gateway) -> None:
    gateway.policy.write_text("")
    status = gather(gateway, NOW)
    assert status == GatewayStatus(NOW, (), (), ())
    text = render_status(status, as_json=False)
    assert text.splitlines() == [
        "No relays in the policy",
        "",
        "No sites in the policy",
        "",
        "No live sessions",
    ]
