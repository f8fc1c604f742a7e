"""The Python API: tether.open / open_async by profile or keywords, tether.list, tether.stop;
tunnels that other processes see and stop, and errors that are exceptions, never exits."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import tether
from tests.support.servers import EchoServer, echo_once, free_port
from tests.support.process_state import wait_for_exit
from tests.support.sshd_server import SshdServer
from tests.support.tether_process import TetherRunner
from tests.support.waiting import wait_until
from tether.errors import (
    ConfigError,
    NoSuchTunnelError,
    TargetUnreachableError,
    TunnelClosedError,
    UsageError,
)


@pytest.fixture
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Short: a shared OpenSSH master's socket is in it (runtime/masters), the test's own.
    return tmp_path_factory.mktemp("run") / "r"


def cli(runtime: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`tether ...` in another process, as another shell would run it."""
    return subprocess.run(
        TetherRunner.command(*args),
        env={**os.environ, "TETHER_RUNTIME_DIR": str(runtime)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def profile(tmp_path: Path, sshd: SshdServer, echo_server: EchoServer) -> Path:
    config = tmp_path / "config.toml"
    engine = f'engine = "{sshd.engine}"\n' if sshd.engine else ""
    config.write_text(
        f"""[tunnels.db]
to = "{echo_server.address}"
via = "{sshd.via}"
identity_file = "{sshd.client_key}"
known_hosts = "{sshd.known_hosts}"
{engine}"""
    )
    return config


def test_open_a_profile_seen_and_listed_by_other_processes(
    tmp_path: Path,
    runtime: Path,
    sshd: SshdServer,
    echo_server: EchoServer,
    capfd: pytest.CaptureFixture[str],
) -> None:
    config = profile(tmp_path, sshd, echo_server)
    with tether.open("db", config=config, runtime_dir=runtime) as t:
        assert echo_once(t.port, b"through the API") == b"through the API"
        assert (t.host, t.name, t.address) == ("127.0.0.1", "db", f"127.0.0.1:{t.port}")
        listed = cli(runtime, "list", "--json")
        (entry,) = json.loads(listed.stdout)
        assert (entry["id"], entry["mode"], entry["pid"]) == (t.id, "api", os.getpid())
        assert entry["local_port"] == t.port and entry["engine"] == sshd.engine
        record = t.record()
        assert record.to_json().keys() == entry.keys()
        assert record.status.connections_total == 1
        assert [i.id for i in tether.list(runtime_dir=runtime)] == [t.id]
    assert tether.list(runtime_dir=runtime) == []
    # The shared master lingers for the next tunnel; `stop --all` ends it and its files.
    assert cli(runtime, "stop", "--all").returncode == 0
    assert not [p for p in runtime.iterdir() if not p.name.startswith(".")]
    assert capfd.readouterr() == ("", "")  # a library prints nothing


async def test_open_async_with_keywords(runtime: Path, echo_server: EchoServer) -> None:
    async with tether.open_async(to=echo_server.address, runtime_dir=runtime, name="k") as t:
        reply = await asyncio.to_thread(echo_once, t.port, b"async")
        assert reply == b"async"
        assert t.record().entry.mode == "api" and t.name == "k"
    assert tether.list(runtime_dir=runtime) == []


async def test_tether_stop_cancels_the_async_block_and_raises(
    runtime: Path, echo_server: EchoServer
) -> None:
    reached_the_end = False
    with pytest.raises(TunnelClosedError, match="was stopped by tether stop"):
        async with tether.open_async(to=echo_server.address, runtime_dir=runtime) as t:
            stopped = await asyncio.to_thread(cli, runtime, "stop", t.id)
            assert stopped.returncode == 0, stopped.stderr
            await asyncio.wait_for(asyncio.Event().wait(), 30)  # cancelled by the stop
            reached_the_end = True
    assert not reached_the_end
    assert tether.list(runtime_dir=runtime) == []


async def test_a_cancellation_of_the_callers_own_stays_one(
    runtime: Path, echo_server: EchoServer
) -> None:
    async def body() -> None:
        async with tether.open_async(to=echo_server.address, runtime_dir=runtime):
            await asyncio.Event().wait()

    task = asyncio.ensure_future(body())
    await wait_until(lambda: bool(tether.list(runtime_dir=runtime)), "the tunnel's entry")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert tether.list(runtime_dir=runtime) == []


def test_tether_stop_of_a_sync_tunnel_raises_when_the_block_ends(
    runtime: Path, echo_server: EchoServer
) -> None:
    with pytest.raises(TunnelClosedError, match="was stopped by tether stop"):
        with tether.open(to=echo_server.address, runtime_dir=runtime) as t:
            stopped = cli(runtime, "stop", t.id)
            assert stopped.returncode == 0, stopped.stderr
            assert isinstance(t.closed, TunnelClosedError)
    assert tether.list(runtime_dir=runtime) == []


def test_the_blocks_own_error_is_not_masked(runtime: Path, echo_server: EchoServer) -> None:
    with pytest.raises(LookupError, match="the caller's"):
        with tether.open(to=echo_server.address, runtime_dir=runtime):
            raise LookupError("the caller's")
    assert tether.list(runtime_dir=runtime) == []


def test_errors_are_tethers_exceptions(
    tmp_path: Path, runtime: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(TargetUnreachableError) as unreachable:
        with tether.open(to=f"127.0.0.1:{free_port()}", runtime_dir=runtime, timeout=5):
            pass
    assert unreachable.value.exit_code == 6
    with pytest.raises(UsageError, match="unknown option 'tiemout'"):
        with tether.open(to="db:5432", tiemout=3, runtime_dir=runtime):
            pass
    with pytest.raises(ConfigError, match="timeout=: "):
        with tether.open(to="db:5432", timeout="soon", runtime_dir=runtime):
            pass
    with pytest.raises(ConfigError, match=r"none\.toml: config file not found"):
        with tether.open("db", config=tmp_path / "none.toml", runtime_dir=runtime):
            pass
    (tmp_path / "empty.toml").write_text("")
    with pytest.raises(ConfigError, match="unknown profile 'nope'"):
        with tether.open("nope", config=tmp_path / "empty.toml", runtime_dir=runtime):
            pass
    assert tether.list(runtime_dir=runtime) == []
    assert capfd.readouterr() == ("", "")


def test_stop_tunnels_started_elsewhere(runtime: Path, echo_server: EchoServer) -> None:
    started = cli(runtime, "start", "--to", echo_server.address, "--background", "--name", "bg")
    assert started.returncode == 0, started.stderr
    with pytest.raises(NoSuchTunnelError):
        tether.stop("nothing", runtime_dir=runtime)
    assert tether.stop("nothing", missing_ok=True, runtime_dir=runtime) == []
    (stopped,) = tether.stop("bg", runtime_dir=runtime)
    assert stopped.name == "bg" and stopped.mode == "background"
    assert tether.list(runtime_dir=runtime) == []


def refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


LEFT_OPEN = {
    # Entered by hand and never left: the script just ends...
    "forgets": "",
    # ... or ends with an exception of its own.
    "raises": "raise SystemExit('the script gave up')\n",
}


@pytest.mark.parametrize("ending", sorted(LEFT_OPEN))
def test_a_tunnel_left_open_is_closed_when_the_interpreter_exits(
    runtime: Path, echo_server: EchoServer, ending: str
) -> None:
    script = (
        "import json, socket, tether\n"
        f"opened = tether.open(to={echo_server.address!r}, runtime_dir={str(runtime)!r})\n"
        "t = opened.__enter__()\n"
        "s = socket.create_connection(('127.0.0.1', t.port))\n"
        "s.sendall(b'open'); s.shutdown(socket.SHUT_WR); assert s.recv(9) == b'open'\n"
        "print(json.dumps([t.id, t.port]), flush=True)\n" + LEFT_OPEN[ending]
    )
    # Before, the exit waited forever on a helper thread that the interpreter had frozen.
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == (1 if ending == "raises" else 0), done.stderr
    assert done.stderr == ("the script gave up\n" if ending == "raises" else "")
    entry_id, port = json.loads(done.stdout)
    assert refuses(port)
    assert not [p.name for p in runtime.iterdir() if p.name.startswith(entry_id)]
    assert tether.list(runtime_dir=runtime) == []


# Forking with the helper thread running is the very case under test; Python 3.12+ warns of it.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_leaves_the_block_and_the_parents_tunnel_alone(
    runtime: Path, sshd: SshdServer, echo_server: EchoServer
) -> None:
    child = -1
    try:
        with tether.open(
            to=echo_server.address,
            via=sshd.via,
            identity_file=str(sshd.client_key),
            known_hosts=str(sshd.known_hosts),
            engine=sshd.engine,  # None: the default
            runtime_dir=runtime,
        ) as t:
            child = os.fork()
            if child == 0:
                # What a child may do: use the address. Not ask the parent's thread (refused at
                # once), and not close the tunnel (leaving the block leaves it to the parent).
                assert echo_once(t.port, b"from the child") == b"from the child"
                with pytest.raises(tether.TetherError, match="forked from"):
                    t.record()
            else:
                status = wait_for_exit(child, deadline=30)
                assert status == 0
                assert echo_once(t.port, b"still serving") == b"still serving"
                assert [i.id for i in tether.list(runtime_dir=runtime)] == [t.id]
                assert t.record().status.connections_total == 2
    except BaseException:
        if child == 0:
            os._exit(3)  # the child never returns into pytest
        raise
    if child == 0:
        os._exit(0)
    assert tether.list(runtime_dir=runtime) == []
    assert refuses(t.port)
