"""What `tether gateway status DIR` shows: every relay of the policy (up, down since when, never
seen), each site and the relays its agent is linked to now, and each relay's live client
sessions with what is left of their grant and certificate.

It is read from the status files the signers' feeds keep (feed.py, DIR/status/RELAY.json), what
each relay last said of itself. A relay is a semi-trusted peer: every value it sent is checked
for its type and bounded here, and one that is not what a relay sends is left out (counted as
``omitted``), so that a relay taken over can make the status wrong about itself, never crash it
or write to the operator's terminal.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tether.errors import TetherError
from tether.files import read_regular
from tether.gateway import policy
from tether.gateway.feed import MAX_LINE
from tether.gateway.layout import Gateway
from tether.gateway.relay import HEARTBEAT, MAX_TOLD
from tether.gateway.signer import parse_client_key_id

# A relay not heard from for this long is down: three heartbeats, so one late or lost is not.
STALE = timedelta(seconds=3 * HEARTBEAT)
MAX_SESSIONS = MAX_TOLD  # shown per relay; a relay that lists more has the rest omitted
MAX_KEY_ID = 128  # a client key id is three names of 32, two '@', a '/' and a stamp
MAX_ADDRESS = 300  # a listen address or a peer: a host name of 255 and a port
MAX_COUNT = 2**63 - 1  # bytes, seconds and serials, as the kernel and ssh-keygen keep them

UP, DOWN, NEVER_SEEN, UNREADABLE = "up", "down", "never_seen", "unreadable"


@dataclass(frozen=True)
class Session:
    """A client's live session on a relay."""

    relay: str
    user: str
    site: str
    target: str
    serial: int
    peer: str
    seconds: int
    bytes_from_client: int
    bytes_to_client: int
    granted: bool  # whether the policy grants it now (if not, the relay is cutting it)
    grant_until: datetime | None  # None: until revoked (or no grant)
    certificate_until: datetime


@dataclass(frozen=True)
class RelayState:
    name: str
    state: str  # UP, DOWN, NEVER_SEEN or UNREADABLE
    last_heard: datetime | None  # for a relay down: since when
    listen: str | None = None
    sites: tuple[str, ...] = ()  # the sites whose agents are linked to it
    sessions: int = 0  # its live client sessions
    omitted: int = 0  # entries of its status left out: malformed, or beyond MAX_SESSIONS


@dataclass(frozen=True)
class SiteState:
    name: str
    port: int
    relays: tuple[str, ...]  # those its agent is linked to now (up ones only)


@dataclass(frozen=True)
class GatewayStatus:
    time: datetime
    relays: tuple[RelayState, ...]
    sites: tuple[SiteState, ...]
    sessions: tuple[Session, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        """The document of `tether gateway status --json` (its keys are in the README)."""
        return {
            "time": _stamp(self.time),
            "relays": [
                {
                    "name": r.name,
                    "state": r.state,
                    "last_heard": _stamp(r.last_heard),
                    "listen": r.listen,
                    "sites": list(r.sites),
                    "sessions": r.sessions,
                    "omitted": r.omitted,
                }
                for r in self.relays
            ],
            "sites": [
                {"name": s.name, "port": s.port, "relays": list(s.relays)} for s in self.sites
            ],
            "sessions": [
                {
                    "relay": s.relay,
                    "user": s.user,
                    "site": s.site,
                    "target": s.target,
                    "serial": s.serial,
                    "peer": s.peer,
                    "seconds": s.seconds,
                    "bytes_from_client": s.bytes_from_client,
                    "bytes_to_client": s.bytes_to_client,
                    "granted": s.granted,
                    "grant_until": _stamp(s.grant_until),
                    "certificate_until": _stamp(s.certificate_until),
                }
                for s in self.sessions
            ],
        }


def _stamp(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat(timespec="seconds")


def gather(gateway: Gateway, now: datetime | None = None) -> GatewayStatus:
    """The gateway's status now, from its policy and its relays' status files (ConfigError if
    the policy is invalid)."""
    now = now or datetime.now(UTC)
    current = policy.load(gateway.policy)
    relays: list[RelayState] = []
    sessions: list[Session] = []
    for name in sorted(current.relays):
        relay, live = _relay(gateway, name, current, now)
        relays.append(relay)
        sessions += live
    sites = tuple(
        SiteState(site.name, site.port, tuple(r.name for r in relays if site.name in r.sites))
        for site in sorted(current.sites.values(), key=lambda s: s.name)
    )
    return GatewayStatus(now, tuple(relays), sites, tuple(sessions))


def _relay(
    gateway: Gateway, name: str, current: policy.Policy, now: datetime
) -> tuple[RelayState, list[Session]]:
    """Relay ``name`` as its status file tells it, and its live client sessions."""
    try:
        path = gateway.status / f"{name}.json"
        raw = read_regular(path, limit=MAX_LINE + 4096, what="status", error=TetherError)
    except FileNotFoundError:
        return RelayState(name, NEVER_SEEN, None), []
    except TetherError:
        return RelayState(name, UNREADABLE, None), []
    try:
        record = json.loads(raw)
        heard = datetime.fromisoformat(record["time"])
    # Not JSON (UnicodeDecodeError is a ValueError), nested past the parser's depth, not an
    # object, or its time missing or not one.
    except (ValueError, TypeError, KeyError, RecursionError, OverflowError):
        return RelayState(name, UNREADABLE, None), []
    if heard.tzinfo is None:
        return RelayState(name, UNREADABLE, None), []
    try:
        heard = heard.astimezone(UTC)
    except OverflowError:
        return RelayState(name, UNREADABLE, None), []
    said = record.get("status")
    if record.get("left") is True or now - heard > STALE:
        return RelayState(name, DOWN, heard), []
    if not isinstance(said, dict):
        return RelayState(name, UNREADABLE, None), []
    listen = said.get("listen")
    listed = said.get("sessions")
    listed = listed if isinstance(listed, list) else []
    sites: set[str] = set()
    live: list[Session] = []
    # Beyond MAX_TOLD a relay lists no more, and says how many it left out.
    omitted = max(0, len(listed) - MAX_SESSIONS) + (_count(said.get("untold")) or 0)
    for entry in listed[:MAX_SESSIONS]:
        session = _session(name, entry, current, now)
        if isinstance(session, Session):
            live.append(session)
        elif isinstance(session, str):
            sites.add(session)
        else:
            omitted += 1
    live.sort(key=lambda s: (s.user, s.site, s.target, s.peer))
    state = RelayState(
        name,
        UP,
        heard,
        listen=listen if isinstance(listen, str) and len(listen) <= MAX_ADDRESS else None,
        sites=tuple(sorted(sites)),
        sessions=len(live),
        omitted=omitted,
    )
    return state, live


def _session(
    relay: str, entry: object, current: policy.Policy, now: datetime
) -> Session | str | None:
    """One session a relay listed: a client's Session, the site of an agent's link, or None if
    it is not what a relay sends."""
    if not isinstance(entry, dict):
        return None
    key_id = entry.get("key_id")
    if not isinstance(key_id, str) or len(key_id) > MAX_KEY_ID:
        return None
    if key_id.startswith("agent:"):
        site = key_id.removeprefix("agent:")
        return site if site in current.sites else None
    client = parse_client_key_id(key_id)
    serial, peer = _count(entry.get("serial")), entry.get("peer")
    seconds = _count(entry.get("seconds"))
    sent, received = _count(entry.get("bytes_to_client")), _count(entry.get("bytes_from_client"))
    if client is None or serial is None or seconds is None or sent is None or received is None:
        return None
    if not isinstance(peer, str) or len(peer) > MAX_ADDRESS:
        return None
    user, site, target, certificate_until = client
    # The policy holds one grant per user and target (a new one replaces it), but a hand
    # edit may hold two: the longest lasting one is what keeps the session.
    live = [
        g
        for g in current.grants
        if (g.user, g.site, g.target) == (user, site, target) and g.live(now)
    ]
    ends = [g.until for g in live]
    until = None if not ends or None in ends else max(e for e in ends if e is not None)
    return Session(
        relay,
        user,
        site,
        target,
        serial,
        peer,
        seconds,
        bytes_from_client=received,
        bytes_to_client=sent,
        granted=bool(live),
        grant_until=until,
        certificate_until=certificate_until,
    )


def _count(value: object) -> int | None:
    """A count a relay sent (bytes, seconds, a serial): a non-negative number, bounded."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return int(value) if 0 <= value <= MAX_COUNT else None
