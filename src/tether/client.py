"""The control client: seeing and stopping tunnels from any process, as `list` and `stop` do.

Every tunnel is asked at once, through its control socket, under one deadline for all.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tether.control import peer_credentials
from tether.errors import ControlError, NoSuchTunnelError, UsageError, describe
from tether.procs import Pinned, wait_exited
from tether.protocol import JSONObject, Op, Status, loads, request_line
from tether.record import TunnelInfo
from tether.entry import Entry
from tether.registry import Registry

# One bound for asking every tunnel at once: an unresponsive one costs `list` this much, once.
STATUS_TIMEOUT = 0.5
STOP_TIMEOUT = 10.0  # what `tether stop` (and the shell's) gives its tunnels to exit, at most
REPLY_LIMIT = 1024 * 1024
# Modes whose process holds more than one tunnel, or is someone's program: never signalled.
HOSTS = {"shell": "tether shell", "api": "the Python program"}

Reply = JSONObject


def request(path: str | Path, op: Op, *, pid: int, timeout: float = 2.0) -> Reply:
    """Ask the tunnel at ``path`` for ``op``; the server must be process ``pid`` of this user."""
    (reply,) = request_many([(path, pid)], op, timeout=timeout)
    if isinstance(reply, ControlError):
        raise reply
    return reply


def request_many(
    servers: Sequence[tuple[str | Path, int]], op: Op, *, timeout: float
) -> list[Reply | ControlError]:
    """Ask every ``(path, pid)`` for ``op`` at once; one answer or error each, all within one
    ``timeout`` in total, so an unresponsive tunnel delays nobody more than that."""
    import selectors  # here: cheap, and only commands that talk to tunnels need it

    deadline = time.monotonic() + timeout
    results: list[Reply | ControlError | None] = [None] * len(servers)
    pending: dict[socket.socket, tuple[int, bytearray]] = {}
    selector = selectors.DefaultSelector()
    # CLOCK_MONOTONIC is one clock for every process of the machine.
    message = request_line(op, deadline)
    try:
        for index, (path, pid) in enumerate(servers):
            try:
                sock = _connect(path, pid)
            except ControlError as exc:
                results[index] = exc
                continue
            try:
                sock.send(message)  # a few bytes into an empty socket buffer: never partial
            except OSError as exc:
                sock.close()
                results[index] = ControlError(f"control socket {path}: {describe(exc)}")
                continue
            pending[sock] = (index, bytearray())
            selector.register(sock, selectors.EVENT_READ)
        while pending and (left := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(left):
                ready = key.fileobj
                assert isinstance(ready, socket.socket)
                index, data = pending[ready]
                try:
                    chunk = ready.recv(65536)
                except OSError:
                    chunk = b""
                data += chunk
                if chunk and b"\n" not in data and len(data) <= REPLY_LIMIT:
                    continue
                results[index] = _parse(servers[index][0], bytes(data))
                selector.unregister(ready)
                ready.close()
                del pending[ready]
    finally:
        for sock, (index, _) in pending.items():
            results[index] = ControlError(
                f"control socket {servers[index][0]}: no answer within {timeout:g}s"
            )
            sock.close()
        selector.close()
    return [r if r is not None else ControlError("no answer") for r in results]


def _connect(path: str | Path, pid: int) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.connect(str(path))  # a UNIX socket connects at once, or fails (EAGAIN: busy)
        peer_pid, peer_uid, _ = peer_credentials(sock)
    except OSError as exc:
        sock.close()
        raise ControlError(f"control socket {path}: {describe(exc)}") from None
    if peer_pid != pid or peer_uid != os.getuid():
        sock.close()
        raise ControlError(f"control socket {path} is served by pid {peer_pid}, not {pid}")
    return sock


def _parse(path: str | Path, data: bytes) -> Reply | ControlError:
    try:
        reply = loads(data.split(b"\n", 1)[0])
    except ValueError:  # not JSON, or nested deep enough to exhaust the decoder
        return ControlError(f"control socket {path}: unreadable reply")
    if not isinstance(reply, dict) or not reply.get("ok"):
        return ControlError(f"control socket {path}: {reply}")
    return reply


def list_tunnels(registry: Registry, *, timeout: float = STATUS_TIMEOUT) -> list[TunnelInfo]:
    """Every live tunnel of this user, with its live status where the process answers."""
    entries = registry.entries()
    replies = request_many([(e.control, e.pid) for e in entries], "status", timeout=timeout)
    return [
        TunnelInfo(
            entry,
            Status.unresponsive(reply.message)
            if isinstance(reply, ControlError)
            else Status.from_json(reply),
        )
        for entry, reply in zip(entries, replies, strict=True)
    ]


def select_entries(
    registry: Registry, selectors: list[str], *, every: bool, missing_ok: bool = False
) -> list[Entry]:
    """The entries named by ids, names or ports; all of them with ``every`` and no selector.
    A selector that names nothing is an error, unless ``missing_ok``."""
    if not selectors:
        if not every:
            raise UsageError(
                "name a tunnel to stop (ID, NAME or PORT)", hint="or pass all", options=("all",)
            )
        return registry.entries()
    chosen: dict[str, Entry] = {}
    for selector, matches in registry.find(selectors).items():
        if not matches and missing_ok:
            continue
        if not matches:
            raise NoSuchTunnelError(
                f"no running tunnel matches {selector!r}", hint="see tether list"
            )
        if len(matches) > 1 and not every:
            listed = ", ".join(
                f"{e.id} ({e.name}, pid {e.pid}, port {e.local_port})" for e in matches
            )
            raise UsageError(
                f"{selector!r} matches {len(matches)} tunnels: {listed}",
                hint="name one by ID, or pass all to stop them all",
                options=("all",),
            )
        chosen.update({e.id: e for e in matches})
    return list(chosen.values())


@dataclass
class StopResult:
    """What `stop` did: the tunnels that stopped, and why each of the others did not."""

    stopped: list[Entry] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def stop_tunnels(registry: Registry, entries: list[Entry], *, timeout: float) -> StopResult:
    """Stop each tunnel gracefully and wait until its process has exited, all within
    ``timeout`` seconds in total.

    Every tunnel is asked at once through its control channel, within half of ``timeout``, so
    that the fallback has time to work; the kernel vouches for who answers there (its peer's
    pid and uid must be the entry's). SIGTERM is only a fallback, only for a process proven
    to be that tunnel (it holds the entry's own lock, started when recorded, and is ours: the
    proof reads /proc/locks, whose first read costs a process milliseconds), and
    never for a tunnel inside `tether shell` or a Python program, whose process is more than
    the tunnel. A signal cannot be taken back: a tunnel that got one and has not exited by the
    deadline (a frozen one) stops when it runs again, and its failure says so.
    A tunnel that cannot be stopped does not keep the others from stopping.
    """
    deadline = time.monotonic() + timeout
    result = StopResult()
    candidates: list[tuple[Entry, Pinned]] = []
    for entry in entries:
        if not registry.is_alive(entry):
            registry.discard(entry.id)  # it ended meanwhile: the goal is met
            continue
        # Pinned: PID reuse cannot redirect a wait or a signal to another process from now on.
        pinned = entry.process.pin()
        if pinned is not None:
            candidates.append((entry, pinned))
        elif not registry.is_alive(entry):
            registry.discard(entry.id)  # it ended just now
        else:
            result.failures.append(
                f"refusing to stop {entry.id}: pid {entry.pid} is not verified as that tunnel"
            )
    replies = request_many(
        [(e.control, e.pid) for e, _ in candidates],
        "stop",
        timeout=max(deadline - time.monotonic(), 0) / 2,
    )
    waiting: dict[Pinned, Entry] = {}
    signalled: set[Pinned] = set()
    try:
        for (entry, pinned), reply in zip(candidates, replies, strict=True):
            if isinstance(reply, ControlError) and entry.mode in HOSTS:
                pinned.close()
                result.failures.append(
                    f"{entry.id} ({entry.name}) lives in {HOSTS[entry.mode]} pid {entry.pid}, "
                    "which does not answer; stop it there"
                )
            elif isinstance(reply, ControlError) and not registry.is_verified(entry):
                pinned.close()
                result.failures.append(
                    f"refusing to stop {entry.id}: pid {entry.pid} is not verified as that tunnel"
                )
            elif isinstance(reply, ControlError):
                pinned.signal()
                signalled.add(pinned)
                waiting[pinned] = entry
            elif reply.get("stopped"):
                pinned.close()
                result.stopped.append(entry)
            else:
                waiting[pinned] = entry
        exited = wait_exited(list(waiting), deadline - time.monotonic())
        for pinned, entry in waiting.items():
            if pinned in exited:
                registry.discard(entry.id)
                result.stopped.append(entry)
            elif pinned in signalled:
                frozen = " (it is frozen)" if entry.process.is_stopped() else ""
                result.failures.append(
                    f"tunnel {entry.id} (pid {entry.pid}) did not answer and did not exit within "
                    f"{timeout:g}s{frozen}; it was sent SIGTERM and stops when it runs again"
                )
            else:
                result.failures.append(
                    f"tunnel {entry.id} (pid {entry.pid}) did not exit within {timeout:g}s"
                )
    finally:
        for pinned in waiting:
            pinned.close()
    return result
