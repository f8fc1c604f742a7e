"""`tether list`: every tunnel of this user, from any process, with live state."""

from __future__ import annotations

import json

import click

from tether.cli.render import echo, human_bytes, human_duration, table
from tether.manage import TunnelInfo, list_tunnels
from tether.registry import Registry
from tether.spec import Endpoint

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


def state(info: TunnelInfo) -> str:
    if info.state == "reconnecting" and info.reconnect_attempt:
        return f"reconnecting ({info.reconnect_attempt})"
    return info.state


def expires(info: TunnelInfo) -> str:
    """The nearer lifetime bound: 'ttl 4m59s' or 'idle 30s'."""
    bounds = [
        (left, label)
        for left, label in ((info.ttl_left, "ttl"), (info.idle_left, "idle"))
        if left is not None
    ]
    if not bounds:
        return "-"
    left, label = min(bounds)
    return f"{label} {human_duration(left)}"


def row(info: TunnelInfo) -> list[str]:
    e = info.entry
    conns = (
        f"{info.connections_active}/{info.connections_total}"
        if info.connections_total is not None
        else "-"
    )
    return [
        e.id,
        e.name,
        e.mode,
        str(e.pid),
        str(Endpoint(e.local_host, e.local_port)),
        str(Endpoint(e.target_host, e.target_port)),
        e.via or "direct",
        state(info),
        human_duration(info.uptime),
        conns,
        human_bytes(info.bytes_in),
        human_bytes(info.bytes_out),
        expires(info),
    ]


def render_list(infos: list[TunnelInfo], *, as_json: bool) -> str:
    if as_json:
        return json.dumps([info.as_json() for info in infos], indent=2)
    if not infos:
        return "No tunnels running"
    return table(HEADERS, [row(info) for info in infos])


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array (schema in README).")
def list_command(as_json: bool) -> None:
    """Show every running tunnel of this user (alias: ls)."""
    echo(render_list(list_tunnels(Registry.default()), as_json=as_json))
