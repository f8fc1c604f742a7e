"""The reaper's eyes: a certificate's login read from the relay's log, and the sshd process that
holds that connection found through the kernel's socket tables."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gateway import Relay, agent_link, certified, listens, running_relay
from tests.support.servers import EchoServer
from tests.support.strict_dirs import strict_tmp
from tether.gateway.sessions import accepted, holder
from tether.procs import descendants


def test_an_accepted_certificate_line_is_read() -> None:
    line = (
        "Accepted publickey for root from 127.0.0.1 port 45914 ssh2: ED25519-CERT "
        "SHA256:9mYzfl1ZbJnXfnfFkELXVVw+QhaAM900nmmZhkF6hbA ID alice@lab/db (serial 12) CA "
        "ED25519 SHA256:PEbQktOl9/DCxYSk9H4vEiFDWrDxDjjIuC+LfTd/KJk"
    )
    login = accepted(line)
    assert login is not None
    assert (login.key_id, login.serial, login.host, login.port) == (
        "alice@lab/db",
        12,
        "127.0.0.1",
        45914,
    )
    assert (
        accepted("Accepted publickey for root from 127.0.0.1 port 1 ssh2: ED25519 SHA256:x") is None
    )


@pytest.fixture
def relay() -> Iterator[Relay]:
    with strict_tmp() as work, running_relay(work) as running:
        yield running


def test_the_process_of_a_session_is_found_and_ending_it_ends_the_session(
    relay: Relay, echo_server: EchoServer
) -> None:
    agent = certified(relay, "agent", ["site:lab"])
    with agent_link(relay, agent, echo_server.address) as proc:
        log = Path(relay.work / "relay.log")
        logins = [login for line in log.read_text().splitlines() if (login := accepted(line))]
        assert [login.key_id for login in logins] == ["agent"]
        root = _relay_pid(relay)
        pid = holder(root, logins[0].host, logins[0].port)
        assert pid is not None and pid in descendants(root)
        os.kill(pid, signal.SIGTERM)
        assert proc.wait(timeout=20) == 255  # the agent's session is gone
        assert not listens(relay.site_port)
        assert holder(root, logins[0].host, logins[0].port) is None


def _relay_pid(relay: Relay) -> int:
    """The relay's listening sshd: the process that runs its config."""
    config = str(relay.work / "relay.sshd_config")
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if config in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    return int(entry.name)
            except OSError:
                continue
    raise AssertionError("the relay's sshd is not running")
