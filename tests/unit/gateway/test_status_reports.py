"""What a relay says of itself to its signer, and what the signer's feed keeps of it for `tether
gateway status`: a heartbeat even when nothing changed, and a mark when the relay's feed ends."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import cast

import pytest

from tether.gateway.feed import Feed
from tether.gateway.layout import Gateway
from tether.gateway.reaper import Sessions
from tether.gateway.relay import HEARTBEAT, Relay
from tether.spec import Endpoint


class Told:
    def __init__(self) -> None:
        self.said: list[dict[str, object]] = []

    def status(self, status: dict[str, object]) -> None:
        self.said.append(status)


def bare_relay(told: Told) -> Relay:
    relay = object.__new__(Relay)  # no bundle, no sshd: only what _tell reads
    relay.feed = told  # type: ignore[assignment]
    relay.listen = Endpoint("127.0.0.1", 2222)
    relay.sessions = Sessions(relay.listen, lambda *_, **__: None)
    relay._said, relay._said_at = None, 0.0
    return relay


def login(port: int) -> str:
    """sshd's line for a client's login from 127.0.0.1:``port``."""
    return (
        f"Accepted publickey for tether from 127.0.0.1 port {port} ssh2: ED25519-CERT "
        "SHA256:abc ID alice@lab/echo@20991231000000Z (serial 3) CA ED25519 SHA256:def"
    )


def test_a_relay_repeats_its_status_each_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr("tether.gateway.relay.time.monotonic", lambda: clock[0])
    told = Told()
    relay = bare_relay(told)
    relay._tell()
    clock[0] += HEARTBEAT - 1
    relay._tell()  # unchanged, and a heartbeat has not passed
    assert told.said == [{"listen": "127.0.0.1:2222", "sessions": []}]
    clock[0] += 1
    relay._tell()
    assert len(told.said) == 2


def test_a_relay_tells_a_change_at_once_and_ages_at_the_heartbeat(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Thousands of idle sessions age each second: that alone is not sent each second.
    clock = [1000.0]
    monkeypatch.setattr("tether.gateway.relay.time.monotonic", lambda: clock[0])
    monkeypatch.setattr("tether.gateway.reaper.time.monotonic", lambda: clock[0])
    told = Told()
    relay = bare_relay(told)
    relay._tell()
    relay.sessions.heard(login(50000))
    relay._tell()
    assert len(told.said) == 2 and len(cast(list[object], told.said[1]["sessions"])) == 1
    clock[0] += 2
    relay._tell()
    assert len(told.said) == 2
    relay.sessions.closed(("127.0.0.1", 50000))
    relay._tell()
    assert len(told.said) == 3 and told.said[2]["sessions"] == []


def test_a_relay_lists_so_many_sessions_and_counts_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("tether.gateway.relay.MAX_TOLD", 2)
    told = Told()
    relay = bare_relay(told)
    for port in (50000, 50001, 50002):
        relay.sessions.heard(login(port))
    relay._tell()
    (said,) = told.said
    assert len(cast(list[object], said["sessions"])) == 2 and said["untold"] == 1


def feed(tmp_path: Path) -> tuple[Feed, Path]:
    gateway = Gateway(tmp_path)
    gateway.status.mkdir()
    unused = cast(asyncio.StreamReader, None)
    return Feed(gateway, "r1", unused, cast(asyncio.WriteTransport, None)), gateway.status


def test_a_feed_marks_its_relay_left_when_it_ends(tmp_path: Path) -> None:
    serving, status = feed(tmp_path)
    serving._left()  # it never said anything: nothing is written
    assert not (status / "r1.json").exists()
    serving._status({"listen": "127.0.0.1:2222", "sessions": []})
    kept = json.loads((status / "r1.json").read_text())
    assert (kept["relay"], kept["status"]["listen"]) == ("r1", "127.0.0.1:2222")
    serving._left()
    left = json.loads((status / "r1.json").read_text())
    assert left["left"] is True and "status" not in left


def test_a_feed_leaves_another_signers_status_alone(tmp_path: Path) -> None:
    """The relay moved on to another signer before this feed saw its session end: that
    signer's feed wrote the file since, and it stays."""
    serving, status = feed(tmp_path)
    serving._status({"listen": "127.0.0.1:2222", "sessions": []})
    other = '{"relay": "r1", "time": "2026-12-06T12:00:00+00:00", "status": {}}\n'
    (status / "r1.json").write_text(other)
    serving._left()
    assert (status / "r1.json").read_text() == other
