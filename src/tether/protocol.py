"""What crosses a tunnel's control socket, typed once with its JSON forms: the status a tunnel
reports (part of its public record, see record.py) and the control requests themselves.

A control request is one JSON line, {"op": "status" | "stop", "until": DEADLINE}, where DEADLINE
is the client's deadline on the machine-wide monotonic clock (a finite number; left out, the
request has none); the reply is one JSON line with "ok" and the op's fields. Neither side nests
deeper than MAX_DEPTH, so a hostile line is a bad request, not a RecursionError.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from types import UnionType
from typing import Literal

from tether.states import STATES, State
from tether.stats import TunnelStats

#: A decoded JSON object.
JSONObject = dict[str, object]
Op = Literal["status", "stop"]
#: Deepest nesting of arrays and objects in a request or a reply (a status nests 1 deep).
MAX_DEPTH = 8


@dataclass(frozen=True)
class Status:
    """A tunnel's live state, as its control socket reports it. Fields are None when the
    process did not say (an unresponsive tunnel)."""

    state: State | Literal["unresponsive", "unknown"]
    uptime: float | None = None
    reconnect_attempt: int | None = None
    reconnects: int | None = None
    ttl_left: float | None = None
    idle_left: float | None = None
    connections_active: int | None = None
    connections_total: int | None = None
    bytes_in: int | None = None  # from the target
    bytes_out: int | None = None  # to the target
    last_error: str | None = None
    ssh_master: str | None = None  # the shared SSH master's id (a tunnel that shares one)

    @classmethod
    def of(cls, stats: TunnelStats, *, ready_once: bool) -> Status:
        """The status of a tunnel, from the engine's snapshot of it."""
        return cls(
            state=stats.state,
            uptime=round(stats.uptime, 3) if ready_once else None,
            reconnect_attempt=stats.reconnect_attempt,
            reconnects=stats.reconnects,
            ttl_left=_rounded(stats.ttl_left),
            idle_left=_rounded(stats.idle_left),
            connections_active=stats.connections_active,
            connections_total=stats.connections_total,
            bytes_in=stats.bytes_in,
            bytes_out=stats.bytes_out,
            last_error=stats.last_error,
            ssh_master=stats.ssh_master,
        )

    @classmethod
    def unresponsive(cls, reason: str) -> Status:
        return cls(state="unresponsive", last_error=reason)

    def to_json(self) -> JSONObject:
        return asdict(self)

    @classmethod
    def from_json(cls, data: JSONObject) -> Status:
        """The status in a reply; a field of the wrong type is taken as not said."""
        types: dict[str, type | UnionType] = {"state": str, "last_error": str, "ssh_master": str}
        values: JSONObject = {}
        for item in fields(cls):
            value = data.get(item.name)
            wanted = types.get(item.name, int | float)
            if isinstance(value, wanted) and not isinstance(value, bool):
                values[item.name] = value
        if values.get("state") not in (*STATES, "unresponsive"):
            values["state"] = "unknown"
        return cls(**values)  # type: ignore[arg-type]  # each value checked above


def request_line(op: Op, until: float) -> bytes:
    return json.dumps({"op": op, "until": until}).encode() + b"\n"


def parse_request(line: bytes) -> tuple[str, float | None]:
    """The op and the deadline of a request line; ValueError if it is not one, or if its
    deadline is not a finite number (NaN or a string would never expire)."""
    message = loads(line)
    if not isinstance(message, dict):
        raise ValueError("not an object")
    until = message.get("until")
    if until is None and "until" not in message:
        return str(message.get("op")), None
    if isinstance(until, bool) or not isinstance(until, int | float) or not math.isfinite(until):
        raise ValueError(f"bad deadline {until!r}")
    return str(message.get("op")), float(until)


def loads(data: bytes | str, *, max_depth: int = MAX_DEPTH) -> object:
    """JSON ``data`` decoded; ValueError if it is not JSON or nests deeper than ``max_depth``.
    The depth is checked first, so no input can exhaust the decoder's recursion."""
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > max_depth:
                raise ValueError(f"nested deeper than {max_depth}")
        elif char in "]}":
            depth -= 1
    return json.loads(text)


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)
