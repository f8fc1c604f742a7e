"""Seeing from outside whether another process's TCP peer has spoken: what the OpenSSH engine
asks of its master while it starts."""

from __future__ import annotations

import select
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.support.waiting import wait_until_sync
from tether.transports.peerwatch import PeerWatch

# Connects to each port read on stdin, closing the previous connection first, as ssh does when
# it tries a server's addresses in turn.
CLIENT = """
import socket, sys
sock = None
for line in sys.stdin:
    if sock is not None:
        sock.close()
    sock = socket.create_connection(("127.0.0.1", int(line)))
    print("connected", flush=True)
"""


class Client:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CLIENT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def connect(self, server: socket.socket) -> socket.socket:
        """Have the client connect to ``server``; returns the server's side."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{server.getsockname()[1]}\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        assert ready, "the client did not connect within 30s"
        assert self.proc.stdout.readline() == "connected\n"
        conn, _ = server.accept()
        return conn

    def end(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def client() -> Iterator[Client]:
    client = Client()
    try:
        yield client
    finally:
        if client.proc.poll() is None:
            client.proc.kill()
        client.end()


def test_heard_once_the_peer_sends_a_byte(client: Client) -> None:
    watch = PeerWatch(client.proc.pid)
    try:
        assert watch.heard() is False  # no connection yet
        with socket.create_server(("127.0.0.1", 0)) as server:
            conn = client.connect(server)
            with conn:
                assert watch.heard() is False  # connected, and the server said nothing
                conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
                wait_until_sync(lambda: watch.heard() is True, "the bytes to be counted")
    finally:
        watch.close()


def test_a_new_connection_is_watched_afresh(client: Client) -> None:
    """The first address spoke, then the client moved on: the new connection has not."""
    watch = PeerWatch(client.proc.pid)
    try:
        with (
            socket.create_server(("127.0.0.1", 0)) as first,
            socket.create_server(("127.0.0.1", 0)) as second,
        ):
            with client.connect(first) as conn:
                conn.sendall(b"x")
                wait_until_sync(lambda: watch.heard() is True, "the first server's byte")
                with client.connect(second):
                    assert watch.heard() is False
        client.end()
        assert watch.heard() is False  # the process is gone: its exit says the rest
    finally:
        watch.close()


def test_a_process_without_a_tcp_connection_has_heard_nothing() -> None:
    """A master behind a ProxyCommand talks through pipes: nothing to see, and no error."""
    here, there = socket.socketpair()
    with here, there:
        proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.stdin.read()"],
            stdin=subprocess.PIPE,
            pass_fds=[there.fileno()],
        )
        watch = PeerWatch(proc.pid)
        try:
            assert watch.heard() is False
        finally:
            watch.close()
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=30)
