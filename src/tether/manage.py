"""Seeing and stopping tunnels from any process: the library calls behind `list` and `stop`."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Any

from tether import procs
from tether.control import ControlError, request
from tether.errors import NoSuchTunnelError, StopFailedError, UsageError
from tether.registry import Entry, Registry

STATUS_TIMEOUT = 1.0


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
        record = asdict(self.entry)
        record.pop("proc_start")
        record.update({k: v for k, v in asdict(self).items() if k != "entry"})
        return record


def list_tunnels(registry: Registry) -> list[TunnelInfo]:
    """Every live tunnel of this user, with its live status where the process answers."""
    infos = []
    for entry in registry.entries():
        try:
            status = request(entry.control, "status", pid=entry.pid, timeout=STATUS_TIMEOUT)
        except ControlError as exc:
            status = {"state": "unresponsive", "last_error": exc.message}
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


def stop_tunnels(registry: Registry, entries: list[Entry], *, timeout: float) -> list[Entry]:
    """Stop each tunnel gracefully and wait until its process has exited.

    The control channel is asked first; SIGTERM is only a fallback, and only for a process proven
    to be that tunnel (it holds the entry's lock, started when recorded, and is ours). A tunnel
    in a shell closes while its process goes on; any other process is waited for until it exits.
    Every tunnel is asked before any is waited for, so they close in parallel.
    """
    live = []
    for entry in entries:
        if not registry.is_alive(entry):
            registry.discard(entry.id)  # it ended meanwhile: the goal is met
        elif not registry.is_verified(entry):
            raise StopFailedError(
                f"refusing to stop {entry.id}: pid {entry.pid} is not verified as that tunnel"
            )
        else:
            live.append(entry)
    stopped: list[Entry] = []
    waiting: dict[int, Entry] = {}
    try:
        for entry in live:
            # The pidfd pins the verified process: PID reuse cannot redirect a signal now.
            pidfd = procs.open_pidfd(entry.pid, entry.proc_start)
            if pidfd is None:
                registry.discard(entry.id)  # it ended meanwhile: the goal is met
                continue
            try:
                reply = request(entry.control, "stop", pid=entry.pid, timeout=timeout)
            except ControlError:
                reply = {}
                procs.signal_pidfd(pidfd)
            stopped.append(entry)
            if reply.get("stopped"):
                os.close(pidfd)
            else:
                waiting[pidfd] = entry
        deadline = time.monotonic() + timeout
        for pidfd, entry in waiting.items():
            if not procs.wait_pidfd(pidfd, deadline - time.monotonic()):
                raise StopFailedError(
                    f"tunnel {entry.id} (pid {entry.pid}) did not exit within {timeout:g}s"
                )
            registry.discard(entry.id)
    finally:
        for pidfd in waiting:
            os.close(pidfd)
    return stopped
