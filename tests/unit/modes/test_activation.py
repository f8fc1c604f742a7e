"""Socket activation: which variables count, and which passed descriptors tether can serve."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tether.errors import UsageError
from tether.modes.activation import listen_sockets, take_socket


@pytest.fixture
def socks() -> Iterator[list[socket.socket]]:
    """Sockets a test makes; closed after it."""
    made: list[socket.socket] = []
    yield made
    for sock in made:
        sock.close()


def test_variables_for_another_process_mean_nothing() -> None:
    environ = {"LISTEN_FDS": "1", "LISTEN_PID": "1"}
    assert listen_sockets(environ, pid=4242) is None
    assert environ == {"LISTEN_FDS": "1", "LISTEN_PID": "1"}  # not ours to take


def test_no_variables() -> None:
    assert listen_sockets({}, pid=4242) is None


def test_zero_sockets_are_taken_as_none() -> None:
    environ = {"LISTEN_FDS": "0", "LISTEN_PID": "4242", "LISTEN_FDNAMES": ""}
    assert listen_sockets(environ, pid=4242) is None
    assert environ == {}


def test_a_count_that_is_not_a_number() -> None:
    with pytest.raises(UsageError, match="LISTEN_FDS is not a number: 'x'"):
        listen_sockets({"LISTEN_FDS": "x", "LISTEN_PID": "4242"}, pid=4242)


def test_a_listening_tcp_socket_is_taken(socks: list[socket.socket]) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    server.set_inheritable(True)  # as systemd passes it
    socks.append(server)
    sock = take_socket(os.dup(server.fileno()), "db.socket")
    socks.append(sock)
    assert sock.getsockname() == server.getsockname()
    assert not sock.getblocking() and not sock.get_inheritable()


def test_ipv6_is_taken(socks: list[socket.socket]) -> None:
    server = socket.create_server(("::1", 0), family=socket.AF_INET6)
    socks.append(server)
    sock = take_socket(os.dup(server.fileno()))
    socks.append(sock)
    assert sock.family == socket.AF_INET6
    assert sock.getsockname()[:2] == server.getsockname()[:2]
    assert not sock.getblocking() and not sock.get_inheritable()


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("udp", "fd {fd} is a datagram socket, not TCP"),
        ("bound", "fd {fd} is a TCP socket that is not listening"),
        ("unix", "fd {fd} is an AF_UNIX socket, not TCP"),
    ],
)
def test_other_sockets_are_refused(
    socks: list[socket.socket], tmp_path: Path, kind: str, error: str
) -> None:
    if kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(tmp_path / "s"))
        sock.listen()
    else:
        sock = socket.socket(
            socket.AF_INET, socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
        )
        sock.bind(("127.0.0.1", 0))
    socks.append(sock)
    fd = os.dup(sock.fileno())
    with pytest.raises(UsageError) as caught:
        take_socket(fd)
    assert caught.value.message == "socket activation: " + error.format(fd=fd)
    with pytest.raises(OSError):
        os.fstat(fd)  # our copy is closed again


def test_a_pipe_is_not_a_socket() -> None:
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(UsageError, match=rf"fd {read_end} \(x\) is not a socket"):
            take_socket(read_end, "x")
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_closed_descriptor() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    os.close(write_end)
    with pytest.raises(UsageError, match=rf"fd {read_end} cannot be used: Bad file descriptor"):
        take_socket(read_end)
