"""Choosing the mode in process: `--reuse` finds a running tunnel and starts nothing, releasing
its lock; sockets that systemd passed to a mode that would not serve them are refused before
anything starts; run mode gives the command its tunnel and returns its status."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.support.servers import EchoServer
from tests.unit.modes.test_foreground import Recording, spec_to
from tether.client import stop_tunnels
from tether.errors import UsageError
from tether.modes.launch import Launch, launch
from tether.modes.pidfile import NO_FILES
from tether.modes.run import run_command
from tether.registry import Registry

# A client that makes one round trip through the tunnel its variables name.
ROUND_TRIP = (
    "import os, socket\n"
    "address = (os.environ['TETHER_HOST'], int(os.environ['TETHER_PORT']))\n"
    "with socket.create_connection(address) as s:\n"
    "    s.sendall(b'ping'); s.shutdown(socket.SHUT_WR)\n"
    "    raise SystemExit(0 if s.recv(4) == b'ping' else 3)\n"
)


def test_reuse_finds_the_running_tunnel_and_starts_nothing(
    tmp_path: Path, echo_server: EchoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))  # the background logs
    registry = Registry(tmp_path / "run")
    spec = spec_to(echo_server.port)
    req = Launch((spec,), "background", None, NO_FILES, reuse=True)
    first = Recording()
    assert launch(req, registry, first) == 0
    (started,) = first.records
    try:
        again = Recording()
        assert launch(req, registry, again) == 0
        assert [record.id for record in again.records] == [started.id]
        assert again.phases == []  # nothing was started
        assert [entry.id for entry in registry.entries()] == [started.id]
        assert not list(registry.directory.glob(".reuse-*.lock"))  # released, and removed
    finally:
        stop_tunnels(registry, registry.entries(), timeout=10)
        os.waitpid(started.pid, 0)


@pytest.mark.parametrize("mode", ["background", "run"])
def test_sockets_passed_to_a_mode_that_cannot_serve_them_are_refused_first(
    tmp_path: Path, echo_server: EchoServer, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "1")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    registry = Registry(tmp_path / "run")
    reporter = Recording()
    req = Launch((spec_to(echo_server.port),), mode, ("true",), NO_FILES, reuse=False)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="socket activation"):
        launch(req, registry, reporter)
    assert reporter.phases == [] and registry.entries() == []
    assert not (tmp_path / "state").exists()  # not even a log was made


async def test_run_mode_gives_the_command_its_tunnel_and_returns_its_status(
    tmp_path: Path, echo_server: EchoServer
) -> None:
    registry = Registry(tmp_path / "run")
    reporter = Recording()
    spec = spec_to(echo_server.port)
    assert await run_command([spec], registry, [sys.executable, "-c", ROUND_TRIP], reporter) == 0
    assert [record.entry.mode for record in reporter.records] == ["run"]
    assert await run_command([spec], registry, ["sh", "-c", "exit 7"], Recording()) == 7
    assert registry.entries() == []
