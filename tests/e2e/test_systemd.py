"""A foreground tunnel under systemd, with a real notify socket and real passed sockets standing
in for the manager: what it says and when, its watchdog, and socket activation."""

from __future__ import annotations

import re
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.servers import EchoServer, SilentServer, echo_once
from tests.support.sshd_server import SshdServer
from tests.support.systemd import (
    Notification,
    NotifySocket,
    abstract_name,
    activation_launcher,
)
from tests.support.tether_process import TetherProcess, TetherRunner
from tests.support.waiting import wait_until_sync

# 0.1 s between pings: several arrive within any test's first second.
WATCHDOG = {"WATCHDOG_USEC": "200000"}
FAST_RECONNECT = ("--backoff-initial", "100ms", "--backoff-max", "500ms")
SERVICE_VARIABLES = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
)
READY = re.compile(r"READY=1\nSTATUS=ready on 127\.0\.0\.1:(\d+) -> (\S+) via (\S+)")


def texts(notes: list[Notification]) -> list[str]:
    return [note.text for note in notes]


def ready_port(note: Notification) -> int:
    match = READY.fullmatch(note.text)
    assert match, note.text
    return int(match.group(1))


def pings(notify: NotifySocket, count: int) -> None:
    """``count`` watchdog pings arrive, and nothing else meanwhile."""
    for _ in range(count):
        assert notify.next().text == "WATCHDOG=1"


def stop_and_check(process: TetherProcess, notify: NotifySocket) -> None:
    """SIGTERM: STOPPING=1 (after pings at most), a clean exit, and silence after it."""
    process.send_signal(signal.SIGTERM)
    before = notify.until_text("STOPPING=1\nSTATUS=stopping")
    assert set(texts(before[:-1])) <= {"WATCHDOG=1"}
    assert process.finish() == 0, process.stderr
    assert notify.pending() == []
    assert {note.pid for note in notify.received} == {process.pid}  # NotifyAccess=main holds


def test_notify_sequence_direct(
    tether: TetherRunner, echo_server: EchoServer, tmp_path: Path
) -> None:
    with NotifySocket(str(tmp_path / "notify")) as notify:
        process = tether.spawn(
            "start",
            "--to",
            echo_server.address,
            "--foreground",
            env={"NOTIFY_SOCKET": notify.env, **WATCHDOG},
        )
        started = notify.until(lambda n: n.text.startswith("READY=1"), "READY=1")
        port = ready_port(started[-1])
        # READY=1 means served: a round trip at once, with nothing waited for.
        assert echo_once(port, b"at once") == b"at once"
        assert texts(started) == [
            "STATUS=binding the local port",
            f"STATUS=connecting to {echo_server.address}",
            f"STATUS=probing {echo_server.address}",
            f"READY=1\nSTATUS=ready on 127.0.0.1:{port} -> {echo_server.address} via direct",
        ]
        pings(notify, 3)
        stop_and_check(process, notify)


def test_notify_through_sshd_on_an_abstract_socket(
    tether: TetherRunner, sshd: SshdServer, echo_server: EchoServer
) -> None:
    """Through a real sshd, with socket activation too: and the ssh that tether starts gets
    none of what systemd gave tether."""
    with (
        NotifySocket(abstract_name()) as notify,
        socket.create_server(("127.0.0.1", 0)) as listener,
    ):
        port = listener.getsockname()[1]
        process = tether.spawn(
            "start",
            "--to",
            echo_server.address,
            *sshd.tether_flags(),
            env={"NOTIFY_SOCKET": notify.env, **WATCHDOG},
            launcher=activation_launcher([listener], "tether-echo.socket"),
            pass_fds=[listener.fileno()],
        )
        started = notify.until(lambda n: n.text.startswith("READY=1"), "READY=1")
        assert echo_once(port, b"via sshd") == b"via sshd"
        assert texts(started) == [
            "STATUS=taking the sockets passed in",
            f"STATUS=connecting to {sshd.via}",
            f"STATUS=authenticating to {sshd.via}",
            f"STATUS=probing {echo_server.address}",
            f"READY=1\nSTATUS=ready on 127.0.0.1:{port} -> {echo_server.address} via {sshd.via}",
        ]
        # Its ssh: a shared master is a child of no tunnel's, found by the environment it has.
        children = [pid for pid in tether.own_processes() if pid != process.pid]
        assert bool(children) == (sshd.engine == "openssh")
        for pid in children:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            names = {item.partition(b"=")[0].decode() for item in environ}
            assert not names & set(SERVICE_VARIABLES), pid
        pings(notify, 3)
        stop_and_check(process, notify)


def test_a_silent_server_never_gets_past_connecting(
    tether: TetherRunner, silent_server: SilentServer, sshd: SshdServer, tmp_path: Path
) -> None:
    """It accepts the TCP connection and never sends its SSH version: "authenticating" would
    send whoever reads the status to look at keys and agents, when the server is what hangs."""
    via = f"ssh://u@127.0.0.1:{silent_server.port}"
    with NotifySocket(str(tmp_path / "notify")) as notify:
        process = tether.spawn(
            "start",
            *silent_server.tether_flags(sshd.known_hosts, sshd.engine),
            "--timeout",
            "2",
            env={"NOTIFY_SOCKET": notify.env},
        )
        assert process.finish() == 7, process.stderr
        assert "tunnel not ready after 2s (still connecting)" in process.stderr
        wait_until_sync(lambda: silent_server.accepted == 1, "tether to have connected")
        assert texts(notify.pending()) == [
            "STATUS=binding the local port",
            f"STATUS=connecting to {via}",
            "STOPPING=1\nSTATUS=stopping: tunnel not ready after 2s (still connecting)",
        ]


def test_watchdog_stops_while_reconnecting(
    tether: TetherRunner, own_sshd: SshdServer, echo_server: EchoServer, tmp_path: Path
) -> None:
    with NotifySocket(str(tmp_path / "notify")) as notify:
        process = tether.spawn(
            "start",
            "--to",
            echo_server.address,
            *own_sshd.tether_flags(),
            *FAST_RECONNECT,
            env={"NOTIFY_SOCKET": notify.env, **WATCHDOG},
        )
        ready = notify.until(lambda n: n.text.startswith("READY=1"), "READY=1")[-1]
        pings(notify, 2)
        own_sshd.stop()
        lost = notify.until(lambda n: n.text.startswith("STATUS=transport lost: "), "the loss")
        assert set(texts(lost[:-1])) <= {"WATCHDOG=1"}
        assert lost[-1].text.endswith("; reconnecting")
        # Three failed attempts take longer than several watchdog intervals: not one ping.
        down = notify.until(
            lambda n: n.text.startswith("STATUS=reconnecting (attempt 3): "), "attempt 3"
        )
        assert [re.sub(r"\): .*", "):", text) for text in texts(down)] == [
            "STATUS=reconnecting (attempt 1):",
            "STATUS=reconnecting (attempt 2):",
            "STATUS=reconnecting (attempt 3):",
        ]
        own_sshd.start()
        back = notify.until(lambda n: n.text.startswith("STATUS=ready"), "the reconnect")
        assert all(text.startswith("STATUS=reconnecting (attempt ") for text in texts(back[:-1]))
        assert "WATCHDOG=1" not in texts(back)[:-1]
        assert back[-1].text == ready.text.replace("READY=1\n", "") + "\nWATCHDOG=1"
        pings(notify, 2)
        stop_and_check(process, notify)


def test_socket_activation_serves_the_passed_port(
    tether: TetherRunner, echo_server: EchoServer
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        # A client that comes before tether runs waits in the backlog, as with systemd.
        early = socket.create_connection(("127.0.0.1", port), timeout=30)
        early.sendall(b"I was first")
        early.shutdown(socket.SHUT_WR)
        process = tether.spawn(
            "start",
            "--to",
            echo_server.address,
            "--json",
            launcher=activation_launcher([listener]),
            pass_fds=[listener.fileno()],
        )
        info = process.json_line()
        assert (info["local_host"], info["local_port"]) == ("127.0.0.1", port)
        with early:
            assert early.recv(64) == b"I was first"
        (entry,) = tether.list_json()
        assert (entry["local_port"], entry["local_addresses"]) == (port, ["127.0.0.1"])
        assert (entry["mode"], entry["state"]) == ("foreground", "ready")
        assert echo_once(port, b"later") == b"later"
        process.send_signal(signal.SIGTERM)
        assert process.finish() == 0, process.stderr
        assert tether.list_json() == []


def _udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def _not_listening() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def _unix(tmp_path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(tmp_path / "unix.sock"))
    sock.listen()
    return sock


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda _: [_udp()], "fd 3 (db.socket) is a datagram socket, not TCP"),
        (lambda _: [_not_listening()], "fd 3 (db.socket) is a TCP socket that is not listening"),
        (lambda tmp: [_unix(tmp)], "fd 3 (db.socket) is an AF_UNIX socket, not TCP"),
        (
            lambda _: [socket.create_server(("127.0.0.1", 0)) for _ in range(2)],
            "the sockets listen on different ports",
        ),
    ],
    ids=["udp", "not-listening", "unix", "two-ports"],
)
def test_sockets_tether_cannot_serve_are_refused(
    tether: TetherRunner,
    tmp_path: Path,
    make: Callable[[Path], list[socket.socket]],
    error: str,
) -> None:
    socks = make(tmp_path)
    try:
        code, _, err = tether.run(
            "start",
            "--to",
            "127.0.0.1:1",
            launcher=activation_launcher(socks, "db.socket:db.socket"),
            pass_fds=[s.fileno() for s in socks],
        )
    finally:
        for sock in socks:
            sock.close()
    assert code == 2, err
    assert err.startswith(f"tether: error: socket activation: {error}")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert tether.list_json() == []


def test_sockets_need_foreground_mode(tether: TetherRunner) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        code, _, err = tether.run(
            "start",
            "--to",
            "127.0.0.1:1",
            "--background",
            launcher=activation_launcher([listener]),
            pass_fds=[listener.fileno()],
        )
    assert code == 2
    assert err.startswith("tether: error: socket activation (LISTEN_FDS) works in foreground")


def test_notify_socket_that_nobody_reads_is_harmless(
    tether: TetherRunner, echo_server: EchoServer, tmp_path: Path
) -> None:
    """A NOTIFY_SOCKET that is gone: one warning, and the tunnel serves all the same."""
    process = tether.spawn(
        "start",
        "--to",
        echo_server.address,
        "--json",
        env={"NOTIFY_SOCKET": str(tmp_path / "nobody"), **WATCHDOG},
    )
    info = process.json_line()
    assert echo_once(info["local_port"], b"still") == b"still"
    process.send_signal(signal.SIGTERM)
    assert process.finish() == 0
    warnings = [line for line in process.stderr.splitlines() if "warning" in line]
    assert warnings == [
        f"tether: warning: cannot notify the service manager at {tmp_path / 'nobody'}: "
        "No such file or directory (further failures are not reported)"
    ]


def test_environment_is_left_alone_outside_foreground(tether: TetherRunner) -> None:
    """Run mode's command inherits NOTIFY_SOCKET as tether got it: it is not tether's to take."""
    code, out, err = tether.run(
        "start",
        "--to",
        "127.0.0.1:1",
        "--no-probe",
        "--",
        "sh",
        "-c",
        'echo "$NOTIFY_SOCKET"',
        env={"NOTIFY_SOCKET": "/run/nothing-listens-here"},
    )
    assert (code, out) == (0, "/run/nothing-listens-here\n"), err
