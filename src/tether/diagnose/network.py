"""The steps both engines share, in Python: name resolution, TCP connect, the SSH banner, and a
direct tunnel's connections to its target."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tether.diagnose.report import Step
from tether.errors import TargetUnreachableError, TetherError, TransportUnreachableError, describe
from tether.values import host_port

# RFC 4253 4.2: the identification line is at most 255 bytes; a server may send other lines
# before it. More than this many bytes without one is not an SSH server.
BANNER_LINE = 255
BANNER_LIMIT = 8192
# How long the probe waits for a target that speaks first (SMTP, MySQL, SSH, ...) before it
# closes: clients of most protocols speak first, and then nothing comes.
LISTEN_WINDOW = 0.25

Sockaddr = tuple[int, tuple[str, int] | tuple[str, int, int, int]]


@dataclass(frozen=True)
class Peer:
    """What the TCP steps connect to, and how their failures read: the SSH server (exit 4)
    or, for a direct tunnel, the target (exit 6, as `tether start` says it)."""

    host: str
    port: int
    label: str  # as the user named it: "ssh://u@h:22", or "db:5432" for a direct target
    direct: bool = False

    def error(self, message: str, hint: str) -> TetherError:
        cls = TargetUnreachableError if self.direct else TransportUnreachableError
        return cls(message, hint=hint)

    def unresolved(self, reason: str) -> TetherError:
        what = self.host if self.direct else f"SSH server {self.host}"
        return self.error(
            f"cannot resolve {what}: {reason}",
            f"check the name (and ssh_config's HostName) with: getent hosts {self.host}",
        )

    def unreachable(self, reason: str) -> TetherError:
        what = "cannot connect to" if self.direct else "cannot reach SSH server"
        where = host_port(self.host, self.port)
        server = "the target" if self.direct else "sshd"
        return self.error(
            f"{what} {self.label}: {reason}",
            f"check that {server} listens on {where} and that no firewall is in the way",
        )


async def resolve(peer: Peer, step: Step) -> list[Sockaddr]:
    """getaddrinfo, as the connect will do it: every address, in the order they are tried."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(peer.host, peer.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise peer.unresolved(describe(exc)) from None
    addresses: list[Sockaddr] = []
    for family, _, _, _, sockaddr in infos:
        if (family, sockaddr) not in addresses:
            addresses.append((family, sockaddr))
    shown = [str(sockaddr[0]) for _, sockaddr in addresses]
    step.facts.update(host=peer.host, addresses=shown)
    step.detail = f"{peer.host} -> {', '.join(shown)}"
    return addresses


async def connect(
    peer: Peer, addresses: list[Sockaddr], step: Step, timeout: float | None
) -> socket.socket:
    """Try each address in turn, as ssh does; the connected socket of the first that answers.
    ``timeout`` (connect_timeout) bounds each attempt."""
    loop = asyncio.get_running_loop()
    tried: list[str] = []
    reason = "no address"
    for family, sockaddr in addresses:
        where = host_port(str(sockaddr[0]), peer.port)
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        started = time.monotonic()
        try:
            await asyncio.wait_for(loop.sock_connect(sock, sockaddr), timeout)
        except (OSError, TimeoutError) as exc:
            sock.close()
            reason = describe(exc)
            tried.append(f"{where}: {reason}")
            continue
        except BaseException:
            sock.close()
            raise
        ms = (time.monotonic() - started) * 1000
        step.facts.update(address=where, failed=tried)
        step.detail = f"connected to {where} in {ms:.1f} ms" + (
            f" (after {'; '.join(tried)})" if tried else ""
        )
        return sock
    step.facts.update(failed=tried)
    if len(tried) > 1:
        step.detail = "; ".join(tried)
    raise peer.unreachable(reason)


async def banner(peer: Peer, sock: socket.socket, step: Step, timeout: float | None) -> None:
    """Read the server's identification line ("SSH-2.0-OpenSSH_9.2p1 ..."), the first thing an
    SSH server sends; then close, having sent nothing."""
    loop = asyncio.get_running_loop()
    received = b""
    try:
        async with asyncio.timeout(timeout):
            while True:
                lines = received.split(b"\n")
                found = [line for line in lines[:-1] if line.startswith(b"SSH-")]
                if found:
                    line = found[0][:BANNER_LINE].rstrip(b"\r")
                    break
                if len(received) > BANNER_LIMIT:
                    raise peer.error(
                        f"{peer.label} is not an SSH server: {len(received)} bytes without an "
                        "SSH identification line",
                        f"check that port {peer.port} is sshd's (ssh_config's Port)",
                    )
                chunk = await loop.sock_recv(sock, 4096)
                if not chunk:
                    raise peer.error(
                        f"SSH server {peer.label} closed the connection before its banner "
                        f"({len(received)} bytes received)",
                        "look at the server's sshd log (MaxStartups, tcp wrappers, fail2ban)",
                    )
                received += chunk
    except TimeoutError:
        raise silent(peer) from None
    except OSError as exc:
        raise peer.unreachable(describe(exc)) from None
    finally:
        sock.close()
    text = line.decode("ascii", errors="replace")
    text = "".join(c if c.isprintable() else "?" for c in text)
    version, _, software = text.partition("-")[2].partition("-")
    step.facts.update(banner=text, protocol=version, software=software)
    step.detail = text
    if version not in ("2.0", "1.99"):
        raise peer.error(
            f"SSH server {peer.label} speaks SSH protocol {version} only",
            "the server needs SSH protocol 2",
        )


def silent(peer: Peer) -> TetherError:
    """A server that accepted TCP and never sent its banner within connect_timeout."""
    return peer.error(
        f"cannot reach SSH server {peer.label}: timed out (connected, but no SSH banner came)",
        f"check that port {peer.port} is sshd's and that sshd is not overloaded "
        "(MaxStartups); raise connect_timeout for a slow link",
    )


async def direct_probe(
    peer: Peer, addresses: list[Sockaddr], step: Step, timeout: float | None
) -> None:
    """A direct tunnel's probe: a new connection to the target, closed again."""
    sock = await connect(peer, addresses, step, timeout)
    loop = asyncio.get_running_loop()
    await first_bytes(step, lambda: loop.sock_recv(sock, 65536), sock.close)


async def first_bytes(
    step: Step, receive: Callable[[], Awaitable[bytes]], close: Callable[[], None]
) -> None:
    """Wait a moment for a target that speaks first, then close: its first bytes are counted,
    never shown (they may be anything). The step's time includes that wait."""
    count: int | None = None
    try:
        with contextlib.suppress(TimeoutError, OSError):
            data = await asyncio.wait_for(receive(), LISTEN_WINDOW)
            count = len(data)
    finally:
        close()
    step.facts["first_bytes"] = count
    if count is None:
        said = f"the target sent nothing within {LISTEN_WINDOW * 1000:.0f} ms"
    elif count == 0:
        said = "the target closed the connection at once"
    else:
        said = f"the target spoke first: {count} bytes"
    step.detail = f"{step.detail}, then closed; {said}" if step.detail else f"closed; {said}"
