"""Binding the local listening socket, with OS errors turned into tether's own."""

from __future__ import annotations

import errno
import socket

from tether.errors import PortInUseError, TetherError, UsageError
from tether.spec import Endpoint

LISTEN_BACKLOG = 512


def bind_listener(listen: Endpoint) -> socket.socket:
    """A bound, listening, non-blocking socket for ``listen`` (port 0: the OS picks one).

    Synchronous on purpose: a caller can bind while holding a port reservation lock without
    letting other coroutines of its process run in between.
    """
    try:
        # One address only: "localhost" may resolve to ::1 and 127.0.0.1, and with port 0
        # each would get a different port.
        family, kind, proto, _, address = socket.getaddrinfo(
            listen.host, listen.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except socket.gaierror as exc:
        raise UsageError(f"cannot listen on {listen}: {exc.strerror}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(
                f"local address {listen} is in use by another program",
                hint="pick another --port, or 0 for any free port",
            ) from None
        if exc.errno in (errno.EADDRNOTAVAIL, errno.EACCES):
            raise UsageError(f"cannot listen on {listen}: {exc.strerror}") from None
        raise TetherError(f"cannot listen on {listen}: {exc.strerror or exc}") from None
    return sock
