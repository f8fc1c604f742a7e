"""A small SOCKS5 client for tests: CONNECT through a proxy on loopback, blocking, with deadlines;
and an HTTP server to reach through it."""

from __future__ import annotations

import http.server
import socket
import threading
from typing import Self

from tether.socks import METHOD_ACCEPTED, encode_request

DEADLINE = 20.0


class SocksReplyError(Exception):
    """The proxy answered the request with a failure code."""

    def __init__(self, code: int) -> None:
        super().__init__(f"SOCKS reply 0x{code:02x}")
        self.code = code


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {size} bytes: {data!r}")
        data += chunk
    return data


def read_reply(sock: socket.socket) -> int:
    """The REP code of the proxy's reply, reading the whole reply (whatever its address type)."""
    head = recv_exactly(sock, 4)
    size = {1: 4, 4: 16}.get(head[3])
    if size is None:
        size = recv_exactly(sock, 1)[0]
    recv_exactly(sock, size + 2)
    return head[1]


def socks_connect(
    proxy_port: int, host: str, port: int, *, proxy_host: str = "127.0.0.1"
) -> socket.socket:
    """A connection to ``host:port`` through the SOCKS5 proxy; SocksReplyError if refused."""
    sock = socket.create_connection((proxy_host, proxy_port), timeout=DEADLINE)
    try:
        sock.sendall(b"\x05\x01\x00")
        assert recv_exactly(sock, 2) == METHOD_ACCEPTED
        sock.sendall(encode_request(host, port))
        code = read_reply(sock)
        if code != 0:
            raise SocksReplyError(code)
    except BaseException:
        sock.close()
        raise
    return sock


def socks_echo(proxy_port: int, host: str, port: int, payload: bytes) -> bytes:
    """Send ``payload`` to an echo server through the proxy, half-close, return what came back."""
    with socks_connect(proxy_port, host, port) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def read_to_end(sock: socket.socket) -> bytes:
    """Everything until EOF; a reset counts as the end."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


class HttpServer:
    """An HTTP server on 127.0.0.1 that answers every GET with ``BODY``."""

    BODY = b"hello from the far side\n"

    def __init__(self) -> None:
        body = self.BODY

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)
