"""The per-tunnel control endpoint: a UNIX socket answering `status` and `stop`, same user only.

`stop` answers {"stopping": true} when the whole process is about to exit (the client then waits
for the exit), or {"stopped": true} once the tunnel has closed in a process that goes on (shell).
A request that arrives after its deadline is refused, never acted on (see protocol.py).

The server checks the peer's uid (SO_PEERCRED); the client (client.py) checks that the server is
the pid the registry names, so neither side can be impersonated.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tether.errors import RegistryError, map_exceptions
from tether.protocol import JSONObject, Status, parse_request

if TYPE_CHECKING:
    import asyncio

REQUEST_LIMIT = 4096
_CRED = struct.Struct("3i")


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a UNIX socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size)
    pid, uid, gid = _CRED.unpack(raw)
    return pid, uid, gid


def bind_private_socket(path: Path) -> socket.socket:
    """A listening UNIX socket at ``path``, mode 0600, the umask untouched.

    Linux creates the socket file with the socket's own mode less the umask, so a socket
    made 0600 before ``bind`` is never wider, whatever the caller's umask (changing the umask
    instead would change it for every thread of the process, and for every task while the
    loop runs). Even where that did not hold, the file is only ever in a directory that
    nobody else may write to (the registry's, checked when opened), and its mode is set and
    checked before anyone is told where it is.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound = False
    try:
        os.fchmod(sock.fileno(), 0o600)
        sock.bind(str(path))
        bound = True
        os.chmod(path, 0o600)  # exactly: a umask may have taken bits off the owner's too
        st = os.lstat(path)
        if not stat.S_ISSOCK(st.st_mode) or stat.S_IMODE(st.st_mode) != 0o600:
            raise RegistryError(f"control socket {path} is not a private socket")
        sock.listen(socket.SOMAXCONN)
    except BaseException:
        sock.close()
        if bound:
            path.unlink(missing_ok=True)
        raise
    return sock


class ControlServer:
    """Serves one tunnel's control socket inside its process."""

    def __init__(
        self,
        path: Path,
        status: Callable[[], Status],
        stop: Callable[[], Awaitable[None] | None],
    ) -> None:
        self.path = path
        self._status = status
        self._stop = stop
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        import asyncio  # here, not at the top: `tether list` uses only the client

        with map_exceptions({OSError: RegistryError}, f"cannot serve {self.path}"):
            self.path.unlink(missing_ok=True)
            sock = bind_private_socket(self.path)
            try:
                self._server = await asyncio.start_unix_server(self._serve, sock=sock)
            except BaseException:
                sock.close()
                raise  # close() removes the file

    async def close(self) -> None:
        """Stop listening and remove the socket. Connections being answered finish on their own:
        waiting for them here would deadlock when the stop being answered is what closes us."""
        if self._server is not None:
            self._server.close()
            self._server = None
        self.path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import asyncio

        try:
            _, uid, _ = peer_credentials(writer.get_extra_info("socket"))
            if uid != os.getuid():
                return
            line = await asyncio.wait_for(reader.readline(), 5)
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

    def _answer(self, line: bytes) -> JSONObject:
        try:
            op, until = parse_request(line)
        except ValueError:
            return {"ok": False, "error": "bad request"}
        if until is not None and time.monotonic() > until:
            # The client gave up waiting (this process was frozen, say): it has reported that
            # nothing happened, so nothing may happen now.
            return {"ok": False, "error": "request expired"}
        if op == "status":
            return {"ok": True, **self._status().to_json()}
        if op == "stop":
            return {"ok": True, "stopping": True}
        return {"ok": False, "error": f"unknown op {op!r}"}
