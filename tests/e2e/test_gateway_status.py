"""`tether gateway status DIR`: a real signer, relay and agent, a user's tunnel through them, and
what the operator sees of it all, up and then with the relay stopped."""

from __future__ import annotations

import json
import signal
from typing import Any

from tests.support.gateway import Running, alice, running_gateway, started
from tests.support.servers import EchoServer, echo_once
from tests.support.tether_process import TetherRunner
from tests.support.waiting import wait_until_sync


def status(tether: TetherRunner, run: Running) -> dict[str, Any]:
    code, out, err = tether.run("gateway", "status", str(run.gateway.root), "--json")
    assert code == 0, err
    document = json.loads(out)
    assert isinstance(document, dict)
    return document


def test_status_shows_relays_sites_and_sessions(
    tether: TetherRunner, echo_server: EchoServer
) -> None:
    with running_gateway(tether, {"echo": echo_server.address}) as run:
        client = alice(tether, run)
        tunnel, port = started(tether, client)
        assert echo_once(port, b"counted") == b"counted"
        seen: dict[str, Any] = {}

        def shown() -> bool:
            """r1 up, lab linked to it, and alice's session with bytes counted (each second)."""
            seen.update(status(tether, run))
            sessions = [s for s in seen["sessions"] if s["user"] == "alice"]
            return (
                [(r["name"], r["state"]) for r in seen["relays"]] == [("r1", "up")]
                and seen["sites"] == [{"name": "lab", "port": run.endpoint_port, "relays": ["r1"]}]
                and len(sessions) == 1
                and sessions[0]["bytes_from_client"] > 0
                and sessions[0]["bytes_to_client"] > 0
            )

        wait_until_sync(shown, "status to show the relay, the site and alice's session")
        (session,) = seen["sessions"]
        assert (session["relay"], session["site"], session["target"]) == ("r1", "lab", "echo")
        assert session["granted"] is True and session["grant_until"] is None
        assert session["certificate_until"] > seen["time"]
        assert seen["relays"][0]["listen"] == f"127.0.0.1:{run.relay_port}"

        code, text, err = tether.run("gateway", "status", str(run.gateway.root))
        assert code == 0, err
        assert any(row.split()[:2] == ["r1", "up"] for row in text.splitlines()), text
        assert any("alice" in row and "lab/echo" in row for row in text.splitlines()), text

        run.relay.send_signal(signal.SIGTERM)
        assert run.relay.finish() == 0
        wait_until_sync(
            lambda: status(tether, run)["relays"][0]["state"] == "down",
            "status to show the relay down",
            deadline=30,  # at once when its feed's end is seen; three heartbeats at the latest
        )
        after = status(tether, run)
        assert after["sessions"] == [] and after["sites"][0]["relays"] == []
        assert after["relays"][0]["last_heard"] is not None
        tunnel.send_signal(signal.SIGTERM)
        tunnel.finish()


def test_status_of_a_directory_that_is_no_gateway(tether: TetherRunner, tmp_path: Any) -> None:
    code, out, err = tether.run("gateway", "status", str(tmp_path / "nowhere"))
    assert (code, out) == (2, "")
    assert err.startswith("tether: error: ") and "not a gateway" in err
    assert len(err.strip().splitlines()) == 1
