"""The background mode in process: the forked child runs the foreground mode itself, its phases
and its record reach the parent's reporter through the pipe, and its log has the banner; a child
that fails says why to the parent and to its log, and leaves nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.servers import EchoServer, echo_once, free_port
from tests.unit.modes.test_foreground import Recording, spec_to
from tether.client import stop_tunnels
from tether.errors import ChildFailed
from tether.modes.background import run_background
from tether.modes.report import Quiet, Reporter
from tether.record import TunnelInfo
from tether.registry import Registry


class LoggingRecording(Recording):
    """Records in the parent; in the child, writes what the log should hold."""

    def detached(self) -> Reporter:
        return _ToLog()


class _ToLog(Quiet):
    def ready(self, records: object, *, reused: bool = False) -> None:
        assert isinstance(records, list)
        for record in records:
            assert isinstance(record, TunnelInfo)
            print(f"child says: {record.name} ready on port {record.entry.local_port}")

    def failed(self, exc: BaseException) -> int:
        print(f"child says: failed: {exc}")
        return super().failed(exc)


def reap(pid: int) -> None:
    os.waitpid(pid, 0)  # the test process is the child's parent: nobody else reaps it


def test_the_child_runs_the_tunnel_and_the_parent_hears_its_phases(
    tmp_path: Path, echo_server: EchoServer
) -> None:
    registry = Registry(tmp_path / "run")
    reporter = LoggingRecording()
    assert run_background(spec_to(echo_server.port), registry, reporter, tmp_path / "logs") == 0
    (record,) = reporter.records
    try:
        assert record.entry.mode == "background" and record.pid != os.getpid()
        assert reporter.phases == ["binding", "connecting", "probing", "ready"]
        assert echo_once(record.entry.local_port, b"from the parent") == b"from the parent"
        assert record.entry.log_file is not None
        log = Path(record.entry.log_file).read_text()
        assert f"child says: echo ready on port {record.entry.local_port}" in log
    finally:
        result = stop_tunnels(registry, registry.entries(), timeout=10)
        reap(record.pid)
    assert [entry.id for entry in result.stopped] == [record.id]
    assert registry.entries() == []


def test_a_child_that_fails_says_why_to_the_parent_and_its_log(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "run")
    reporter = LoggingRecording()
    with pytest.raises(ChildFailed) as failed:
        run_background(spec_to(free_port()), registry, reporter, tmp_path / "logs")
    assert failed.value.exit_code == 6  # the target refused: the child's own code
    assert "cannot connect to 127.0.0.1:" in failed.value.message
    assert reporter.records == [] and "probing" in reporter.phases
    (log,) = (tmp_path / "logs").glob("*.log")
    assert f"child says: failed: {failed.value.message}" in log.read_text()
    assert registry.entries() == []
