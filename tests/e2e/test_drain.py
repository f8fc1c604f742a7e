"""The drain rule, per mode and per way of stopping: a graceful stop lets an open connection
finish in every mode that gets one (modes/drain.py holds the rule)."""

from __future__ import annotations

import os
import signal
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import EchoServer
from tests.support.tether_process import TetherProcess, TetherRunner
from tests.support.waiting import wait_until_sync
from tether.modes.drain import DRAINS, ENDINGS, drain_for
from tether.states import MODES, Mode
from tether.spec import Endpoint, TunnelSpec


def alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def the_entry(tether: TetherRunner) -> dict[str, Any] | None:
    listed = tether.list_json()
    return listed[0] if len(listed) == 1 else None


def start(tether: TetherRunner, mode: str, target: str) -> TetherProcess | None:
    flags = ("start", "--to", target, "--drain", "30")
    if mode == "background":
        code, _, err = tether.run(*flags, "--background")
        assert code == 0, err
        return None
    if mode == "run":
        return tether.spawn(*flags, "--run", "sleep 300")
    return tether.spawn(*flags)


def echoes(sock: socket.socket, data: bytes) -> bool:
    sock.sendall(data)
    got = b""
    while len(got) < len(data) and (chunk := sock.recv(len(data) - len(got))):
        got += chunk
    return got == data


@pytest.mark.parametrize("way", ["stop", "signal"])
@pytest.mark.parametrize("mode", ["foreground", "background", "run"])
def test_a_graceful_stop_drains_an_open_connection(
    tether: TetherRunner, echo_server: EchoServer, mode: str, way: str
) -> None:
    process = start(tether, mode, echo_server.address)
    try:
        wait_until_sync(
            lambda: (e := the_entry(tether)) is not None and e["state"] == "ready", "ready"
        )
        entry = the_entry(tether)
        assert entry is not None and entry["mode"] == mode
        pid = int(entry["pid"])
        stopper: threading.Thread | None = None
        with socket.create_connection(("127.0.0.1", entry["local_port"]), timeout=10) as sock:
            assert echoes(sock, b"before")
            if way == "stop":
                stopper = threading.Thread(target=tether.run, args=("stop", entry["id"]))
                stopper.start()
            else:
                os.kill(pid, signal.SIGTERM)
            wait_until_sync(
                lambda: (e := the_entry(tether)) is not None and e["state"] == "closing",
                "the drain to begin",
            )
            assert echoes(sock, b"during the drain")  # the open connection is still served
        # Its last connection closed, the drain ends long before its 30 s.
        wait_until_sync(lambda: not alive(pid), "the tunnel to exit")
        if stopper is not None:
            stopper.join(30)
        assert tether.list_json() == []
    finally:
        if process is not None:
            process.finish()


SPEC = TunnelSpec(target=Endpoint("db", 5432), drain=7.0)


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_reads_one_rule(mode: Mode) -> None:
    rules = DRAINS[mode]
    assert set(rules) <= set(ENDINGS)
    for ending in ENDINGS:
        assert drain_for(SPEC, mode, ending) == (7.0 if rules.get(ending) else 0.0)
    assert rules["stop"] and not rules["lost"]  # `tether stop` drains everywhere; loss nowhere
    # Signals drain wherever they reach the tunnel's process; a command's own end does not.
    assert [m for m in MODES if DRAINS[m].get("signal")] == ["foreground", "background", "run"]
    assert DRAINS["run"]["command"] is False
    # A lifetime bound drains like a stop, but in the API, where it ends the program's block.
    assert rules["ttl"] == rules["idle"] == (mode != "api")
