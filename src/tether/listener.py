"""The local listening sockets: resolving the listen address, binding it, and accepting.

tether runs its own accept loop rather than asyncio's Server: it must pause accepting when the
process runs out of file descriptors or the tunnel is at its connection limit, and resume by
itself, with one warning instead of a traceback per attempt.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable

from tether.errors import PortInUseError, TetherError, UsageError, describe
from tether.logs import LimitedLog
from tether.spec import Endpoint

LISTEN_BACKLOG = 512
# The default listen host: both loopback addresses, as `ssh -L` binds them, so that no other user
# can take [::1]:PORT and receive the clients that connect to localhost:PORT.
LOOPBACK_NAME = "localhost"
LOOPBACK = ("127.0.0.1", "::1")
# Connections taken per readiness event, so one busy listener cannot starve the relays.
ACCEPT_BATCH = 64
# How long accepting pauses when the process or the system is out of descriptors or memory.
EXHAUSTED_PAUSE = 0.5
_EXHAUSTED = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
# With port 0 the first address picks the port and the others must get the same one.
PAIR_ATTEMPTS = 8


async def resolve_listen(host: str) -> list[tuple[str, bool]]:
    """The numeric addresses to bind for ``host``, each with whether it is required.

    Done before the registry lock is taken, so a slow resolver holds up nobody else. The second
    loopback is optional: a host without IPv6 binds 127.0.0.1 alone.
    """
    if host == LOOPBACK_NAME:
        return [(LOOPBACK[0], True), (LOOPBACK[1], False)]
    if _is_numeric(host):
        return [(host, True)]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (OSError, UnicodeError) as exc:
        raise UsageError(f"cannot listen on {host}: {describe(exc)}") from None
    addresses: list[str] = []
    for _, _, _, _, sockaddr in infos:
        if sockaddr[0] not in addresses:
            addresses.append(str(sockaddr[0]))
    return [(address, True) for address in addresses]


def _is_numeric(host: str) -> bool:
    try:
        socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)
    except (OSError, UnicodeError):
        return False
    return True


def bind_all(addresses: list[tuple[str, bool]], port: int) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets on every address, all with one port.

    Synchronous and free of name resolution on purpose: a caller binds while holding the registry
    lock, and nothing else of its process may run or wait in between.
    """
    for attempt in range(PAIR_ATTEMPTS if port == 0 else 1):
        socks: list[socket.socket] = []
        chosen = port
        try:
            for address, required in addresses:
                sock = _bind_one(address, chosen, required)
                if sock is not None:
                    socks.append(sock)
                    chosen = sock.getsockname()[1]
            return socks
        except PortInUseError:
            for sock in socks:
                sock.close()
            if port or attempt == PAIR_ATTEMPTS - 1:
                raise
        except BaseException:
            for sock in socks:
                sock.close()
            raise
    raise AssertionError("unreachable")


def _bind_one(address: str, port: int, required: bool) -> socket.socket | None:
    listen = Endpoint(address, port)
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        if not required:
            return None
        raise UsageError(f"cannot listen on {listen}: {describe(exc)}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # [::] must stay IPv6-only when an IPv4 socket shares the port.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, address != "::")
        numeric = socket.AI_NUMERICHOST  # parses a literal (and an IPv6 scope); never asks DNS
        sock.bind(socket.getaddrinfo(address, port, family, socket.SOCK_STREAM, 0, numeric)[0][4])
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) and not required:
            return None
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(
                f"local address {listen} is in use by another program",
                hint="pick another port, or 0 for any free one",
                options=("port",),
            ) from None
        if exc.errno in (errno.EADDRNOTAVAIL, errno.EACCES, errno.EAFNOSUPPORT):
            raise UsageError(f"cannot listen on {listen}: {describe(exc)}") from None
        raise TetherError(f"cannot listen on {listen}: {describe(exc)}") from None
    return sock


class Listener:
    """Accepts on every bound socket and hands each connection to ``on_connection``.

    ``pause()`` and ``resume()`` stop and restart accepting; connections that arrive meanwhile
    wait in the kernel's backlog.
    """

    def __init__(
        self,
        socks: list[socket.socket],
        on_connection: Callable[[socket.socket], None],
        warnings: LimitedLog,
    ) -> None:
        self.socks = socks
        self._on_connection = on_connection
        self._warnings = warnings
        self._loop: asyncio.AbstractEventLoop | None = None
        self._accepting = False
        self._paused_by: set[str] = set()
        self._watching = False  # the event loop watches the sockets
        self._retry: asyncio.TimerHandle | None = None

    @property
    def address(self) -> Endpoint | None:
        """The first bound address (the real port when 0 was asked for)."""
        if not self.socks or self.socks[0].fileno() < 0:
            return None
        host, port = self.socks[0].getsockname()[:2]
        return Endpoint(host, port)

    @property
    def addresses(self) -> list[str]:
        return [sock.getsockname()[0] for sock in self.socks if sock.fileno() >= 0]

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._accepting = True
        self._update()

    def pause(self, reason: str) -> None:
        self._paused_by.add(reason)
        self._update()

    def resume(self, reason: str) -> None:
        self._paused_by.discard(reason)
        self._update()

    def close(self) -> None:
        self._accepting = False
        self._update()
        if self._retry is not None:
            self._retry.cancel()
        for sock in self.socks:
            sock.close()

    def _update(self) -> None:
        """Watch the sockets if accepting and not paused, else not. Only a change touches the
        event loop: every connection that comes or goes resumes a listener that was not
        paused, and each watch set anew would cost a system call per socket."""
        if self._loop is None:
            return
        watching = self._accepting and not self._paused_by
        if watching == self._watching:
            return
        self._watching = watching
        for sock in self.socks:
            if sock.fileno() < 0:
                continue
            if watching:
                self._loop.add_reader(sock.fileno(), self._accept, sock)
            else:
                self._loop.remove_reader(sock.fileno())

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            if self._paused_by or not self._accepting:
                return
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _EXHAUSTED:
                    self._exhausted(exc)
                    return
                # The client gave up between SYN and accept (ECONNABORTED and kin): nothing lost.
                continue
            conn.setblocking(False)
            self._on_connection(conn)

    def _exhausted(self, exc: OSError) -> None:
        self._warnings.warning(
            "accept",
            "cannot accept connections: %s; pausing for %gs (open connections are unaffected)",
            describe(exc),
            EXHAUSTED_PAUSE,
        )
        self.pause("exhausted")
        assert self._loop is not None
        self._retry = self._loop.call_later(EXHAUSTED_PAUSE, self.resume, "exhausted")
