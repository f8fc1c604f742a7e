"""The per-tunnel control endpoint: a UNIX socket answering `status` and `stop`, same user only.

`stop` answers {"stopping": true} when the whole process is about to exit (the client then waits
for the exit), or {"stopped": true} once the tunnel has closed in a process that goes on (shell).

One JSON object per line each way. A request carries the client's deadline ("until", on the
machine-wide monotonic clock): one that arrives late is refused, never acted on. The server
checks the peer's uid (SO_PEERCRED); the client checks that the server is the pid the registry
names, so neither side can be impersonated.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether.errors import RegistryError, TetherError, describe, map_exceptions

if TYPE_CHECKING:
    import asyncio

REQUEST_LIMIT = 4096
REPLY_LIMIT = 1024 * 1024
_CRED = struct.Struct("3i")


class ControlError(TetherError):
    """The control endpoint did not answer as expected."""


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a UNIX socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size)
    pid, uid, gid = _CRED.unpack(raw)
    return pid, uid, gid


class ControlServer:
    """Serves one tunnel's control socket inside its process."""

    def __init__(
        self,
        path: Path,
        status: Callable[[], dict[str, Any]],
        stop: Callable[[], Awaitable[None] | None],
    ) -> None:
        self.path = path
        self._status = status
        self._stop = stop
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        import asyncio  # here, not at the top: `tether list` uses only the client

        old_umask = os.umask(0o177)  # the socket is created 0600, never briefly wider
        try:
            with map_exceptions({OSError: RegistryError}, f"cannot serve {self.path}"):
                self.path.unlink(missing_ok=True)
                self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        finally:
            os.umask(old_umask)

    async def close(self) -> None:
        """Stop listening and remove the socket. Connections being answered finish on their own:
        waiting for them here would deadlock when the stop being answered is what closes us."""
        if self._server is not None:
            self._server.close()
            self._server = None
        self.path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            _, uid, _ = peer_credentials(writer.get_extra_info("socket"))
            if uid != os.getuid():
                return
            line = await _wait_for(reader.readline(), 5)
            reply = self._answer(line[:REQUEST_LIMIT])
            if reply.get("stopping"):
                pending = self._stop()
                if pending is not None:
                    # The tunnel closes inside a process that goes on: answer once it has.
                    await pending
                    reply = {"ok": True, "stopped": True}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (OSError, TimeoutError, EOFError, ValueError):  # ValueError: an overlong line
            pass
        finally:
            writer.close()

    def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            message = json.loads(line)
            op, until = message.get("op"), message.get("until")
        except (ValueError, AttributeError):
            return {"ok": False, "error": "bad request"}
        if isinstance(until, int | float) and time.monotonic() > until:
            # The client gave up waiting (this process was frozen, say): it has reported that
            # nothing happened, so nothing may happen now.
            return {"ok": False, "error": "request expired"}
        if op == "status":
            return {"ok": True, **self._status()}
        if op == "stop":
            return {"ok": True, "stopping": True}
        return {"ok": False, "error": f"unknown op {op!r}"}


async def _wait_for(awaitable: Any, seconds: float) -> Any:
    import asyncio

    return await asyncio.wait_for(awaitable, seconds)


Reply = dict[str, Any]


def request(path: str | Path, op: str, *, pid: int, timeout: float = 2.0) -> Reply:
    """Ask the tunnel at ``path`` for ``op``; the server must be process ``pid`` of this user."""
    (reply,) = request_many([(path, pid)], op, timeout=timeout)
    if isinstance(reply, ControlError):
        raise reply
    return reply


def request_many(
    servers: Sequence[tuple[str | Path, int]], op: str, *, timeout: float
) -> list[Reply | ControlError]:
    """Ask every ``(path, pid)`` for ``op`` at once; one answer or error each, all within one
    ``timeout`` in total, so an unresponsive tunnel delays nobody more than that."""
    import selectors  # here: cheap, and only commands that talk to tunnels need it

    deadline = time.monotonic() + timeout
    results: list[Reply | ControlError | None] = [None] * len(servers)
    pending: dict[socket.socket, tuple[int, bytearray]] = {}
    selector = selectors.DefaultSelector()
    # CLOCK_MONOTONIC is one clock for every process of the machine.
    message = json.dumps({"op": op, "until": deadline}).encode() + b"\n"
    try:
        for index, (path, pid) in enumerate(servers):
            try:
                sock = _connect(path, pid)
            except ControlError as exc:
                results[index] = exc
                continue
            try:
                sock.send(message)  # a few bytes into an empty socket buffer: never partial
            except OSError as exc:
                sock.close()
                results[index] = ControlError(f"control socket {path}: {describe(exc)}")
                continue
            pending[sock] = (index, bytearray())
            selector.register(sock, selectors.EVENT_READ)
        while pending and (left := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(left):
                ready = key.fileobj
                assert isinstance(ready, socket.socket)
                index, data = pending[ready]
                try:
                    chunk = ready.recv(65536)
                except OSError:
                    chunk = b""
                data += chunk
                if chunk and b"\n" not in data and len(data) <= REPLY_LIMIT:
                    continue
                results[index] = _parse(servers[index][0], bytes(data))
                selector.unregister(ready)
                ready.close()
                del pending[ready]
    finally:
        for sock, (index, _) in pending.items():
            results[index] = ControlError(
                f"control socket {servers[index][0]}: no answer within {timeout:g}s"
            )
            sock.close()
        selector.close()
    return [r if r is not None else ControlError("no answer") for r in results]


def _connect(path: str | Path, pid: int) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.connect(str(path))  # a UNIX socket connects at once, or fails (EAGAIN: busy)
        peer_pid, peer_uid, _ = peer_credentials(sock)
    except OSError as exc:
        sock.close()
        raise ControlError(f"control socket {path}: {describe(exc)}") from None
    if peer_pid != pid or peer_uid != os.getuid():
        sock.close()
        raise ControlError(f"control socket {path} is served by pid {peer_pid}, not {pid}")
    return sock


def _parse(path: str | Path, data: bytes) -> Reply | ControlError:
    try:
        reply = json.loads(data.split(b"\n", 1)[0])
    except ValueError:
        return ControlError(f"control socket {path}: unreadable reply")
    if not isinstance(reply, dict) or not reply.get("ok"):
        return ControlError(f"control socket {path}: {reply}")
    return reply
