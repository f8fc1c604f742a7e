"""Shared fixtures: real OpenSSH sshd, an in-process asyncssh server, TCP target servers."""

from __future__ import annotations

import os
import signal
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import AsyncSshServer, EchoServer, SilentServer
from tests.support.sshd_server import SshdServer, require_sshd
from tests.support.tether_process import TetherRunner
from tether import outage
from tether.paths import SSH_CONFIG_ENV
from tether.turns import Turns

ENGINES = ("openssh", "asyncssh")


FIGURES: dict[str, str] = {}


@pytest.fixture(scope="session")
def figures() -> dict[str, str]:
    """Measurements a test reports; printed at the end of the run for the closing note."""
    return FIGURES


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("tether figures measured in this run")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")


def pytest_configure(config: pytest.Config) -> None:
    """Tests interrupt tether processes with SIGINT, as a terminal's Ctrl-C does. A suite that a
    non-interactive shell started in the background (`make test &`, a CI step under nohup)
    inherits SIGINT ignored, and so would every process it starts: an exec keeps an ignored
    signal ignored but resets a handled one. Python's own handler in its place gives them
    SIGINT's default again."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test that needs root fails without it, never skips: the unprivileged pass of .ci/run
    deselects such tests by their marker, in the open, instead."""
    if item.get_closest_marker("needs_root") is not None and os.geteuid() != 0:
        pytest.fail(f"{item.nodeid} needs root (deselect it with -m 'not needs_root')")


@pytest.fixture(scope="session", autouse=True)
def no_user_ssh_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """ssh reads ~/.ssh/config from the passwd home, whatever $HOME says: every tunnel of the
    suite gets an empty one instead (tests that want one name it)."""
    empty = tmp_path_factory.mktemp("ssh") / "config"
    empty.write_text("")
    empty.chmod(0o600)
    previous = os.environ.get(SSH_CONFIG_ENV)
    os.environ[SSH_CONFIG_ENV] = str(empty)
    yield
    if previous is None:
        del os.environ[SSH_CONFIG_ENV]
    else:
        os.environ[SSH_CONFIG_ENV] = previous


@pytest.fixture(autouse=True)
def own_tempdir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """The temp dir that code run in process sees: the test's own, short (an OpenSSH master's
    control socket must fit under it), and empty again once the test is over."""
    directory = tmp_path_factory.mktemp("tmp")
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    yield directory
    left = sorted(p.name for p in directory.iterdir())
    assert not left, f"files left in the temp dir after the test: {left}"


@pytest.fixture(autouse=True)
def own_reconnect_turns(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process's reconnect turns narrow when attempts run out of time on a busy machine
    (outage.py): each test starts with all of them, whatever the tests before it timed out."""
    monkeypatch.setattr(outage, "ATTEMPTS", Turns(outage.ATTEMPTS_AT_ONCE))


@pytest.fixture(scope="session")
def shared_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdServer]:
    require_sshd()
    with SshdServer(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """Every test through a real sshd runs with each SSH engine."""
    return str(request.param)


@pytest.fixture
def sshd(shared_sshd: SshdServer, engine: str) -> SshdServer:
    """One real OpenSSH sshd for the session, seen through one engine; tests that stop it use
    ``own_sshd``."""
    return shared_sshd.through(engine)


@pytest.fixture
def own_sshd(tmp_path: Path, engine: str) -> Iterator[SshdServer]:
    """A real sshd this test may stop, restart or freeze."""
    require_sshd()
    with SshdServer(tmp_path / "sshd", engine=engine) as server:
        yield server


@pytest.fixture
def echo_server() -> Iterator[EchoServer]:
    with EchoServer() as server:
        yield server


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    with SilentServer() as server:
        yield server


@pytest.fixture
async def asyncssh_server(tmp_path: Path) -> AsyncIterator[AsyncSshServer]:
    server = AsyncSshServer(tmp_path / "asyncssh")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def tether(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TetherRunner]:
    """Runs the real `tether` command with an isolated HOME, TMPDIR and no SSH agent."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SSH_", "TETHER_"))}
    # Short too: the shared OpenSSH masters live in it (runtime/masters), the test's own.
    runtime = tmp_path_factory.mktemp("run") / "r"
    env.update(
        # Short, so that an OpenSSH master's control socket fits in it (tmp_path may not).
        TMPDIR=str(tmp_path_factory.mktemp("tmp")),
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_STATE_HOME=str(home / ".local" / "state"),
        TETHER_RUNTIME_DIR=str(runtime),
        TETHER_SSH_CONFIG=os.environ[SSH_CONFIG_ENV],
        PYTHONUNBUFFERED="1",
    )
    runner = TetherRunner(env, tmp_path)
    try:
        yield runner
    finally:
        runner.cleanup()
