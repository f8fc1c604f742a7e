"""The foreground mode in process: its phases reported in order, its files and entry present
exactly while it serves, and nothing left after any ending."""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.support.servers import EchoServer, echo_once, free_port
from tests.support.waiting import wait_until
from tether.client import request
from tether.errors import OutputError, TargetUnreachableError
from tether.modes.foreground import CONTROL_STOP, Foreground
from tether.modes.pidfile import ReadyFiles
from tether.modes.report import Quiet
from tether.states import State
from tether.record import TunnelInfo
from tether.registry import Registry
from tether.spec import Endpoint, TunnelSpec


class Recording(Quiet):
    """A reporter that remembers what it heard."""

    def __init__(self, *, refuse_ready: bool = False) -> None:
        self.phases: list[State] = []
        self.records: list[TunnelInfo] = []
        self.refuse_ready = refuse_ready

    def phase(self, state: State) -> None:
        self.phases.append(state)

    def ready(self, records: Sequence[TunnelInfo], *, reused: bool = False) -> None:
        if self.refuse_ready:
            raise OutputError("cannot write to stdout: it is closed")
        self.records.extend(records)


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "run")


def spec_to(port: int, **changes: object) -> TunnelSpec:
    return TunnelSpec(target=Endpoint("127.0.0.1", port), name="echo", **changes)  # type: ignore[arg-type]


async def test_phases_then_ready_then_a_stop_ends_it_with_nothing_left(
    registry: Registry, echo_server: EchoServer, tmp_path: Path
) -> None:
    reporter = Recording()
    files = ReadyFiles(pid_file=tmp_path / "tether.pid")
    foreground = Foreground(spec_to(echo_server.port), registry, reporter, files=files)
    running = asyncio.ensure_future(foreground.run())
    await wait_until(lambda: bool(reporter.records) or running.done(), "ready")
    assert reporter.phases == ["binding", "connecting", "probing", "ready"]
    (record,) = reporter.records
    assert record.entry.mode == "foreground"
    assert [e.id for e in registry.entries()] == [record.id]
    assert files.pid_file is not None and files.pid_file.exists()
    port = record.entry.local_port
    assert await asyncio.to_thread(echo_once, port, b"through") == b"through"

    foreground.stop.set(CONTROL_STOP)  # as `tether stop` does
    assert await asyncio.wait_for(running, 10) == 0
    assert registry.entries() == []
    assert not files.pid_file.exists()
    with socket.create_server(("127.0.0.1", port)):
        pass  # the port is free again


async def test_a_stop_request_from_another_process(
    registry: Registry, echo_server: EchoServer
) -> None:
    reporter = Recording()
    running = asyncio.ensure_future(
        Foreground(spec_to(echo_server.port), registry, reporter).run()
    )
    await wait_until(lambda: bool(reporter.records), "ready")
    (entry,) = registry.entries()
    # What `tether stop` sends first (this very process holds the tunnel, so the rest of a
    # stop, waiting for the process to be gone, is not for a test).
    reply = await asyncio.to_thread(request, entry.control, "stop", pid=entry.pid, timeout=10)
    assert reply.get("ok") is True, reply
    assert await asyncio.wait_for(running, 10) == 0


async def test_a_failed_announcement_undoes_the_start(
    registry: Registry, echo_server: EchoServer, tmp_path: Path
) -> None:
    files = ReadyFiles(pid_file=tmp_path / "tether.pid")
    port = free_port()
    spec = spec_to(echo_server.port, listen=Endpoint("127.0.0.1", port))
    foreground = Foreground(spec, registry, Recording(refuse_ready=True), files=files)
    with pytest.raises(OutputError):
        await foreground.run()
    assert registry.entries() == []
    assert files.pid_file is not None and not files.pid_file.exists()
    with socket.create_server(("127.0.0.1", port)):
        pass


async def test_a_target_that_refuses_fails_the_start(registry: Registry) -> None:
    reporter = Recording()
    with pytest.raises(TargetUnreachableError):
        await Foreground(spec_to(free_port()), registry, reporter).run()
    assert reporter.records == [] and "probing" in reporter.phases
    assert registry.entries() == []


async def test_a_signal_while_serving_is_a_graceful_end(
    registry: Registry, echo_server: EchoServer
) -> None:
    reporter = Recording()
    foreground = Foreground(spec_to(echo_server.port), registry, reporter)
    running = asyncio.ensure_future(foreground.run())
    await wait_until(lambda: bool(reporter.records), "ready")
    signal.raise_signal(signal.SIGTERM)  # the mode's own handler takes it, not the test's
    assert await asyncio.wait_for(running, 10) == 0
    assert foreground.stop.signum == signal.SIGTERM
    assert registry.entries() == []
