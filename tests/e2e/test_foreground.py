"""Foreground mode's process lifecycle: signals before ready, and nothing left behind."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.support.servers import SilentServer
from tests.support.sshd_server import SshdServer
from tests.support.tether_process import TetherRunner
from tests.support.waiting import wait_until_sync


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_before_ready(
    tether: TetherRunner,
    silent_server: SilentServer,
    sshd: SshdServer,
    tmp_path: Path,
    signum: int,
    code: int,
) -> None:
    pid_file = tmp_path / "t.pid"
    process = tether.spawn(
        "start",
        *silent_server.tether_flags(sshd.known_hosts, sshd.engine),
        "--pid-file",
        str(pid_file),
        "--timeout",
        "60",
    )
    wait_until_sync(lambda: silent_server.accepted == 1, "tether to connect to the server")
    process.send_signal(signum)
    assert process.finish() == code
    assert "interrupted before the tunnel was ready" in process.stderr
    assert not pid_file.exists()
    # Its ssh, spawned before the event loop could take the signal, went with it: the
    # runner's own `stop --all` would end a shared master left over, so it is checked here.
    assert tether.own_processes() == []
