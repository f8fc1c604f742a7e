"""A gateway's relay and agent run as tunnels do: listed with their live state, stopped with
`tether stop`, in the background, and under a service manager."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from tests.support.gateway import running_gateway
from tests.support.servers import EchoServer, free_port
from tests.support.strict_dirs import strict_tmp
from tests.support.systemd import NotifySocket
from tests.support.tether_process import TetherRunner
from tether.gateway import layout, relaybundle
from tether.gateway.sessions import leftovers
from tether.spec import Endpoint


def relay_bundle(work: Path) -> Path:
    """A gateway in ``work`` with relay r1 whose signer the relay has reached before: its
    state directory holds the policy the signer sent, and a relay serves from it while no
    signer answers (none runs here)."""
    gateway = layout.init(work / "gw")
    bundle = relaybundle.add_relay(gateway, "r1", [Endpoint("127.0.0.1", free_port())])
    state = work / "relay"
    state.mkdir(mode=0o700)
    (state / "policy.toml").write_bytes(gateway.policy.read_bytes())
    return bundle


def test_relay_and_agent_are_listed_and_stopped(
    tether: TetherRunner, echo_server: EchoServer
) -> None:
    with running_gateway(tether, {"echo": echo_server.address}) as run:
        listed = {t["kind"]: t for t in tether.list_json()}
        assert set(listed) == {"signer", "relay", "agent"}
        signer, relay, agent = listed["signer"], listed["relay"], listed["agent"]
        assert (signer["name"], signer["state"], signer["local_port"]) == (
            "signer",
            "ready",
            run.signer_port,
        )
        assert signer["target_host"] == str(run.gateway.root)
        assert (relay["name"], relay["state"], relay["local_port"]) == (
            "relay-r1",
            "ready",
            run.relay_port,
        )
        assert relay["target_host"] == "r1" and relay["mode"] == "foreground"
        assert relay["via"] == f"ssh://127.0.0.1:{run.signer_port}"
        assert (agent["name"], agent["state"], agent["target_host"]) == (
            "agent-lab",
            "ready",
            "lab",
        )
        assert agent["via"] == f"gw://127.0.0.1:{run.relay_port}"
        code, table, _ = tether.run("list")
        assert f"gateway {run.gateway.root}" in table and "site lab" in table
        assert "relay r1" in table
        code, _, err = tether.run("stop", "agent-lab")
        assert code == 0, err
        assert run.agent.finish() == 0
        code, _, err = tether.run("stop", "relay-r1")
        assert code == 0, err
        assert run.relay.finish() == 0
        code, _, err = tether.run("stop", "signer")
        assert code == 0, err
        assert run.signer.finish() == 0
        assert tether.list_json() == []
        assert leftovers(run.relay_port) == [] and leftovers(run.signer_port) == []


def test_a_relay_in_the_background(tether: TetherRunner, tmp_path: Path) -> None:
    with strict_tmp() as work:
        bundle = relay_bundle(work)
        port = free_port()
        code, out, err = tether.run(
            "gateway", "relay", str(bundle), "--listen", f"127.0.0.1:{port}",
            "--state-dir", str(work / "relay"), "--background", "--json", "--name", "edge-relay",
        )  # fmt: skip
        assert code == 0, err
        record = json.loads(out)
        assert (record["kind"], record["mode"], record["name"]) == (
            "relay",
            "background",
            "edge-relay",
        )
        assert record["state"] == "ready" and record["log_file"]
        (listed,) = tether.list_json()
        # The command has returned; the relay lives on, detached, as its record says.
        assert (listed["id"], listed["pid"], listed["state"]) == (
            record["id"],
            record["pid"],
            "ready",
        )
        code, _, err = tether.run("stop", "edge-relay")
        assert code == 0, err
        assert tether.list_json() == []
        assert leftovers(port) == []


def test_a_relay_tells_its_service_manager(tether: TetherRunner, tmp_path: Path) -> None:
    with strict_tmp() as work, NotifySocket(str(tmp_path / "notify")) as notify:
        bundle = relay_bundle(work)
        relay = tether.spawn(
            "gateway", "relay", str(bundle), "--listen", f"127.0.0.1:{free_port()}",
            "--state-dir", str(work / "relay"), env={"NOTIFY_SOCKET": notify.env},
        )  # fmt: skip
        notify.until_text("READY=1\nSTATUS=relay relay-r1 ready")
        relay.send_signal(signal.SIGTERM)
        notify.until_text("STOPPING=1\nSTATUS=stopping")
        assert relay.finish() == 0
        assert {note.pid for note in notify.received} == {relay.pid}
