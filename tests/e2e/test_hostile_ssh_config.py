"""A user's ssh_config that would change the OpenSSH master's process or session shape (fork,
bind, run, prompt): through real sshd, the tunnel works and no process outlives it, for `tether
start` and for `tether diagnose`."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

import pytest

from tests.e2e.test_ssh_config import THROUGH, config_file, host_lines, jump_pair, start
from tests.support.servers import EchoServer, echo_once, free_port
from tests.support.sshd_server import SshdServer
from tests.support.waiting import wait_until_sync
from tests.support.tether_process import TetherRunner


# One user setting per directive the generated config pins; each would make the master fork,
# bind, run something, open a session or prompt. "{port}" is a free local port.
HOSTILE = {
    "ForkAfterAuthentication": ["ForkAfterAuthentication yes"],
    "SessionType": ["SessionType default"],
    "StdinNull": ["StdinNull yes"],
    "Tunnel": ["Tunnel point-to-point"],
    "RequestTTY": ["RequestTTY force"],
    "RemoteCommand": ["RemoteCommand sleep 600"],
    "PermitLocalCommand": ["PermitLocalCommand yes", "LocalCommand sleep 600"],
    "ForwardAgent": ["ForwardAgent yes"],
    "ForwardX11": ["ForwardX11 yes", "ForwardX11Trusted yes"],
    "ClearAllForwardings": [
        "DynamicForward 127.0.0.1:{port}",
        "RemoteForward 127.0.0.1:{port} 127.0.0.1:9",
    ],
    "GatewayPorts": ["GatewayPorts yes", "LocalForward {port} 127.0.0.1:9"],
    "EscapeChar": ["EscapeChar ~", "EnableEscapeCommandline yes"],
    "AddKeysToAgent": ["AddKeysToAgent ask"],
    "ControlPersist": ["ControlMaster auto", "ControlPath {dir}/cm-%C", "ControlPersist yes"],
    "ExitOnForwardFailure": ["ExitOnForwardFailure no"],
    "BatchMode": ["BatchMode no", "PasswordAuthentication yes"],
    "VisualHostKey": ["VisualHostKey yes"],
}


def hostile_config(tmp_path: Path, server: SshdServer, directive: str) -> tuple[Path, int]:
    port = free_port()
    lines = [line.format(port=port, dir=tmp_path) for line in HOSTILE[directive]]
    hosts = {"hostile": [*lines, *host_lines(server, server.client_key, server.known_hosts)]}
    return config_file(tmp_path / "hostile_config", hosts), port


__all__ = ["jump_pair"]  # a fixture, shared with test_ssh_config


@pytest.fixture
def openssh_sshd(shared_sshd: SshdServer) -> SshdServer:
    return shared_sshd.through("openssh")


@pytest.mark.parametrize("directive", sorted(HOSTILE))
def test_a_hostile_directive_changes_nothing(
    tether: TetherRunner,
    openssh_sshd: SshdServer,
    echo_server: EchoServer,
    tmp_path: Path,
    directive: str,
) -> None:
    config, port = hostile_config(tmp_path, openssh_sshd, directive)
    flags = ["--via", "ssh://hostile", "--ssh-config", str(config), "--engine", "openssh"]
    # The master is shared: it outlives the tunnel by its linger, and no more (a hostile
    # ControlPersist included).
    process = start(tether, "--to", echo_server.address, *flags, "--master-linger", "1s")
    (entry,) = tether.list_json()
    assert echo_once(entry["local_port"], THROUGH) == THROUGH
    with socket.socket() as taker:
        taker.bind(("127.0.0.1", port))  # no forward of the user's was bound
    assert len(tether.own_processes()) == 2  # tether and its one master
    process.send_signal(signal.SIGTERM)
    assert process.finish() == 0, process.stderr
    # No ssh outlives the tunnel and the linger.
    wait_until_sync(lambda: not tether.own_processes(), "the master to end", 1 + 8)
    assert not list(tmp_path.glob("cm-*"))


@pytest.mark.parametrize("directive", ["ForkAfterAuthentication", "RemoteCommand", "StdinNull"])
def test_diagnose_with_a_hostile_directive(
    tether: TetherRunner,
    openssh_sshd: SshdServer,
    echo_server: EchoServer,
    tmp_path: Path,
    directive: str,
) -> None:
    config, _ = hostile_config(tmp_path, openssh_sshd, directive)
    code, out, err = tether.run(
        "diagnose",
        *("--to", echo_server.address, "--via", "ssh://hostile"),
        *("--ssh-config", str(config), "--engine", "openssh", "--json"),
    )
    assert code == 0, err
    assert json.loads(out)["ok"] is True
    assert tether.own_processes() == []


def test_a_jump_host_is_pinned_too(
    tether: TetherRunner,
    jump_pair: tuple[SshdServer, SshdServer],
    echo_server: EchoServer,
    tmp_path: Path,
) -> None:
    """A ProxyJump hop is an ssh of its own (`ssh -W`), reading the same config: were it to
    fork, null its stdin or ask for a session, the tunnel would not come up, or leave it."""
    jump, inner = jump_pair
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(jump.known_hosts.read_text() + inner.known_hosts.read_text())
    every = [
        "ForkAfterAuthentication yes",
        "StdinNull yes",
        "SessionType default",
        "RequestTTY force",
        "RemoteCommand sleep 600",
    ]
    config = config_file(
        tmp_path / "config",
        {
            "jump": host_lines(jump, jump.client_key, known_hosts),
            "inner": [*host_lines(inner, inner.client_key, known_hosts), "ProxyJump jump"],
            "*": every,
        },
    )
    flags = ["--via", "ssh://inner", "--ssh-config", str(config), "--engine", "openssh"]
    process = start(tether, "--to", echo_server.address, *flags, "--master-linger", "1s")
    (entry,) = tether.list_json()
    assert echo_once(entry["local_port"], THROUGH) == THROUGH
    process.send_signal(signal.SIGTERM)
    assert process.finish() == 0, process.stderr
    # The shared master and its hop end after the linger, as ssh's ControlPersist has it.
    wait_until_sync(lambda: not tether.own_processes(), "the master and its hop to end", 1 + 8)
