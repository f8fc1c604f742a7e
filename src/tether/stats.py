"""A tunnel's counts, live (``Counters``, which every connection updates) and as a snapshot
(``TunnelStats``, what ``Tunnel.stats()`` returns), named as the JSON record and the control
socket name them: one word for one count, from the engine to the wire."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tether.states import State

if TYPE_CHECKING:  # `tether list` reads counts through protocol.py, and loads no spec
    from tether.spec import Endpoint


@dataclass
class Counters:
    """Live totals of one tunnel, updated by each of its connections on either data path."""

    connections_active: int = 0
    connections_total: int = 0
    bytes_in: int = 0  # from the target
    bytes_out: int = 0  # to the target


@dataclass(frozen=True)
class TunnelStats:
    """A snapshot of a tunnel's state and counters."""

    state: State
    local: Endpoint | None
    target: Endpoint | None  # None for a SOCKS tunnel
    via: str
    engine: str | None
    connections_active: int
    connections_total: int
    bytes_in: int  # from the target
    bytes_out: int  # to the target
    uptime: float
    last_error: str | None
    reconnect_attempt: int
    reconnects: int
    ttl_left: float | None
    idle_left: float | None
    ssh_master: str | None = None  # the shared SSH master's id, if the tunnel shares one
