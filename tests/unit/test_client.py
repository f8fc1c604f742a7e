"""The control client: every tunnel asked at once, one deadline for all, peers verified."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tether.client import request, request_many
from tether.errors import ControlError


class SilentControl:
    """A control socket that accepts and never answers: a frozen tunnel. Counts how many of its
    connections are open at once."""

    open_now = 0
    most_at_once = 0
    lock = threading.Lock()

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        self.sock.listen()
        self.path = path
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with SilentControl.lock:
            SilentControl.open_now += 1
            SilentControl.most_at_once = max(SilentControl.most_at_once, SilentControl.open_now)
        conn.recv(4096)
        conn.recv(4096)  # returns once the client gives up and closes
        with SilentControl.lock:
            SilentControl.open_now -= 1
        conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def silent(tmp_path: Path) -> Iterator[list[SilentControl]]:
    servers = [SilentControl(tmp_path / f"{n}.sock") for n in range(4)]
    yield servers
    for server in servers:
        server.close()


def test_every_tunnel_is_asked_at_once(silent: list[SilentControl]) -> None:
    replies = request_many([(s.path, os.getpid()) for s in silent], "status", timeout=0.3)
    assert all(isinstance(r, ControlError) and "no answer within" in r.message for r in replies)
    # All four were waiting together: one deadline for all, not one each.
    assert SilentControl.most_at_once == 4


def test_a_socket_served_by_another_pid_is_refused(silent: list[SilentControl]) -> None:
    with pytest.raises(ControlError, match=f"served by pid {os.getpid()}, not 1"):
        request(silent[0].path, "status", pid=1, timeout=1)


def test_a_deeply_nested_reply_is_unreadable_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "deep.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen()

    def answer() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b"[" * 100_000 + b"\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        (reply,) = request_many([(path, os.getpid())], "status", timeout=10)
    finally:
        thread.join(10)
        listener.close()
    assert isinstance(reply, ControlError) and "unreadable reply" in reply.message


def test_a_missing_socket_is_an_error_not_a_wait(tmp_path: Path) -> None:
    (reply,) = request_many([(tmp_path / "none.sock", os.getpid())], "status", timeout=5)
    assert isinstance(reply, ControlError) and "No such file or directory" in reply.message
