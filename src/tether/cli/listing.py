"""What `tether list` shows; free of click, so that its plain forms start fast."""

from __future__ import annotations

import json

from tether.cli.render import echo, human_bytes, human_duration, table
from tether.client import list_tunnels
from tether.record import TunnelInfo
from tether.protocol import Status
from tether.registry import Registry
from tether.states import DIRECT
from tether.values import host_port

HEADERS = (
    "ID",
    "NAME",
    "MODE",
    "PID",
    "LOCAL",
    "TARGET",
    "VIA",
    "STATE",
    "UPTIME",
    "CONNS",
    "IN",
    "OUT",
    "EXPIRES",
)


def state(status: Status) -> str:
    if status.state == "reconnecting" and status.reconnect_attempt:
        return f"reconnecting ({status.reconnect_attempt})"
    return status.state


def expires(status: Status) -> str:
    """The nearer lifetime bound: 'ttl 4m59s' or 'idle 30s'."""
    bounds = [
        (left, label)
        for left, label in ((status.ttl_left, "ttl"), (status.idle_left, "idle"))
        if left is not None
    ]
    if not bounds:
        return "-"
    left, label = min(bounds)
    return f"{label} {human_duration(left)}"


def via(info: TunnelInfo) -> str:
    """The VIA column: the server, and the id of the SSH master the tunnel shares, if it does
    (tunnels with the same id share one login)."""
    shared = info.status.ssh_master
    via = info.entry.via or DIRECT
    return f"{via} [master {shared}]" if shared else via


def row(info: TunnelInfo) -> list[str]:
    e, status = info.entry, info.status
    conns = (
        f"{status.connections_active}/{status.connections_total}"
        if status.connections_total is not None
        else "-"
    )
    return [
        e.id,
        e.name,
        e.mode,
        str(e.pid),
        host_port(e.local_host, e.local_port),
        info.target,
        via(info),
        state(status),
        human_duration(status.uptime),
        conns,
        human_bytes(status.bytes_in),
        human_bytes(status.bytes_out),
        expires(status),
    ]


def render_list(infos: list[TunnelInfo], *, as_json: bool) -> str:
    if as_json:
        return json.dumps([info.to_json() for info in infos], indent=2)
    if not infos:
        return "No tunnels running"
    return table(HEADERS, [row(info) for info in infos])


def show_tunnels(*, as_json: bool) -> None:
    echo(render_list(list_tunnels(Registry.default()), as_json=as_json))
