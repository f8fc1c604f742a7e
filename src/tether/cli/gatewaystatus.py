"""How `tether gateway status` prints a gateway's status (gateway/gatewaystatus.py): three
plain tables, relays, sites and live sessions, or one JSON document."""

from __future__ import annotations

import json
from datetime import datetime

from tether.cli.render import human_bytes, human_duration, table
from tether.gateway.gatewaystatus import DOWN, UP, GatewayStatus, RelayState, Session

RELAY_HEADERS = ("RELAY", "STATE", "LAST HEARD", "LISTEN", "SITES", "SESSIONS")
SITE_HEADERS = ("SITE", "PORT", "LINKED TO")
SESSION_HEADERS = (
    "RELAY",
    "USER",
    "TARGET",
    "PEER",
    "FOR",
    "FROM CLIENT",
    "TO CLIENT",
    "GRANT",
    "CERTIFICATE",
)


def render_status(status: GatewayStatus, *, as_json: bool) -> str:
    if as_json:
        return json.dumps(status.to_json(), indent=2)
    now = status.time
    relays = [_relay_row(r, now) for r in status.relays]
    sites = [[s.name, str(s.port), ", ".join(s.relays) or "-"] for s in status.sites]
    sessions = [_session_row(s, now) for s in status.sessions]
    return "\n\n".join(
        [
            table(RELAY_HEADERS, relays) if relays else "No relays in the policy",
            table(SITE_HEADERS, sites) if sites else "No sites in the policy",
            table(SESSION_HEADERS, sessions) if sessions else "No live sessions",
        ]
    )


def _at(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S}Z"


def _relay_row(relay: RelayState, now: datetime) -> list[str]:
    state = relay.state.replace("_", " ")
    heard = "-"
    if relay.last_heard is not None:
        heard = f"{human_duration(max(0.0, (now - relay.last_heard).total_seconds()))} ago"
        if relay.state == DOWN:
            state = f"down since {_at(relay.last_heard)}"
    up = relay.state == UP
    sessions = str(relay.sessions) if up else "-"
    if up and relay.omitted:
        sessions += f" ({relay.omitted} omitted)"
    sites = ", ".join(relay.sites) if up and relay.sites else "-"
    return [relay.name, state, heard, relay.listen or "-", sites, sessions]


def _session_row(session: Session, now: datetime) -> list[str]:
    if not session.granted:
        grant = "none: being cut"
    elif session.grant_until is None:
        grant = "until revoked"
    else:
        grant = f"{_left(session.grant_until, now)} (to {_at(session.grant_until)})"
    return [
        session.relay,
        session.user,
        f"{session.site}/{session.target}",
        session.peer,
        human_duration(session.seconds),
        human_bytes(session.bytes_from_client),
        human_bytes(session.bytes_to_client),
        grant,
        _left(session.certificate_until, now),
    ]


def _left(end: datetime, now: datetime) -> str:
    """What is left until ``end``: "4m10s left", or "ended" (a certificate's end does not end
    a session whose grant is live: it bounds when one may start)."""
    seconds = (end - now).total_seconds()
    return f"{human_duration(seconds)} left" if seconds > 0 else "ended"
