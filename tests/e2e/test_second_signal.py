"""A second stop signal during a drain ends the drain at once, against the real `tether`: the
process exits 0 well before the drain is over, its connections closed and nothing left."""

from __future__ import annotations

import signal
import socket
import subprocess
import time

import pytest

from tests.support.servers import EchoServer
from tests.support.tether_process import TetherRunner
from tests.support.waiting import wait_until_sync

DRAIN = 30.0
PROMPT = 10.0  # well before the drain, with room for a loaded machine


def closing(tether: TetherRunner) -> bool:
    return [entry["state"] for entry in tether.list_json()] == ["closing"]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (signal.SIGTERM, signal.SIGTERM),
        (signal.SIGINT, signal.SIGINT),
        (signal.SIGTERM, signal.SIGINT),
    ],
)
def test_a_second_signal_ends_the_drain(
    tether: TetherRunner, echo_server: EchoServer, first: int, second: int
) -> None:
    process = tether.spawn("start", "--to", echo_server.address, "--json", "--drain", "30s")
    port = process.json_line()["local_port"]
    with socket.create_connection(("127.0.0.1", port), timeout=DRAIN) as held:
        held.sendall(b"x")
        assert held.recv(1) == b"x"
        process.send_signal(first)
        wait_until_sync(lambda: closing(tether), "the drain to begin")
        began = time.monotonic()
        process.send_signal(second)
        assert process.finish(deadline=PROMPT) == 0
        assert time.monotonic() - began < PROMPT
        assert held.recv(1) == b""  # closed by the tunnel, not left open
    assert "asked again to stop; closing 1 connection(s) without draining" in process.stderr
    assert tether.list_json() == []


def test_a_signal_after_tether_stop_ends_the_drain(
    tether: TetherRunner, echo_server: EchoServer
) -> None:
    process = tether.spawn("start", "--to", echo_server.address, "--json", "--drain", "30s")
    info = process.json_line()
    with socket.create_connection(("127.0.0.1", info["local_port"]), timeout=DRAIN) as held:
        held.sendall(b"x")
        assert held.recv(1) == b"x"
        stopper = tether.spawn("stop", info["id"], "--timeout", str(DRAIN + 10))
        wait_until_sync(lambda: closing(tether), "the drain to begin")
        process.send_signal(signal.SIGTERM)
        assert process.finish(deadline=PROMPT) == 0
        assert stopper.finish(deadline=PROMPT) == 0
    assert tether.list_json() == []


def test_a_second_signal_ends_the_shells_drain(
    tether: TetherRunner, echo_server: EchoServer
) -> None:
    shell = tether.spawn("shell", stdin=subprocess.PIPE)
    assert shell.proc.stdin is not None
    shell.proc.stdin.write(f"start --to {echo_server.address} --name held --drain 30s\n".encode())
    shell.proc.stdin.flush()
    shell.wait_stderr("held ready on")
    (entry,) = tether.list_json()
    with socket.create_connection(("127.0.0.1", entry["local_port"]), timeout=DRAIN) as held:
        held.sendall(b"x")
        assert held.recv(1) == b"x"
        shell.send_signal(signal.SIGTERM)
        wait_until_sync(lambda: closing(tether), "the drain to begin")
        began = time.monotonic()
        shell.send_signal(signal.SIGTERM)
        assert shell.finish(deadline=PROMPT) == 128 + signal.SIGTERM
        assert time.monotonic() - began < PROMPT
        assert held.recv(1) == b""
    # The close went through (it was not cut off by the signal): the tunnel says so.
    assert "asked again to stop; closing 1 connection(s) without draining" in shell.stderr
    assert tether.list_json() == []
