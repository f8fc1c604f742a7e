"""The units of a gateway's signer, relay and agent: their settings, their quoting, the values
they refuse, and systemd's own check of each."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.support.systemd import verify
from tether.errors import UsageError
from tether.gateway import agent
from tether.gatewayunits import (
    AGENT_BACKOFF_MAX,
    AGENT_CONNECT_TIMEOUT,
    Account,
    GatewayProcess,
    Kind,
    gateway_unit,
)

ME = Account(("/opt/tether/bin/tether",), "gw", 1000)

PROCESSES: dict[Kind, GatewayProcess] = {
    "signer": GatewayProcess(
        "signer", "signer", ("/srv/gw", "--listen", "10.0.0.5:2200"), "/srv/gw", 2200
    ),
    "relay": GatewayProcess(
        "relay", "relay-r1", ("/etc/tether/r1.toml", "--listen", "0.0.0.0:2222"), None, 2222
    ),
    "agent": GatewayProcess(
        "agent", "agent-lab", ("/etc/tether/lab.toml", "--target", "db=10.1.0.7:5432"), None
    ),
}


def settings(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def setting(lines: list[str], key: str) -> list[str]:
    return [line.partition("=")[2] for line in lines if line.startswith(f"{key}=")]


@pytest.mark.parametrize("kind", list(PROCESSES))
def test_every_kind_runs_as_a_notify_service(kind: Kind) -> None:
    unit = gateway_unit(PROCESSES[kind], ME, user_mode=False)
    assert unit.name == f"tether-{PROCESSES[kind].name}.service"
    lines = settings(unit.text)
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "Restart=on-failure",
        "RestartSec=5",
        "RestartPreventExitStatus=2 5",
        "WatchdogSignal=SIGTERM",
        "KillMode=mixed",
        "User=gw",
        "Environment=XDG_RUNTIME_DIR=/run/user/1000",
        "Wants=user-runtime-dir@1000.service",
        "After=network-online.target",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=",
        "UMask=0077",
        "WantedBy=multi-user.target",
    ):
        assert line in lines, line
    assert setting(lines, "WatchdogSec") == ["80" if kind == "agent" else "60"]
    assert setting(lines, "TimeoutStartSec") == setting(lines, "WatchdogSec")
    # A relay and an agent carry a session each for thousands of clients; a signer does not.
    sessions = kind in ("relay", "agent")
    assert setting(lines, "LimitNOFILE") == (["65536"] if sessions else [])
    assert setting(lines, "TasksMax") == (["16384"] if sessions else [])
    assert not setting(lines, "AmbientCapabilities")


def test_the_command_lines() -> None:
    lines = {
        kind: settings(gateway_unit(p, ME, user_mode=False).text) for kind, p in PROCESSES.items()
    }
    assert setting(lines["signer"], "ExecStart") == [
        "/opt/tether/bin/tether gateway signer /srv/gw --listen 10.0.0.5:2200 --name signer"
    ]
    assert setting(lines["relay"], "ExecStart") == [
        "/opt/tether/bin/tether gateway relay /etc/tether/r1.toml --listen 0.0.0.0:2222"
        " --name relay-r1 --state-dir /var/lib/tether/relay-r1"
    ]
    assert setting(lines["agent"], "ExecStart") == [
        "/opt/tether/bin/tether gateway agent /etc/tether/lab.toml --target db=10.1.0.7:5432"
        " --name agent-lab --state-dir /var/lib/tether/agent-lab"
    ]


def test_what_each_writes_is_all_it_may_write() -> None:
    signer = settings(gateway_unit(PROCESSES["signer"], ME, user_mode=False).text)
    assert setting(signer, "ReadWritePaths") == ["/run/user/1000 /srv/gw"]
    assert not setting(signer, "StateDirectory")
    relay = settings(gateway_unit(PROCESSES["relay"], ME, user_mode=False).text)
    # systemd makes /var/lib/tether/relay-r1, the account's, and lets the service write it.
    assert setting(relay, "StateDirectory") == ["tether/relay-r1"]
    assert setting(relay, "StateDirectoryMode") == ["0700"]
    assert setting(relay, "ReadWritePaths") == ["/run/user/1000"]
    named = GatewayProcess("relay", "relay-r1", ("/b.toml", "--listen", "h:1"), "/srv/relay")
    relay = settings(gateway_unit(named, ME, user_mode=False).text)
    assert setting(relay, "ReadWritePaths") == ["/run/user/1000 /srv/relay"]
    assert setting(relay, "ExecStart")[0].endswith("--state-dir /srv/relay")
    assert not setting(relay, "StateDirectory")


def test_a_carried_registry() -> None:
    at = Account(("/usr/bin/python3", "-m", "tether"), "gw", 1000, {"TETHER_RUNTIME_DIR": "/srv/r"})
    lines = settings(gateway_unit(PROCESSES["signer"], at, user_mode=False).text)
    assert "Environment=TETHER_RUNTIME_DIR=/srv/r" in lines
    assert setting(lines, "ReadWritePaths") == ["-/srv/r /srv/gw"]
    assert not any("user-runtime-dir" in line or "XDG_RUNTIME_DIR" in line for line in lines)
    assert setting(lines, "ExecStart")[0].startswith("/usr/bin/python3 -m tether gateway signer")


def test_a_privileged_port_gets_one_capability() -> None:
    low = GatewayProcess("relay", "relay-r1", ("/b.toml", "--listen", "0.0.0.0:22"), None, 22)
    lines = settings(gateway_unit(low, ME, user_mode=False).text)
    assert setting(lines, "CapabilityBoundingSet") == ["CAP_NET_BIND_SERVICE"]
    assert setting(lines, "AmbientCapabilities") == ["CAP_NET_BIND_SERVICE"]


@pytest.mark.parametrize("kind", list(PROCESSES))
def test_user_units(kind: Kind) -> None:
    process = PROCESSES[kind]
    if process.directory is None:
        process = GatewayProcess(kind, process.name, process.arguments, "/home/gw/state")
    unit = gateway_unit(process, ME, user_mode=True)
    lines = settings(unit.text)
    assert "WantedBy=default.target" in lines
    assert "Type=notify" in lines
    assert not [line for line in lines if line.startswith(("User=", "Environment=", "Wants="))]
    assert "#ProtectSystem=strict" in unit.text.splitlines()
    writable = "%t /srv/gw" if kind == "signer" else "%t /home/gw/state"
    assert f"#ReadWritePaths={writable}" in unit.text.splitlines()
    with pytest.raises(ValueError, match="state directory"):
        gateway_unit(PROCESSES["relay"], ME, user_mode=True)


def test_odd_but_printable_paths_are_quoted() -> None:
    odd = GatewayProcess(
        "agent", "agent-lab", ('/e/my "lab" 100%.toml', "--target", "db=h:1"), "/s/a b;$x"
    )
    lines = settings(gateway_unit(odd, ME, user_mode=False).text)
    assert setting(lines, "ExecStart") == [
        '/opt/tether/bin/tether gateway agent "/e/my \\"lab\\" 100%%.toml" --target db=h:1'
        ' --name agent-lab --state-dir "/s/a b;$$x"'
    ]
    assert setting(lines, "ReadWritePaths") == ['/run/user/1000 "/s/a b;$x"']


def test_the_watchdog_follows_the_agents_links() -> None:
    assert AGENT_CONNECT_TIMEOUT == agent.CONNECT_TIMEOUT
    assert AGENT_BACKOFF_MAX == agent.LINK_BACKOFF_MAX


# What a value would need to hold to add settings to a unit: a new line (a section and an
# ExecStartPre=+, which systemd runs as root whatever User= says), a terminal's escape, the
# line breaks that are no "\n", and NUL.
HOSTILE = [
    "x\n[Service]\nExecStartPre=+/bin/touch /pwned\n[Unit]\nX=x",
    "x\r\nExecStartPre=+/bin/true",
    "x\x1b[2J",
    "x\x85ExecStartPre=+/bin/true",
    "x\u2028y",
    "x\x00",
]

PLACES = {
    "gateway directory": lambda bad: (
        GatewayProcess("signer", "signer", ("/gw" + bad, "--listen", "h:1"), "/gw" + bad),
        ME,
    ),
    "bundle": lambda bad: (
        GatewayProcess("relay", "relay-r1", ("/r" + bad, "--listen", "h:1"), None),
        ME,
    ),
    "state directory": lambda bad: (
        GatewayProcess("agent", "agent-lab", ("/e.toml",), "/s" + bad),
        ME,
    ),
    "name": lambda bad: (GatewayProcess("agent", "a" + bad, ("/e.toml",), "/s"), ME),
    "command": lambda bad: (PROCESSES["signer"], Account(("/t" + bad,), "gw", 1000)),
    "user": lambda bad: (PROCESSES["signer"], Account(("/t",), "gw" + bad, 1000)),
    "environment": lambda bad: (
        PROCESSES["signer"],
        Account(("/t",), "gw", 1000, {"TETHER_RUNTIME_DIR": "/r" + bad}),
    ),
}


@pytest.mark.parametrize("bad", HOSTILE, ids=repr)
@pytest.mark.parametrize("place", PLACES)
def test_a_value_cannot_add_a_line_to_a_unit(place: str, bad: str) -> None:
    process, account = PLACES[place](bad)
    with pytest.raises(UsageError) as caught:
        gateway_unit(process, account, user_mode=False)
    assert caught.value.message.isprintable()  # one line, the value escaped


def test_a_trailing_backslash_cannot_join_the_next_line() -> None:
    with pytest.raises(UsageError, match="backslash"):
        gateway_unit(PROCESSES["signer"], Account(("/t",), "gw\\", 1000), user_mode=False)


@pytest.mark.parametrize("user", [False, True], ids=["system", "user"])
def test_systemd_accepts_every_unit(tmp_path: Path, user: bool) -> None:
    here = Account((sys.executable, "-m", "tether"), "gw", 1000)  # verify runs what exists
    files = []
    for process in PROCESSES.values():
        if user and process.directory is None:
            process = GatewayProcess(process.kind, process.name, process.arguments, "/home/gw/s")
        unit = gateway_unit(process, here, user_mode=user)
        files.append(tmp_path / unit.name)
        files[-1].write_text(unit.text)
    verify(files, user=user, tmp_path=tmp_path)
