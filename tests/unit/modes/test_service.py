"""What a foreground tunnel tells its service manager, and what it takes from it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.servers import EchoServer
from tests.support.systemd import NotifySocket
from tests.support.waiting import wait_until
from tether.errors import UsageError
from tether.modes.notify import Notifier
from tether.modes.service import ServiceManager, ServiceReport, ready_status, status_of
from tether.protocol import Status
from tether.states import State
from tether.record import TunnelInfo
from tether.entry import Entry
from tether.spec import Endpoint, TunnelSpec, Via
from tether.tunnel import Tunnel


def test_other_modes_leave_the_notify_socket_alone() -> None:
    environ = {"NOTIFY_SOCKET": "/run/n", "WATCHDOG_USEC": "5"}
    service = ServiceManager.from_environ(foreground=False, environ=environ, pid=7)
    assert service == ServiceManager()
    assert environ == {"NOTIFY_SOCKET": "/run/n", "WATCHDOG_USEC": "5"}


def test_other_modes_refuse_passed_sockets() -> None:
    with pytest.raises(UsageError, match="works in foreground mode only"):
        ServiceManager.from_environ(
            foreground=False, environ={"LISTEN_FDS": "1", "LISTEN_PID": "7"}, pid=7
        )


def test_foreground_takes_the_notify_socket() -> None:
    environ = {"NOTIFY_SOCKET": "@x", "LISTEN_FDS": "1", "LISTEN_PID": "8"}
    service = ServiceManager.from_environ(foreground=True, environ=environ, pid=7)
    assert service.notifier is not None and service.sockets is None
    assert environ == {"LISTEN_FDS": "1", "LISTEN_PID": "8"}  # another process's


def test_status_texts() -> None:
    spec = TunnelSpec(target=Endpoint("db.internal", 5432), via=Via("ssh", "bastion", 22, "ops"))
    tunnel = Tunnel(spec)
    states: tuple[State, ...] = ("binding", "connecting", "authenticating", "probing", "closing")
    texts = {state: status_of(state, spec, tunnel, activated=False) for state in states}
    assert texts == {
        "binding": "binding the local port",
        "connecting": "connecting to ssh://ops@bastion:22",
        "authenticating": "authenticating to ssh://ops@bastion:22",
        "probing": "probing db.internal:5432",
        "closing": None,
    }
    assert status_of("binding", spec, tunnel, activated=True) == "taking the sockets passed in"
    tunnel.last_error = "Connection refused"
    assert status_of("reconnecting", spec, tunnel, activated=False) == (
        "transport lost: Connection refused; reconnecting"
    )
    tunnel.reconnect_attempt = 3
    assert status_of("reconnecting", spec, tunnel, activated=False) == (
        "reconnecting (attempt 3): Connection refused"
    )
    direct = TunnelSpec(target=Endpoint("127.0.0.1", 9))
    assert status_of("connecting", direct, Tunnel(direct), activated=False) == (
        "connecting to 127.0.0.1:9"
    )


def ready_record(host: str, port: int, target_host: str, target_port: int) -> TunnelInfo:
    entry = Entry(
        id="id",
        name="x",
        pid=os.getpid(),
        proc_start=0,
        lock_id="0:0",
        mode="foreground",
        local_host=host,
        local_port=port,
        local_addresses=[host],
        target_host=target_host,
        target_port=target_port,
        socks=False,
        allow=[],
        via=None,
        engine=None,
        started="x",
        log_file=None,
        control="x.sock",
    )
    return TunnelInfo(entry, Status(state="ready"))


def test_ready_status() -> None:
    record = ready_record("::1", 15432, "db", 5432)
    assert ready_status(record) == "ready on [::1]:15432 -> db:5432 via direct"


async def test_watchdog_pings_only_for_its_own_pid(echo_server: EchoServer, tmp_path: Path) -> None:
    """WATCHDOG_PID naming another process: no pings, while ours gets them meanwhile."""
    spec = TunnelSpec(target=Endpoint("127.0.0.1", echo_server.port))
    with (
        NotifySocket(str(tmp_path / "ours")) as ours,
        NotifySocket(str(tmp_path / "theirs")) as theirs,
    ):
        reports = [
            ServiceReport(
                Notifier.from_environ(
                    {
                        "NOTIFY_SOCKET": manager.env,
                        "WATCHDOG_USEC": "20000",
                        "WATCHDOG_PID": str(pid),
                    }
                ),
                spec,
            )
            for manager, pid in ((ours, os.getpid()), (theirs, 1))
        ]
        async with Tunnel(spec) as tunnel:
            assert spec.target is not None
            record = ready_record("127.0.0.1", 1, spec.target.host, spec.target.port)
            for report in reports:
                report.ready(record, tunnel)
            await wait_until(lambda: _pings(ours) >= 3, "3 pings to our manager")
            for report in reports:
                report.stopping()
                report.close()
        assert [n.text for n in theirs.pending()] == [
            "READY=1\nSTATUS=ready on 127.0.0.1:1 -> " + f"{spec.target} via direct",
            "STOPPING=1\nSTATUS=stopping",
        ]


def _pings(manager: NotifySocket) -> int:
    manager.pending()
    return sum(n.text == "WATCHDOG=1" for n in manager.received)


async def test_nothing_after_stopping(echo_server: EchoServer, tmp_path: Path) -> None:
    spec = TunnelSpec(target=Endpoint("127.0.0.1", echo_server.port))
    with NotifySocket(str(tmp_path / "notify")) as manager:
        report = ServiceReport(Notifier(manager.env, watchdog=0.01), spec)
        async with Tunnel(spec) as tunnel:
            report.stopping("tunnel lost")
            report.ready(ready_record("127.0.0.1", 1, "t", 1), tunnel)
            report.phase("reconnecting", tunnel)
            report.stopping()
        report.close()
        assert [n.text for n in manager.pending()] == ["STOPPING=1\nSTATUS=stopping: tunnel lost"]


def test_without_a_notifier_nothing_happens() -> None:
    spec = TunnelSpec(target=Endpoint("127.0.0.1", 9))
    report = ServiceReport(None, spec)
    report.phase("binding", Tunnel(spec))
    report.stopping()
    report.close()
