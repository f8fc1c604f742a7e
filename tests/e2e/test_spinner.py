"""What people see: a spinner naming the phase on a terminal, and nothing of it otherwise."""

from __future__ import annotations

import os
import pty
import re
import signal
import subprocess
import sys

from tests.support.servers import EchoServer, SilentServer
from tests.support.sshd_server import SshdServer
from tests.support.tether_process import TetherRunner, read_pty_until
from tests.support.waiting import wait_until_sync


def test_spinner_on_a_terminal(
    tether: TetherRunner, silent_server: SilentServer, sshd: SshdServer
) -> None:
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tether",
            "start",
            *silent_server.tether_flags(sshd.known_hosts, sshd.engine),
            "--timeout",
            "60",
            "--name",
            "spin",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=slave,
        env=tether.env,
    )
    os.close(slave)
    try:
        screen = read_pty_until(master, "spin: connecting (")
        assert "\r" in screen or "\x1b[" in screen  # redrawn in place, not printed line by line
        # The seconds since the start, against --timeout, count on while the phase stays.
        screen += read_pty_until(master, "spin: connecting (2s of 60s)")
        assert re.search(r"spin: connecting \([01]s of 60s\)", screen), screen
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_a_silent_server_is_connecting_until_the_timeout(
    tether: TetherRunner, silent_server: SilentServer, sshd: SshdServer
) -> None:
    """The TCP connect succeeds, then the server never sends its SSH version line: the spinner
    says "connecting" all along (never "authenticating"), and so does the timeout's error."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tether",
            "start",
            *silent_server.tether_flags(sshd.known_hosts, sshd.engine),
            "--timeout",
            "2",
            "--name",
            "spin",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=slave,
        env=tether.env,
    )
    os.close(slave)
    try:
        screen = read_pty_until(master, "(still connecting)")
        assert proc.wait(timeout=30) == 7
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    wait_until_sync(lambda: silent_server.accepted == 1, "tether to have connected")
    assert "spin: connecting" in screen and "authenticating" not in screen
    assert "tether: error: tunnel not ready after 2s (still connecting)" in screen


def test_no_spinner_without_a_terminal(tether: TetherRunner, echo_server: EchoServer) -> None:
    process = tether.spawn("start", "--to", echo_server.address, "--name", "quiet")
    process.wait_stderr("ready on")
    process.send_signal(signal.SIGTERM)
    assert process.finish() == 0
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tether: quiet ready on 127.0.0.1:")
    assert "\x1b[" not in process.stderr and "connecting" not in process.stderr
