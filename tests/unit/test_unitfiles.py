"""The unit files' text: names, quoting, the values taken from a profile, both unit kinds."""

from __future__ import annotations

import pytest

from tether.errors import UsageError
from tether.spec import Endpoint, TunnelSpec, Via
from tether.unitfiles import (
    Installation,
    listen_streams,
    quoted,
    service_unit,
    socket_unit,
    unit_name,
)

AT = Installation(
    command=("/opt/tether/bin/tether",),
    user="ops",
    uid=1000,
    config="/home/ops/.config/tether/config.toml",
)


def spec(**changes: object) -> TunnelSpec:
    base = TunnelSpec(
        name="db",
        target=Endpoint("db.internal", 5432),
        listen=Endpoint("localhost", 15432),
        via=Via("ssh", "bastion", 22, "ops"),
    )
    return base.with_changes(**changes)


def settings(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


@pytest.mark.parametrize("name", ["db", "prod.db_1-x", "a" * 240])
def test_unit_names(name: str) -> None:
    assert unit_name(name) == f"tether-{name}.service"


@pytest.mark.parametrize("name", ["a/b", "-db", ".db", "db@x", "db x", "é", "a" * 241, ""])
def test_names_that_cannot_name_a_unit(name: str) -> None:
    with pytest.raises(UsageError, match="cannot name a systemd unit"):
        unit_name(name)


@pytest.mark.parametrize(
    ("word", "command", "text"),
    [
        ("/usr/bin/tether", True, "/usr/bin/tether"),
        ("/a b/c.toml", True, '"/a b/c.toml"'),
        ("/x/50%/$HOME", True, "/x/50%%/$$HOME"),
        ("/x/50%/$HOME", False, "/x/50%%/$HOME"),
        ('say "hi"\\', False, '"say \\"hi\\"\\\\"'),
        ("a;b", True, '"a;b"'),
        ("", True, '""'),
    ],
)
def test_quoting(word: str, command: bool, text: str) -> None:
    assert quoted(word, command=command) == text


def test_control_characters_are_refused() -> None:
    with pytest.raises(UsageError, match="control characters"):
        quoted("/a\nb")


def test_listen_streams() -> None:
    assert listen_streams(spec(), True) == ["127.0.0.1:15432", "[::1]:15432"]
    assert listen_streams(spec(), False) == ["127.0.0.1:15432"]
    assert listen_streams(spec(listen=Endpoint("::", 80)), True) == ["[::]:80"]
    with pytest.raises(UsageError, match="--socket needs a fixed port, and profile db has none"):
        listen_streams(spec(listen=Endpoint("localhost", 0)), True)
    with pytest.raises(UsageError, match="numeric listen address or localhost"):
        listen_streams(spec(listen=Endpoint("my.host", 80)), True)


def test_system_unit() -> None:
    unit = service_unit(spec(timeout=20.5, drain=7, backoff_max=45), AT, user_mode=False)
    assert unit.name == "tether-db.service"
    # What the comment promises holds: a shell without XDG_RUNTIME_DIR (su, sudo -u) looks in
    # /run/user/UID itself, where the unit registers (see test_registry).
    assert "# XDG_RUNTIME_DIR, or (su, sudo -u: none set) /run/user/1000 itself, when it" in (
        unit.text.splitlines()
    )
    lines = settings(unit.text)
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "ExecStart=/opt/tether/bin/tether start db --foreground"
        " --config /home/ops/.config/tether/config.toml",
        "User=ops",
        "Environment=XDG_RUNTIME_DIR=/run/user/1000",
        "Wants=user-runtime-dir@1000.service",
        "ReadWritePaths=/run/user/1000",
        "TimeoutStartSec=36",
        "TimeoutStopSec=17",
        "WatchdogSec=131",
        "Restart=on-failure",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "WantedBy=multi-user.target",
        "After=network-online.target",
    ):
        assert line in lines
    assert not any(line.startswith("Requires=") for line in lines)


def test_user_unit() -> None:
    unit = service_unit(spec(), AT, user_mode=True)
    lines = settings(unit.text)
    assert "WantedBy=default.target" in lines
    assert "WatchdogSec=120" in lines
    assert not [line for line in lines if line.startswith(("User=", "Environment=", "Wants="))]
    # Namespaces a user manager may not be allowed: offered, commented out.
    assert "#ProtectSystem=strict" in unit.text.splitlines()
    assert "ProtectSystem=strict" not in lines


def test_carried_environment_and_socket() -> None:
    at = Installation(
        command=("/usr/bin/python3", "-m", "tether"),
        user="ops",
        uid=1000,
        config="/etc/tether config.toml",
        environment={"TETHER_RUNTIME_DIR": "/srv/reg", "TETHER_SSH_CONFIG": "/etc/ssh/t%s"},
    )
    unit = service_unit(spec(), at, user_mode=False, socket=True)
    lines = settings(unit.text)
    command = "/usr/bin/python3 -m tether start db --foreground"
    assert f'ExecStart={command} --config "/etc/tether config.toml"' in lines
    assert "Environment=TETHER_RUNTIME_DIR=/srv/reg" in lines
    assert "Environment=TETHER_SSH_CONFIG=/etc/ssh/t%%s" in lines
    assert "ReadWritePaths=-/srv/reg" in lines
    assert not any("user-runtime-dir" in line or "XDG_RUNTIME_DIR" in line for line in lines)
    assert ["Requires=tether-db.socket", "After=tether-db.socket"] == [
        line for line in lines if "tether-db.socket" in line
    ]
    sock = socket_unit(spec(), at, user_mode=False)
    assert sock.name == "tether-db.socket"
    assert [line for line in settings(sock.text) if line.startswith("ListenStream=")] == [
        "ListenStream=127.0.0.1:15432",
        "ListenStream=[::1]:15432",
    ]


# What a profile's value would need to hold to add settings to a unit: a new line (a section
# and an ExecStartPre=+, which systemd runs as root whatever User= says), a terminal's escape,
# the line breaks that are no "\n", and a trailing backslash, which joins the next line.
HOSTILE = [
    "x\n[Service]\nExecStartPre=+/bin/touch /pwned\n[Unit]\nX=x",
    "x\r\nExecStartPre=+/bin/true",
    "x\x1b[2J",
    "x\x85ExecStartPre=+/bin/true",
    "x\u2028y",
    "x\x00",
]

FIELDS = {
    "target host": lambda bad: spec(target=Endpoint(f"fe80::1%{bad}", 5432)),
    "listen host": lambda bad: spec(listen=Endpoint(f"::1%{bad}", 15432)),
    "via host": lambda bad: spec(via=Via("ssh", bad, 22, "ops")),
    "via user": lambda bad: spec(via=Via("ssh", "bastion", 22, bad)),
}


@pytest.mark.parametrize("bad", HOSTILE, ids=repr)
@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("kind", ["service", "socket"])
def test_a_spec_value_cannot_add_a_line_to_a_unit(field: str, bad: str, kind: str) -> None:
    # Built directly, as the Python API may: the writer checks what the parser did not see.
    hostile = FIELDS[field](bad)
    make = service_unit if kind == "service" else socket_unit
    with pytest.raises(UsageError) as caught:  # a socket may refuse a listen host first
        make(hostile, AT, user_mode=False)
    assert caught.value.message.isprintable()  # its own line shows the value escaped


@pytest.mark.parametrize("bad", HOSTILE, ids=repr)
@pytest.mark.parametrize(
    "at",
    [
        lambda bad: Installation(("/opt/tether/bin/tether" + bad,), "ops", 1000, "/c.toml"),
        lambda bad: Installation(("/opt/tether",), "ops" + bad, 1000, "/c.toml"),
        lambda bad: Installation(("/opt/tether",), "ops", 1000, "/c" + bad),
        lambda bad: Installation(
            ("/opt/tether",), "ops", 1000, "/c.toml", environment={"TETHER_RUNTIME_DIR": bad}
        ),
    ],
    ids=["command", "user", "config", "environment"],
)
def test_an_installation_value_cannot_add_a_line_to_a_unit(at: object, bad: str) -> None:
    with pytest.raises(UsageError, match="control characters"):
        service_unit(spec(), at(bad), user_mode=False)  # type: ignore[operator]


def test_a_trailing_backslash_cannot_join_the_next_line() -> None:
    with pytest.raises(UsageError, match="backslash"):
        service_unit(spec(via=Via("ssh", "bastion\\", 22, "ops", False)), AT, user_mode=False)


def test_odd_but_printable_values_are_written_escaped() -> None:
    unit = service_unit(spec(via=Via("ssh", "bastion", 22, "o%n$é")), AT, user_mode=False)
    description = next(line for line in unit.text.splitlines() if line.startswith("Desc"))
    assert description == (
        "Description=tether tunnel db: localhost:15432 -> db.internal:5432"
        " via ssh://o%%n$é@bastion:22"
    )
    assert all(line.isprintable() for line in unit.text.splitlines())


def test_a_tunnel_through_a_gateway() -> None:
    through = spec(target=Endpoint("lab/db", 0), via=Via.parse("gw://ops@relay.example:2222"))
    unit = service_unit(through, AT, user_mode=True)
    lines = settings(unit.text)
    assert (
        "Description=tether tunnel db: localhost:15432 -> lab/db via gw://ops@relay.example:2222"
        in lines
    )
    assert "Type=notify" in lines
