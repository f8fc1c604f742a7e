"""A client of OpenSSH's multiplexing protocol (PROTOCOL.mux), the part tether needs: a health
check, and a stdio forward fed with an accepted socket.

Every message is a uint32 length, then a uint32 type and its body, in SSH wire format. Each side
sends a hello first. For a stdio forward, the master reads the request, then waits (blocking its
whole event loop) for two file descriptors, each sent on its own with one data byte: so the
request and both descriptors go out together, with no wait between them while the socket takes
them (a fresh one always does), never one without the others.

Nothing here blocks the caller's event loop on the master: every socket is non-blocking, and a
master that does not take the connection or say its hello within MUX_ANSWER_TIMEOUT (stopped,
hung, its backlog full) raises Unanswered.
"""

from __future__ import annotations

import asyncio
import socket
import struct

MUX_MSG_HELLO = 0x00000001
MUX_C_ALIVE_CHECK = 0x10000004
MUX_C_NEW_STDIO_FWD = 0x10000008
MUX_S_OK = 0x80000001
MUX_S_PERMISSION_DENIED = 0x80000002
MUX_S_FAILURE = 0x80000003
MUX_S_ALIVE = 0x80000005
MUX_S_SESSION_OPENED = 0x80000006
VERSION = 4
REQUEST_ID = 1  # one request per control connection, so one id does
PACKET_LIMIT = 256 * 1024
# How long a master may take to accept a control connection and say its hello (it does so at
# once, before it reads anything), and to answer a health check. A master that takes longer is
# stopped or hung and counts as lost. Its answer to a forward comes later, after the server has
# reached the target, and is not bounded here.
MUX_ANSWER_TIMEOUT = 5.0
# A UNIX listener whose backlog is full refuses a non-blocking connect (EAGAIN), with no event
# to say when there is room again: the connect is retried, at growing intervals.
CONNECT_RETRY_FIRST = 0.001
CONNECT_RETRY_MAX = 0.05

_U32 = struct.Struct(">I")


class MuxError(Exception):
    """The master refused a request, or did not speak the protocol; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Unanswered(MuxError):
    """The master did not take the control connection, or say its hello, in time."""

    def __init__(self) -> None:
        super().__init__(f"the master did not answer within {MUX_ANSWER_TIMEOUT:g}s")


def _u32(value: int) -> bytes:
    return _U32.pack(value)


def _string(data: bytes) -> bytes:
    return _u32(len(data)) + data


def _packet(kind: int, body: bytes = b"") -> bytes:
    payload = _u32(kind) + body
    return _u32(len(payload)) + payload


HELLO = _packet(MUX_MSG_HELLO, _u32(VERSION))


class Reply:
    """One message from the master, read field by field."""

    def __init__(self, payload: bytes) -> None:
        self._data = payload
        self._at = 0
        self.kind = self.u32()

    def u32(self) -> int:
        if self._at + 4 > len(self._data):
            raise MuxError("truncated message from the master")
        (value,) = _U32.unpack_from(self._data, self._at)
        self._at += 4
        return int(value)

    def string(self) -> str:
        size = self.u32()
        if self._at + size > len(self._data):
            raise MuxError("truncated message from the master")
        text = self._data[self._at : self._at + size]
        self._at += size
        return text.decode(errors="replace")


class Inbox:
    """The messages from the master on one non-blocking control connection. It reads what is
    there, not a field at a time: each wait on the socket costs the event loop more than the
    bytes do."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = b""

    async def next(self) -> Reply:
        """The next message; MuxError at EOF."""
        while True:
            if len(self._buffer) >= 4:
                (size,) = _U32.unpack_from(self._buffer)
                if not 4 <= size <= PACKET_LIMIT:
                    raise MuxError(f"bad message length {size} from the master")
                if len(self._buffer) >= 4 + size:
                    payload = self._buffer[4 : 4 + size]
                    self._buffer = self._buffer[4 + size :]
                    return Reply(payload)
            chunk = await asyncio.get_running_loop().sock_recv(self.sock, 4096)
            if not chunk:
                raise MuxError("the master closed the control connection")
            self._buffer += chunk

    async def hello(self) -> None:
        """The master's hello, checked."""
        hello = await self.next()
        if hello.kind != MUX_MSG_HELLO:
            raise MuxError(f"expected the master's hello, got message 0x{hello.kind:08x}")
        if (version := hello.u32()) != VERSION:
            raise MuxError(f"the master speaks mux protocol {version}, not {VERSION}")

    async def past_hello(self) -> Reply:
        """The master's hello, checked, then its next message."""
        await self.hello()
        return await self.next()


async def _connect(path: str) -> socket.socket:
    """A non-blocking control connection to the master behind ``path``; OSError if nothing
    listens there. A full backlog is waited out (the caller bounds the wait)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    pause = CONNECT_RETRY_FIRST
    try:
        while True:
            try:
                sock.connect(path)  # a UNIX socket connects at once, fails, or says EAGAIN
                return sock
            except BlockingIOError:
                await asyncio.sleep(pause)
                pause = min(pause * 2, CONNECT_RETRY_MAX)
    except BaseException:
        sock.close()
        raise


async def _writable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def room() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(sock.fileno(), room)
    try:
        await ready
    finally:
        loop.remove_writer(sock.fileno())


async def _send_fd(sock: socket.socket, fd: int) -> None:
    """Send ``fd`` with one data byte (SCM_RIGHTS), waiting for room if the socket has none."""
    while True:
        try:
            socket.send_fds(sock, [b"\0"], [fd])
            return
        except BlockingIOError:
            await _writable(sock)


async def alive(path: str) -> int:
    """The master's pid, if the master behind ``path`` answers a health check; Unanswered if it
    does not within MUX_ANSWER_TIMEOUT."""
    sock, pid = await hold(path)
    sock.close()
    return pid


async def hold(path: str) -> tuple[socket.socket, int]:
    """A control connection to the master behind ``path``, kept open, and the master's pid
    (its answer to a health check on it). An open control connection is a client of the
    master's: one started with ControlPersist lives while any is open (sharedmaster.py).
    Unanswered if it does not answer within MUX_ANSWER_TIMEOUT."""
    try:
        async with asyncio.timeout(MUX_ANSWER_TIMEOUT):
            sock = await _connect(path)
            try:
                await asyncio.get_running_loop().sock_sendall(
                    sock, HELLO + _packet(MUX_C_ALIVE_CHECK, _u32(REQUEST_ID))
                )
                reply = await Inbox(sock).past_hello()
                if reply.kind != MUX_S_ALIVE or reply.u32() != REQUEST_ID:
                    raise MuxError(f"unexpected answer 0x{reply.kind:08x} to a health check")
                return sock, reply.u32()
            except BaseException:
                sock.close()
                raise
    except TimeoutError:
        raise Unanswered() from None


async def start_forward(path: str, host: str, port: int, conn: socket.socket) -> Inbox:
    """Ask the master behind ``path`` to forward ``conn`` to ``host:port``.

    Returns the control connection once the master has said its hello (Unanswered if it has
    not within MUX_ANSWER_TIMEOUT); ``forward_opened`` then reads the outcome on it. It stays
    open as long as the forward lives: the caller closes ``.sock``.
    """
    loop = asyncio.get_running_loop()
    body = _u32(REQUEST_ID) + _string(b"") + _string(host.encode()) + _u32(port)
    try:
        async with asyncio.timeout(MUX_ANSWER_TIMEOUT):
            sock = await _connect(path)
            try:
                await loop.sock_sendall(sock, HELLO + _packet(MUX_C_NEW_STDIO_FWD, body))
                for _ in ("stdin", "stdout"):  # the same socket twice: ssh reads and writes it
                    await _send_fd(sock, conn.fileno())
                inbox = Inbox(sock)
                await inbox.hello()
            except BaseException:
                sock.close()
                raise
    except TimeoutError:
        raise Unanswered() from None
    return inbox


async def forward_opened(inbox: Inbox) -> None:
    """Wait for the master's answer to ``start_forward``; MuxError with its reason if it
    refused (a target that refuses gives "Session open refused by peer")."""
    reply = await inbox.next()
    if reply.kind == MUX_S_SESSION_OPENED:
        return
    if reply.kind in (MUX_S_FAILURE, MUX_S_PERMISSION_DENIED):
        reply.u32()  # the request id
        raise MuxError(reply.string())
    raise MuxError(f"unexpected answer 0x{reply.kind:08x} to a forward")


async def forward_ended(sock: socket.socket) -> None:
    """Return once the master closes the control connection: the forward is over."""
    loop = asyncio.get_running_loop()
    try:
        while await loop.sock_recv(sock, 4096):
            pass  # the master may send an exit message first; it says nothing we need
    except OSError:
        pass
