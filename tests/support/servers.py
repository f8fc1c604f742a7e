"""Target servers for tests: threaded TCP echo and silent servers, and an in-process asyncssh."""

from __future__ import annotations

import socket
import struct
import threading
from pathlib import Path
from typing import Self

import asyncssh


class _ThreadedServer:
    """A loopback listener with a thread per connection; stops and joins everything on exit."""

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.create_server(("127.0.0.1", port), backlog=512)
        self.port: int = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self.accepted = 0
        self._acceptor = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> Self:
        self._acceptor.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stopping = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for conn in list(self._conns):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._acceptor.join(5)
        for thread in self._threads:
            thread.join(5)

    def _accept(self) -> None:
        while not self._stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            self.accepted += 1
            thread = threading.Thread(target=self._serve_and_close, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve_and_close(self, conn: socket.socket) -> None:
        try:
            self.serve(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def serve(self, conn: socket.socket) -> None:
        raise NotImplementedError


class EchoServer(_ThreadedServer):
    """Echoes every byte; on EOF from the client it finishes sending, then sends EOF back."""

    def serve(self, conn: socket.socket) -> None:
        while data := conn.recv(262144):
            conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)


class SilentServer(_ThreadedServer):
    """Accepts TCP and never says a word: what a hung SSH server looks like."""

    def tether_flags(self, known_hosts: Path, engine: str | None = None) -> list[str]:
        """`tether start` flags for a tunnel via this "SSH server": it never gets past the
        handshake, so the target does not matter."""
        flags = [
            "--to",
            "127.0.0.1:1",
            "--via",
            f"ssh://u@127.0.0.1:{self.port}",
            "--known-hosts",
            str(known_hosts),
        ]
        return [*flags, "--engine", engine] if engine else flags

    def serve(self, conn: socket.socket) -> None:
        while conn.recv(65536):
            pass


class BlastServer(_ThreadedServer):
    """Sends ``size`` bytes to every client as fast as it takes them, reading nothing."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def serve(self, conn: socket.socket) -> None:
        block = b"b" * 65536
        for _ in range(self.size // len(block)):
            conn.sendall(block)


class ResettingServer(_ThreadedServer):
    """Sends a few bytes, then resets the connection (RST, not FIN): a target that crashed."""

    PARTIAL = b"partial answer"

    def serve(self, conn: socket.socket) -> None:
        conn.sendall(self.PARTIAL)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class BannerServer(_ThreadedServer):
    """Speaks first, as SSH, SMTP and MySQL servers do: sends ``BANNER`` on accept, then echoes."""

    BANNER = b"BANNER 1.0\r\n"

    def serve(self, conn: socket.socket) -> None:
        conn.sendall(self.BANNER)
        while data := conn.recv(262144):
            conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)


class _TestSshServer(asyncssh.SSHServer):
    def __init__(
        self,
        connections: set[asyncssh.SSHServerConnection],
        requested: list[tuple[str, int]],
    ) -> None:
        self._connections = connections
        self._requested = requested

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._connections.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.difference_update({c for c in self._connections if c.is_closed()})

    def begin_auth(self, username: str) -> bool:
        return True

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> bool:
        self._requested.append((dest_host, dest_port))
        return True


class AsyncSshServer:
    """An in-process asyncssh server with per-run keys, for fine-grained integration tests."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.client_key_obj = asyncssh.generate_private_key("ssh-ed25519")
        self.client_key = directory / "client_key"
        self.client_key_obj.write_private_key(str(self.client_key))
        self.client_key.chmod(0o600)
        self.known_hosts = directory / "known_hosts"
        self._server: asyncssh.SSHAcceptor | None = None
        self._connections: set[asyncssh.SSHServerConnection] = set()
        #: Every (host, port) a client asked this server to connect to, as the client named it.
        self.requested: list[tuple[str, int]] = []
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncssh.create_server(
            lambda: _TestSshServer(self._connections, self.requested),
            "127.0.0.1",
            self.port,
            server_host_keys=[self.host_key],
            authorized_client_keys=asyncssh.import_authorized_keys(
                self.client_key_obj.export_public_key().decode()
            ),
        )
        self.port = self._server.sockets[0].getsockname()[1]
        public = self.host_key.export_public_key().decode().strip()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {public}\n")

    async def stop(self) -> None:
        """Stop listening and drop every session, as a server restart would."""
        for conn in list(self._connections):
            conn.abort()
        self._connections.clear()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    @property
    def via(self) -> str:
        return f"ssh://tester@127.0.0.1:{self.port}"


__all__ = [
    "AsyncSshServer",
    "BannerServer",
    "BlastServer",
    "EchoServer",
    "ResettingServer",
    "SilentServer",
]


def echo_once(port: int, payload: bytes, timeout: float = 30) -> bytes:
    """Send ``payload`` to 127.0.0.1:``port``, half-close, and return everything read back."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def free_port() -> int:
    """A port that nothing holds now on either loopback (the kernel's pick, released at once).

    Both, because a tunnel on `localhost` binds both: a port free on 127.0.0.1 alone may be
    some other program's on ::1."""
    for _ in range(50):
        with socket.socket() as sock, socket.socket(socket.AF_INET6) as sock6:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
            try:
                sock6.bind(("::1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no port free on both loopbacks in 50 tries")
