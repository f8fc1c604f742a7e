"""Socket activation: the listening sockets a service manager passes as fds 3.. ($LISTEN_FDS)."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import MutableMapping

from tether.errors import UsageError, clip, describe

LISTEN_VARIABLES = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")
FIRST_FD = 3  # SD_LISTEN_FDS_START
FAMILIES = {socket.AF_INET: "IPv4", socket.AF_INET6: "IPv6"}
HINT = "tether needs listening TCP sockets: ListenStream=HOST:PORT with Accept=no"


def passed_to_us(environ: MutableMapping[str, str], pid: int) -> bool:
    """Whether $LISTEN_FDS is meant for this process: $LISTEN_PID names it. Variables that name
    another process were inherited from a parent that did not take them, and mean nothing."""
    return "LISTEN_FDS" in environ and environ.get("LISTEN_PID", "").strip() == str(pid)


def refuse_passed_sockets(environ: MutableMapping[str, str], pid: int) -> None:
    """Sockets passed to a mode that would not serve them (background, run) are refused."""
    if passed_to_us(environ, pid) and environ["LISTEN_FDS"].strip() not in ("", "0"):
        raise UsageError(
            "socket activation (LISTEN_FDS) works in foreground mode only",
            hint="use: tether start PROFILE --foreground",
        )


def listen_sockets(
    environ: MutableMapping[str, str] | None = None, pid: int | None = None
) -> list[socket.socket] | None:
    """The listening sockets passed to this process, or None when none were.

    Each must be a listening TCP socket (IPv4 or IPv6), and all on one port, as tether serves
    one; anything else is a UsageError naming the descriptor. The variables leave ``environ``
    once read, so that no child inherits them, and the sockets become non-blocking and
    close-on-exec.
    """
    environ = os.environ if environ is None else environ
    pid = os.getpid() if pid is None else pid
    if not passed_to_us(environ, pid):
        return None
    values = {name: environ.pop(name, "") for name in LISTEN_VARIABLES}
    count_text = values["LISTEN_FDS"].strip()
    if not count_text.isascii() or not count_text.isdigit():
        raise UsageError(f"socket activation: LISTEN_FDS is not a number: {clip(count_text)!r}")
    count = int(count_text)
    if count == 0:
        return None
    names = values["LISTEN_FDNAMES"].split(":") if values["LISTEN_FDNAMES"] else []
    socks: list[socket.socket] = []
    try:
        for index in range(count):
            name = names[index] if index < len(names) else ""
            socks.append(take_socket(FIRST_FD + index, name))
        ports = sorted({sock.getsockname()[1] for sock in socks})
        if len(ports) > 1:
            raise UsageError(
                "socket activation: the sockets listen on different ports "
                f"({', '.join(map(str, ports))}); a tunnel serves one port",
                hint="give each port a tunnel of its own",
            )
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def take_socket(fd: int, name: str = "") -> socket.socket:
    """The listening TCP socket at ``fd`` (``name`` from $LISTEN_FDNAMES), made non-blocking
    and close-on-exec; anything else is a UsageError."""
    what = f"socket activation: fd {fd}" + (f" ({clip(name)})" if name else "")
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        raise UsageError(f"{what} cannot be used: {describe(exc)}", hint=HINT) from None
    if not stat.S_ISSOCK(mode):
        raise UsageError(f"{what} is not a socket", hint=HINT)
    sock = socket.socket(fileno=fd)
    try:
        if sock.family not in FAMILIES:
            family = getattr(sock.family, "name", str(sock.family))
            raise UsageError(f"{what} is an {family} socket, not TCP", hint=HINT)
        if sock.type != socket.SOCK_STREAM:
            kind = "datagram" if sock.type == socket.SOCK_DGRAM else "non-stream"
            raise UsageError(f"{what} is a {kind} socket, not TCP", hint=HINT)
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise UsageError(f"{what} is a TCP socket that is not listening", hint=HINT)
        # The manager passes them inheritable; ssh and a ProxyCommand must not hold the port.
        sock.set_inheritable(False)
        sock.setblocking(False)
    except BaseException:
        sock.close()  # our copy only: the manager keeps its own
        raise
    return sock
