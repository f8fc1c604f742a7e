"""A relay's live sessions, as its sshd's log and the kernel tell them (sessions.py): each
login's audit lines (opened, closed with its bytes, cut), its bytes counted every few seconds,
and the reaper that ends a session whose access has ended, which OpenSSH itself never does.

A relay holds thousands of sessions, most of them idle, and looks at them each second: what it
does per session then is a dictionary look-up, nothing parsed again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias

from tether.errors import visible
from tether.gateway import policy
from tether.gateway.sessions import Login, accepted, ended, holder, traffic
from tether.gateway.signer import parse_client_key_id
from tether.spec import Endpoint

log = logging.getLogger("tether")

# A session younger than this may not be in the kernel's table yet when its bytes are counted.
SETTLE = 2.0
Granted: TypeAlias = set[tuple[str, str, str]]  # (user, site, target) of each live grant


@dataclass
class _Session:
    """A live session on the relay, as its log and the kernel tell it."""

    login: Login
    opened: float  # time.monotonic()
    # What its key id names, if a client's (user, site, target, end): read once, at login.
    client: tuple[str, str, str, datetime] | None
    received: int = 0  # bytes from the client, at the last count
    sent: int = 0  # bytes to it
    cut: str | None = None  # why the reaper ended it


class Sessions:
    """The sessions of the relay listening on ``listen``; ``record`` takes each audit line
    (an event and its fields)."""

    def __init__(self, listen: Endpoint, record: Callable[..., None]) -> None:
        self.listen = listen
        self._record_line = record
        self._live: dict[tuple[str, int], _Session] = {}  # by the client's address
        # Counts each change of what told() says but its ages: a session opened, closed or
        # cut, or bytes counted. The relay tells its signer again only when this has moved.
        self.changes = 0

    def __len__(self) -> int:
        return len(self._live)

    def bytes(self) -> tuple[int, int]:
        """Bytes from and to the clients of every live session, at the last count."""
        live = self._live.values()
        return sum(s.received for s in live), sum(s.sent for s in live)

    def linked(self, site: str) -> bool:
        """Whether ``site``'s agent has a live session here."""
        return any(s.login.key_id == f"agent:{site}" for s in self._live.values())

    def told(self, most: int) -> list[dict[str, object]]:
        """Each live session as the relay's status tells it, the first ``most`` of them."""
        now = time.monotonic()
        shown = list(self._live.values())[:most]
        return [
            {
                "key_id": s.login.key_id,
                "serial": s.login.serial,
                "peer": f"{s.login.host}:{s.login.port}",
                "seconds": round(now - s.opened),
                "bytes_from_client": s.received,
                "bytes_to_client": s.sent,
            }
            for s in shown
        ]

    def heard(self, line: str) -> None:
        """Follow the sessions in sshd's log: logins with a certificate, and their ends."""
        login = accepted(line)
        if login is not None:
            client = parse_client_key_id(login.key_id)
            self._live[(login.host, login.port)] = _Session(login, time.monotonic(), client)
            self.changes += 1
            self._record("opened", login, listen=str(self.listen))
            return
        gone = ended(line)
        if gone is not None:
            self.closed(gone)

    def closed(self, peer: tuple[str, int]) -> None:
        """The session of ``peer`` is over: its audit line (how long, how many bytes, why if it
        was cut), once."""
        session = self._live.pop(peer, None)
        if session is None:
            return
        self.changes += 1
        self._record(
            "closed",
            session.login,
            seconds=round(time.monotonic() - session.opened, 3),
            bytes_from_client=session.received,
            bytes_to_client=session.sent,
            **({"cut": session.cut} if session.cut else {}),
        )

    def close_all(self) -> None:
        for peer in list(self._live):
            self.closed(peer)

    async def count(self) -> None:
        """The bytes of each live session so far (the audit's close line says the last); a
        session the kernel no longer holds has closed, whether sshd said so or not (a session
        process ended by a signal says nothing)."""
        if not self._live:
            return
        counts = await traffic(self.listen.port)
        if counts is None:
            return
        now = time.monotonic()
        for peer, session in list(self._live.items()):
            counted = counts.get(peer)
            if counted is not None:
                if counted != (session.received, session.sent):
                    session.received, session.sent = counted
                    self.changes += 1
            elif now - session.opened > SETTLE:
                self.closed(peer)

    async def reap(self, root: int, current: policy.Policy, now: datetime) -> bool:
        """End the sessions (below ``root``, the relay's sshd) whose access has ended: OpenSSH
        lets a session outlive its certificate, and a grant or a site can be taken away before
        that. Whether any was cut."""
        granted = live_grants(current, now)
        cut = False
        for peer, session in list(self._live.items()):
            login = session.login
            reason = None if session.cut else _ended(login, session.client, current, granted)
            if reason is None:
                continue
            session.cut, cut = reason, True
            self.changes += 1
            pid = await asyncio.to_thread(holder, root, login.host, login.port)
            if pid is None:
                self.closed(peer)  # it ended by itself
                continue
            # The line on its way first: a relay that died right after the kill would
            # otherwise leave a cut session without its audit line.
            log.warning("relay: session of %s cut: %s", visible(login.key_id), reason)
            self._record("cut", login, reason=reason)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        return cut

    def _record(self, event: str, login: Login, **fields: object) -> None:
        """An audit line of a session: its certificate's key id and serial (which join it to
        the issuance), its peer, and ``fields``."""
        peer = f"{login.host}:{login.port}"
        self._record_line(event, key_id=login.key_id, serial=login.serial, peer=peer, **fields)


def access_ended(login: Login, current: policy.Policy, now: datetime) -> str | None:
    """Why the session of ``login`` may go on no longer, or None while it may."""
    client = parse_client_key_id(login.key_id)
    return _ended(login, client, current, live_grants(current, now))


def live_grants(current: policy.Policy, now: datetime) -> Granted:
    """What the policy grants at ``now``, once for every session of a reaping."""
    return {(g.user, g.site, g.target) for g in current.grants if g.live(now)}


def _ended(
    login: Login,
    client: tuple[str, str, str, datetime] | None,
    current: policy.Policy,
    granted: Granted,
) -> str | None:
    """access_ended, with the key id read (``client``) and the live grants found already."""
    if client is not None:
        # A certificate's end alone cuts nothing: it bounds when a login may start, and ends
        # no sooner than its grant, so a live grant's session goes on and a tunnel is not
        # cut every few minutes.
        user, site, target, _end = client
        return None if (user, site, target) in granted else "access revoked"
    if login.key_id.startswith("agent:"):
        enrolled = current.sites.get(login.key_id.removeprefix("agent:"))
        if enrolled is None or enrolled.serial != login.serial:
            return "its site was removed"
    return None
