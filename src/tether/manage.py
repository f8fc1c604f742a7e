"""Seeing and stopping tunnels from any process: the library calls behind `list` and `stop`."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from tether import procs
from tether.control import ControlError, request_many
from tether.errors import NoSuchTunnelError, UsageError
from tether.registry import Entry, Registry

# One bound for asking every tunnel at once: an unresponsive one costs `list` this much, once.
STATUS_TIMEOUT = 0.5


@dataclass(frozen=True)
class TunnelInfo:
    """A registry entry joined with the live status its process reports."""

    entry: Entry
    state: str
    uptime: float | None
    reconnect_attempt: int | None
    reconnects: int | None
    ttl_left: float | None
    idle_left: float | None
    connections_active: int | None
    connections_total: int | None
    bytes_in: int | None
    bytes_out: int | None
    last_error: str | None

    def as_json(self) -> dict[str, Any]:
        """The documented `tether list --json` object (see README)."""
        record = self.entry.public()
        record.update({k: v for k, v in asdict(self).items() if k != "entry"})
        return record


def list_tunnels(registry: Registry, *, timeout: float = STATUS_TIMEOUT) -> list[TunnelInfo]:
    """Every live tunnel of this user, with its live status where the process answers."""
    entries = registry.entries()
    replies = request_many([(e.control, e.pid) for e in entries], "status", timeout=timeout)
    infos = []
    for entry, reply in zip(entries, replies, strict=True):
        status: dict[str, Any] = (
            reply
            if not isinstance(reply, ControlError)
            else {"state": "unresponsive", "last_error": reply.message}
        )
        infos.append(
            TunnelInfo(
                entry=entry,
                state=str(status.get("state", "unknown")),
                uptime=status.get("uptime"),
                reconnect_attempt=status.get("reconnect_attempt"),
                reconnects=status.get("reconnects"),
                ttl_left=status.get("ttl_left"),
                idle_left=status.get("idle_left"),
                connections_active=status.get("connections_active"),
                connections_total=status.get("connections_total"),
                bytes_in=status.get("bytes_in"),
                bytes_out=status.get("bytes_out"),
                last_error=status.get("last_error"),
            )
        )
    return infos


def select_entries(registry: Registry, selectors: list[str], *, every: bool) -> list[Entry]:
    """The entries named by ids, names or ports; all of them with ``every`` and no selector."""
    if not selectors:
        if not every:
            raise UsageError("name a tunnel to stop (ID, NAME or PORT), or use --all")
        return registry.entries()
    chosen: dict[str, Entry] = {}
    for selector, matches in registry.find(selectors).items():
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
                hint="name one by ID, or add --all to stop them all",
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

    Every tunnel is asked at once through its control channel. SIGTERM is only a fallback, only
    for a process proven to be that tunnel (it holds the entry's own lock, started when recorded,
    and is ours), and never for a tunnel inside `tether shell`, whose process holds others too.
    A tunnel that cannot be stopped does not keep the others from stopping.
    """
    deadline = time.monotonic() + timeout
    result = StopResult()
    candidates: list[tuple[Entry, int]] = []
    for entry in entries:
        # The pidfd pins the verified process: PID reuse cannot redirect a signal now.
        verified = registry.is_verified(entry)
        pidfd = procs.open_pidfd(entry.pid, entry.proc_start) if verified else None
        if pidfd is not None:
            candidates.append((entry, pidfd))
        elif registry.is_alive(entry):
            result.failures.append(
                f"refusing to stop {entry.id}: pid {entry.pid} is not verified as that tunnel"
            )
        else:
            registry.discard(entry.id)  # it ended meanwhile: the goal is met
    replies = request_many(
        [(e.control, e.pid) for e, _ in candidates],
        "stop",
        timeout=max(deadline - time.monotonic(), 0),
    )
    waiting: dict[int, Entry] = {}
    try:
        for (entry, pidfd), reply in zip(candidates, replies, strict=True):
            if isinstance(reply, ControlError) and entry.mode == "shell":
                os.close(pidfd)
                result.failures.append(
                    f"{entry.id} ({entry.name}) lives in tether shell pid {entry.pid}, which "
                    "does not answer; stop it in that shell"
                )
            elif isinstance(reply, ControlError):
                procs.signal_pidfd(pidfd)
                waiting[pidfd] = entry
            elif reply.get("stopped"):
                os.close(pidfd)
                result.stopped.append(entry)
            else:
                waiting[pidfd] = entry
        exited = procs.wait_pidfds(list(waiting), deadline - time.monotonic())
        for pidfd, entry in waiting.items():
            if pidfd in exited:
                registry.discard(entry.id)
                result.stopped.append(entry)
            else:
                result.failures.append(
                    f"tunnel {entry.id} (pid {entry.pid}) did not exit within {timeout:g}s"
                )
    finally:
        for pidfd in waiting:
            os.close(pidfd)
    return result
