"""The per-tunnel control endpoint: a UNIX socket answering `status` and `stop`, same user only.

`stop` answers {"stopping": true} when the whole process is about to exit (the client then waits
for the exit), or {"stopped": true} once the tunnel has closed in a process that goes on (shell).

One JSON object per line each way. The server checks the peer's uid (SO_PEERCRED); the client
checks that the server is the pid the registry names, so neither side can be impersonated.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether.errors import TetherError

if TYPE_CHECKING:
    import asyncio

REQUEST_LIMIT = 4096
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

        self.path.unlink(missing_ok=True)
        old_umask = os.umask(0o177)  # the socket is created 0600, never briefly wider
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        finally:
            os.umask(old_umask)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
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
            op = json.loads(line).get("op")
        except (ValueError, AttributeError):
            return {"ok": False, "error": "bad request"}
        if op == "status":
            return {"ok": True, **self._status()}
        if op == "stop":
            return {"ok": True, "stopping": True}
        return {"ok": False, "error": f"unknown op {op!r}"}


async def _wait_for(awaitable: Any, seconds: float) -> Any:
    import asyncio

    return await asyncio.wait_for(awaitable, seconds)


def request(path: str | Path, op: str, *, pid: int, timeout: float = 2.0) -> dict[str, Any]:
    """Ask the tunnel at ``path`` for ``op``; the server must be process ``pid`` of this user."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            peer_pid, peer_uid, _ = peer_credentials(sock)
            if peer_pid != pid or peer_uid != os.getuid():
                raise ControlError(f"control socket {path} is served by pid {peer_pid}, not {pid}")
            sock.sendall(json.dumps({"op": op}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError as exc:
            raise ControlError(f"control socket {path}: {exc.strerror or exc}") from None
    try:
        reply = json.loads(data)
    except ValueError:
        raise ControlError(f"control socket {path}: unreadable reply") from None
    if not isinstance(reply, dict) or not reply.get("ok"):
        raise ControlError(f"control socket {path}: {reply}")
    return reply
