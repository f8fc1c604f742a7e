"""The mux client against a real `ssh -M`, and against control sockets that do not speak the
protocol as they should: every answer it cannot use is a MuxError, never a hang or a crash."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from tests.support.sshd_server import SshdServer
from tether.transports import mux
from tether.transports.master import Master
from tether.transports.openssh import OpenSshTransport
from tether.spec import SshOptions, Via

Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def packet(kind: int, body: bytes = b"") -> bytes:
    payload = struct.pack(">I", kind) + body
    return struct.pack(">I", len(payload)) + payload


HELLO = packet(mux.MUX_MSG_HELLO, struct.pack(">I", mux.VERSION))


@pytest.fixture
async def master(shared_sshd: SshdServer) -> AsyncIterator[OpenSshTransport]:
    ssh = OpenSshTransport(
        Via.parse(shared_sshd.via),
        SshOptions(
            identity_files=(str(shared_sshd.client_key),),
            known_hosts=str(shared_sshd.known_hosts),
            ssh_config=str(shared_sshd.ssh_config),
        ),
    )
    await ssh.connect()
    yield ssh
    await ssh.close()


async def test_a_real_master_answers_with_its_pid(master: OpenSshTransport) -> None:
    assert isinstance(master._master, Master)  # a bare transport's own
    assert await mux.alive(str(master._master.control)) == master._master.process.pid


async def test_a_real_master_refuses_a_closed_port(master: OpenSshTransport) -> None:
    assert master._master is not None
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        here, there = socket.socketpair()
        with here, there:
            control = await mux.start_forward(
                str(master._master.control), "127.0.0.1", closed.getsockname()[1], there
            )
            with control.sock, pytest.raises(mux.MuxError):
                await asyncio.wait_for(mux.forward_opened(control), 10)


@pytest.fixture
async def fake_master(tmp_path: Path) -> AsyncIterator[Callable[[Answer], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def serve(answer: Answer) -> str:
        path = str(tmp_path / f"control{len(servers)}")
        servers.append(await asyncio.start_unix_server(answer, path))
        return path

    yield serve
    for server in servers:
        server.close()
        await server.wait_closed()


def replying(data: bytes) -> Answer:
    """A master that reads the request, answers ``data`` (if any), and closes once the client
    has: an orderly end, never a reset for unread bytes."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)
        if data:
            writer.write(data)
            await writer.drain()
            while await reader.read(4096):
                pass
        writer.close()

    return answer


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        (b"", "closed the control connection"),
        (packet(mux.MUX_S_OK), "expected the master's hello"),
        (packet(mux.MUX_MSG_HELLO, struct.pack(">I", 9)), "mux protocol 9"),
        (HELLO + struct.pack(">I", 1 << 30), "bad message length"),
        (HELLO + struct.pack(">I", 2) + b"xx", "bad message length"),
        (HELLO + packet(mux.MUX_S_ALIVE), "truncated"),
        (HELLO + packet(mux.MUX_S_ALIVE, struct.pack(">I", 7) * 2), "unexpected answer"),
        (HELLO + packet(mux.MUX_S_OK, struct.pack(">I", 1)), "unexpected answer"),
    ],
)
async def test_a_health_check_refuses_what_it_cannot_use(
    fake_master: Callable[[Answer], Awaitable[str]], reply: bytes, words: str
) -> None:
    path = await fake_master(replying(reply))
    with pytest.raises(mux.MuxError, match=words):
        await asyncio.wait_for(mux.alive(path), 10)


def dribbling(data: bytes) -> Answer:
    """A master that answers ``data`` one byte per write."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)
        for byte in data:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0)  # a turn of the loop between bytes, not a wait
        while await reader.read(4096):
            pass
        writer.close()

    return answer


@pytest.mark.parametrize("answer", [replying, dribbling])
async def test_messages_are_read_whole_however_they_arrive(
    fake_master: Callable[[Answer], Awaitable[str]], answer: Callable[[bytes], Answer]
) -> None:
    alive = packet(mux.MUX_S_ALIVE, struct.pack(">II", mux.REQUEST_ID, 4242))
    path = await fake_master(answer(HELLO + alive))
    assert await asyncio.wait_for(mux.alive(path), 10) == 4242


async def test_a_refusal_carries_the_masters_reason(
    fake_master: Callable[[Answer], Awaitable[str]],
) -> None:
    reason = b"open failed"
    body = struct.pack(">I", mux.REQUEST_ID) + struct.pack(">I", len(reason)) + reason
    path = await fake_master(replying(HELLO + packet(mux.MUX_S_FAILURE, body)))
    here, there = socket.socketpair()
    with here, there:
        control = await mux.start_forward(path, "db", 5432, there)
        with control.sock, pytest.raises(mux.MuxError, match=r"^open failed$"):
            await asyncio.wait_for(mux.forward_opened(control), 10)


async def test_a_forward_request_is_what_protocol_mux_describes(
    fake_master: Callable[[Answer], Awaitable[str]],
) -> None:
    """Hello, then NEW_STDIO_FWD with an empty reserved string, host and port; then the
    descriptors, each with its own byte."""
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read(4096)
        received.set_result(data)
        writer.write(HELLO + packet(mux.MUX_S_SESSION_OPENED, struct.pack(">II", 1, 5)))
        await writer.drain()
        writer.close()

    path = await fake_master(record)
    here, there = socket.socketpair()
    with here, there:
        control = await mux.start_forward(path, "db.internal", 5432, there)
        with control.sock:
            await asyncio.wait_for(mux.forward_opened(control), 10)
    body = struct.pack(">I", 1) + struct.pack(">I", 0) + struct.pack(">I", 11) + b"db.internal"
    request = HELLO + packet(mux.MUX_C_NEW_STDIO_FWD, body + struct.pack(">I", 5432))
    # The two descriptors' bytes may come in the same read.
    assert (await received).startswith(request)


async def test_nobody_at_the_socket_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await mux.alive(str(tmp_path / "no-such-socket"))


class Ticks:
    """A task that counts turns of the loop, to tell a waiting call from a blocked loop: the
    longest gap between its turns is how long the loop was held."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.last = self.loop.time()
        self.longest_gap = 0.0
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0.01)  # the pace of the measurement, not a synchronisation
            now = self.loop.time()
            self.longest_gap = max(self.longest_gap, now - self.last)
            self.last = now

    def stop(self) -> float:
        self.task.cancel()
        return max(self.longest_gap, self.loop.time() - self.last)


@pytest.fixture
def stuck_master(tmp_path: Path) -> Iterator[str]:
    """A control socket whose master never accepts and whose backlog is full, like a stopped
    ssh's after a burst of clients. Should a connect to it block in the kernel all the same,
    a guard thread empties the backlog after a few seconds, so that the test fails rather
    than hangs."""
    path = str(tmp_path / "control")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(0)
    queued = []
    while True:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.setblocking(False)
        try:
            client.connect(path)
        except BlockingIOError:
            client.close()
            break
        queued.append(client)
    done = threading.Event()
    accepted: list[socket.socket] = []

    def guard() -> None:
        if not done.wait(GUARD_AFTER):
            listener.settimeout(0.1)
            with contextlib.suppress(OSError):
                while True:
                    accepted.append(listener.accept()[0])

    thread = threading.Thread(target=guard, daemon=True)
    thread.start()
    yield path
    done.set()
    thread.join(30)
    for sock in [*queued, *accepted, listener]:
        sock.close()


GUARD_AFTER = 2.0


def call(name: str, path: str, conn: socket.socket) -> Awaitable[object]:
    if name == "alive":
        return mux.alive(path)
    return mux.start_forward(path, "db", 5432, conn)


@pytest.mark.parametrize("name", ["alive", "start_forward"])
async def test_a_master_with_a_full_backlog_times_out_without_blocking_the_loop(
    stuck_master: str, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setattr(mux, "MUX_ANSWER_TIMEOUT", 0.5, raising=False)
    ticks = Ticks()
    began = time.monotonic()
    here, there = socket.socketpair()
    with here, there:
        try:
            outcome: object = await asyncio.wait_for(call(name, stuck_master, there), 4)
        except Exception as exc:  # what it raised is asserted below, after the loop's health
            outcome = exc
    took = time.monotonic() - began
    held = ticks.stop()
    assert held < 0.3, f"the event loop was held for {held:.2f}s"
    assert isinstance(outcome, mux.MuxError), outcome
    assert "did not answer within 0.5s" in str(outcome)
    assert 0.4 < took < 2.0


async def test_a_master_that_takes_the_connection_but_never_says_hello_times_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its backlog has room: the connect and the request succeed, and then nothing comes."""
    monkeypatch.setattr(mux, "MUX_ANSWER_TIMEOUT", 0.5, raising=False)
    path = str(tmp_path / "control")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(8)
        ticks = Ticks()
        here, there = socket.socketpair()
        with here, there:
            for name in ("alive", "start_forward"):
                with pytest.raises(mux.MuxError, match=r"did not answer within 0\.5s"):
                    await asyncio.wait_for(call(name, path, there), 4)
        assert ticks.stop() < 0.3


async def test_a_descriptor_waits_for_room_on_the_control_connection() -> None:
    """SCM_RIGHTS cannot go through sock_sendall: with the socket full, the send waits for it
    to be writable, and the loop runs meanwhile."""
    ours, masters = socket.socketpair()
    here, there = socket.socketpair()
    with ours, masters, here, there:
        ours.setblocking(False)
        masters.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                ours.send(b"x" * 65536)
        sending = asyncio.ensure_future(mux._send_fd(ours, there.fileno()))
        for _ in range(20):  # turns of the loop: it must still be waiting for room
            await asyncio.sleep(0)
        assert not sending.done()
        loop = asyncio.get_running_loop()
        received: list[int] = []
        while not sending.done() or not received:
            _, fds, _, _ = await asyncio.wait_for(_recv_fds(loop, masters), 10)
            received += fds
        await sending
        for fd in received:
            os.close(fd)
    assert len(received) == 1


async def _recv_fds(
    loop: asyncio.AbstractEventLoop, sock: socket.socket
) -> tuple[bytes, list[int], int, object]:
    ready: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), readable)
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())
    return socket.recv_fds(sock, 65536, 4)
