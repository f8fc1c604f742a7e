"""The records that cross process boundaries, and their JSON forms."""

from __future__ import annotations

import pytest

from tether.protocol import Status, parse_request, request_line
from tether.spec import Endpoint
from tether.stats import TunnelStats


def test_status_from_the_engine_and_back() -> None:
    stats = TunnelStats(
        state="ready",
        local=Endpoint("127.0.0.1", 1),
        target=Endpoint("db", 5432),
        via="direct",
        engine=None,
        connections_active=1,
        connections_total=3,
        bytes_in=20,
        bytes_out=10,
        uptime=1.23456,
        last_error=None,
        reconnect_attempt=0,
        reconnects=0,
        ttl_left=None,
        idle_left=2.5,
    )
    status = Status.of(stats, ready_once=True)
    assert (status.bytes_in, status.bytes_out, status.uptime) == (20, 10, 1.235)
    assert Status.from_json(status.to_json()) == status
    assert Status.of(stats, ready_once=False).uptime is None


def test_a_status_field_of_the_wrong_type_is_not_said() -> None:
    status = Status.from_json({"state": "ready", "bytes_in": "lots", "uptime": True})
    assert status == Status(state="ready")
    assert Status.from_json({}).state == "unknown"


def test_requests_carry_their_deadline() -> None:
    assert parse_request(request_line("stop", 12.5)) == ("stop", 12.5)
    assert parse_request(b'{"op": "status"}') == ("status", None)
    with pytest.raises(ValueError):
        parse_request(b"[1, 2]")


@pytest.mark.parametrize("until", ["NaN", "Infinity", "1e999", '"12"', "false", "[1]", "null"])
def test_a_deadline_must_be_a_finite_number(until: str) -> None:
    with pytest.raises(ValueError):
        parse_request(b'{"op": "stop", "until": ' + until.encode() + b"}")


def test_nesting_is_bounded_before_decoding() -> None:
    with pytest.raises(ValueError, match="nested deeper than"):
        parse_request(b"[" * 4000)
    assert parse_request(b'{"op": "status", "until": 1, "n": "[[[[[[[[[[[[\\""}') == ("status", 1)
