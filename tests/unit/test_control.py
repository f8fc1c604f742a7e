"""The control server, in process: what it answers, to whom, and what it refuses."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from tests.support.process_state import umask
from tether.control import ControlServer
from tether.protocol import Status, request_line


async def ask(path: Path, line: bytes) -> dict[str, object]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(line)
    await writer.drain()
    reply = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    return dict(json.loads(reply))


async def test_status_stop_and_what_is_refused(tmp_path: Path) -> None:
    stops: list[str] = []
    path = tmp_path / "c.sock"
    server = ControlServer(
        path, lambda: Status(state="ready", bytes_in=7), lambda: stops.append("x")
    )
    await server.start()
    try:
        assert path.stat().st_mode & 0o777 == 0o600
        status = await ask(path, request_line("status", time.monotonic() + 5))
        assert status["ok"] is True and status["state"] == "ready" and status["bytes_in"] == 7
        late = await ask(path, request_line("stop", time.monotonic() - 1))
        assert late == {"ok": False, "error": "request expired"} and stops == []
        assert (await ask(path, b"{not json\n"))["error"] == "bad request"
        assert (await ask(path, b'{"op": "reboot"}\n'))["error"] == "unknown op 'reboot'"
        stopping = await ask(path, request_line("stop", time.monotonic() + 5))
        assert stopping == {"ok": True, "stopping": True} and stops == ["x"]
    finally:
        await server.close()
    assert not path.exists()


async def test_a_deeply_nested_line_is_a_bad_request(tmp_path: Path) -> None:
    path = tmp_path / "c.sock"
    server = ControlServer(path, lambda: Status(state="ready"), lambda: None)
    await server.start()
    try:
        for line in (b"[" * 4000, b'{"op": "status", "x": ' + b"[" * 4000 + b"]" * 4000 + b"}"):
            assert await ask(path, line + b"\n") == {"ok": False, "error": "bad request"}
        # A bracket inside a string is no nesting.
        status = await ask(path, b'{"op": "status", "x": "' + b"[" * 100 + b'"}\n')
        assert status["ok"] is True
    finally:
        await server.close()


async def test_a_deadline_that_can_never_pass_is_a_bad_request(tmp_path: Path) -> None:
    stops: list[str] = []
    path = tmp_path / "c.sock"
    server = ControlServer(path, lambda: Status(state="ready"), lambda: stops.append("x"))
    await server.start()
    try:
        for until in (b"NaN", b"Infinity", b"-Infinity", b"1e400", b'"soon"', b"true", b"null"):
            reply = await ask(path, b'{"op": "stop", "until": ' + until + b"}\n")
            assert reply == {"ok": False, "error": "bad request"}, until
        assert stops == []
    finally:
        await server.close()


async def test_a_shell_stop_is_answered_once_the_tunnel_has_closed(tmp_path: Path) -> None:
    closed = asyncio.Event()

    async def close_the_tunnel() -> None:
        await server.close()  # what a shell's tunnel does: its own control socket goes too
        closed.set()

    path = tmp_path / "c.sock"
    server = ControlServer(path, lambda: Status(state="ready"), close_the_tunnel)
    await server.start()
    reply = await ask(path, request_line("stop", time.monotonic() + 5))
    assert reply == {"ok": True, "stopped": True} and closed.is_set()


async def test_starting_leaves_the_umask_alone_even_while_suspended(tmp_path: Path) -> None:
    before = umask()
    seen: list[int] = []
    starting = True

    async def watch() -> None:  # another task of the loop, as another tunnel's start would be
        while starting:
            seen.append(umask())
            await asyncio.sleep(0)

    watcher = asyncio.ensure_future(watch())
    await asyncio.sleep(0)  # the watcher's first look, before any start
    servers = [
        ControlServer(tmp_path / f"{n}.sock", lambda: Status(state="ready"), lambda: None)
        for n in range(3)
    ]
    try:
        # Started together, as `tether start a b c --run ...` starts its tunnels.
        await asyncio.gather(*(server.start() for server in servers))
        starting = False
        await watcher
        assert len(seen) > 1  # it did look while the starts were suspended
        assert set(seen) == {before} and umask() == before
        for n in range(3):
            assert (tmp_path / f"{n}.sock").stat().st_mode & 0o777 == 0o600
    finally:
        starting = False
        for server in servers:
            await server.close()


async def test_the_socket_is_0600_whatever_the_callers_umask(tmp_path: Path) -> None:
    for callers in (0o000, 0o077, 0o277):
        path = tmp_path / f"{callers:o}.sock"
        server = ControlServer(path, lambda: Status(state="ready", bytes_in=1), lambda: None)
        old = os.umask(callers)  # the umask of the caller, during the start
        try:
            await server.start()
        finally:
            os.umask(old)
        try:
            assert path.stat().st_mode & 0o777 == 0o600
            status = await ask(path, request_line("status", time.monotonic() + 5))
            assert status["bytes_in"] == 1
        finally:
            await server.close()
