"""What a relay's login to a signer runs (`tether gateway feed DIR RELAY`, its certificate's
forced command): one long session that carries, as JSON lines,

- down to the relay: the policy, the revocation list and the CAs' trusted public keys, at once
  and at each change (so a revoke reaches every relay within a second or two, and so does a CA
  rollover's step), and the answers to its signing requests (each after the state, if that
  changed since: the relay does not judge the session of a certificate it asked for by a
  policy older than the certificate);
- up from the relay: signing requests, the audit lines of its sessions (written here, into the
  gateway's one audit log, with the relay's name), and its status (kept as status/RELAY.json for
  `tether gateway status`).

The relay is trusted to say which user logged in to it with which key, and nothing more: a
certificate is only ever issued for the key the policy names for that user, so a relay taken over
gains nothing it could use without that user's private key.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime

from tether.errors import ConfigError, TetherError, describe
from tether.files import CONFIG_LIMIT, read_regular, write_private
from tether.gateway import audit, policy, signer
from tether.gateway.bundles import MAX_CAS
from tether.gateway.layout import Gateway
from tether.gateway.names import parse_name, parse_target_path

log = logging.getLogger("tether")

# One line: a policy or a revocation list (each up to CONFIG_LIMIT) as text or base64.
MAX_LINE = 4 * CONFIG_LIMIT
CHECK = 0.5  # how often the policy's and the revocation list's files are compared
SIGN_GRACE = 10.0  # for the requests of a relay that has left to be answered
SESSION_EVENTS = ("opened", "closed", "cut", "leftovers", "lost")
MAX_FIELDS = 24
_FIELD = re.compile(r"[a-z_]{1,32}\Z")


@dataclass(frozen=True)
class Trusted:
    """The CAs' public keys trusted now ("TYPE BASE64" lines): two of a CA during its
    rollover. A relay takes user certificates of ``user`` and the signer's host certificate of
    ``host``."""

    user: tuple[str, ...]
    host: tuple[str, ...]

    @classmethod
    def read(cls, gateway: Gateway) -> Trusted:
        try:
            return cls(tuple(gateway.trusted("user")), tuple(gateway.trusted("host")))
        except OSError as exc:  # a key retired as it was read: the next look finds the rest
            raise ConfigError(f"the CAs' keys: {describe(exc)}") from None

    @classmethod
    def parse(cls, message: dict[str, object]) -> Trusted | None:
        """The keys a signer sent, checked; None from a signer that sends none (one older than
        CA rollovers) or a list that is not one of keys."""
        found: list[tuple[str, ...]] = []
        for key in ("user_cas", "host_cas"):
            lines = message.get(key)
            if not isinstance(lines, list) or not 0 < len(lines) <= MAX_CAS:
                return None
            try:
                found.append(tuple(policy.parse_public_key(str(k), what=key) for k in lines))
            except TetherError:
                return None
        return cls(*found)


@dataclass(frozen=True)
class State:
    """What a signer sends a relay: the policy's bytes, the revocation list's and the CAs'
    trusted keys."""

    policy: bytes
    revoked: bytes
    trusted: Trusted

    def message(self) -> dict[str, object]:
        return {
            "policy": self.policy.decode(),
            "krl": base64.b64encode(self.revoked).decode(),
            "user_cas": list(self.trusted.user),
            "host_cas": list(self.trusted.host),
        }

    @classmethod
    def read(cls, gateway: Gateway) -> State:
        """The gateway's files now; the policy checked whole (a hand edit gone wrong is not
        sent: relays keep the last good one)."""
        raw = read_regular(gateway.policy, limit=CONFIG_LIMIT, what="policy", error=ConfigError)
        policy.parse(raw, source=str(gateway.policy))
        revoked = read_regular(
            gateway.revoked, limit=CONFIG_LIMIT, what="revocation list", error=ConfigError
        )
        return cls(raw, revoked, Trusted.read(gateway))


def encode(message: dict[str, object]) -> bytes:
    return json.dumps(message, ensure_ascii=True, default=str).encode() + b"\n"


def decode(line: bytes) -> dict[str, object]:
    """One line of the feed as an object (ValueError if it is not one)."""
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError("not an object")
    return message


class Feed:
    """The signer's end of one relay's session: ``reader`` and ``writer`` are its stdin and
    stdout."""

    def __init__(
        self,
        gateway: Gateway,
        relay: str,
        reader: asyncio.StreamReader,
        writer: asyncio.WriteTransport,
    ) -> None:
        self.gateway = gateway
        self.relay = parse_name(relay, what="relay")
        self.reader = reader
        self.writer = writer
        self._sent: State | None = None
        # One look at the files at a time, so that states go out in the order they were read
        # (a signing's look and the periodic one may overlap).
        self._looking = asyncio.Lock()
        self._signing: set[asyncio.Task[None]] = set()
        self._written: str | None = None  # the status file as this feed last wrote it

    async def serve(self) -> int:
        """Until the relay leaves (0: its last requests answered first) or is removed from the
        policy (5)."""
        pushing = asyncio.ensure_future(self._push())
        reading = asyncio.ensure_future(self._read())
        try:
            done, _ = await asyncio.wait([pushing, reading], return_when=asyncio.FIRST_COMPLETED)
            if pushing in done:
                return 5
            if self._signing:
                await asyncio.wait(self._signing, timeout=SIGN_GRACE)
            return 0
        finally:
            for task in (pushing, reading, *self._signing):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self._left()

    def _send(self, message: dict[str, object]) -> None:
        self.writer.write(encode(message))

    async def _push(self) -> None:
        """The state at once, then at each change; return when this relay is no longer in the
        policy (its session ends: a removed relay is cut off)."""
        while await self._refresh():
            await asyncio.sleep(CHECK)

    async def _refresh(self) -> bool:
        """Send the gateway's state if it changed since it was last sent; False once this
        relay is no longer in the policy."""
        async with self._looking:
            try:
                state = await asyncio.to_thread(State.read, self.gateway)
            except TetherError as exc:
                log.warning("feed %s: not sent: %s", self.relay, exc.message)
                return True
            if self.relay not in policy.parse(state.policy, source="policy").relays:
                return False
            if state != self._sent:
                self._send(state.message())
                self._sent = state
            return True

    async def _read(self) -> None:
        while line := await self.reader.readline():
            try:
                message = decode(line)
            except ValueError:
                log.warning("feed %s: a line that is not JSON, ignored", self.relay)
                continue
            if "sign" in message:
                task = asyncio.ensure_future(self._sign(message))
                self._signing.add(task)
                task.add_done_callback(self._signing.discard)
            elif "audit" in message:
                self._audit(message["audit"])
            elif "status" in message:
                self._status(message["status"])

    async def _sign(self, request: dict[str, object]) -> None:
        ident = request.get("sign")
        try:
            user = parse_name(str(request.get("user")), what="user")
            site, target = parse_target_path(f"{request.get('site')}/{request.get('target')}")
            issued = await asyncio.to_thread(
                signer.issue_for, self.gateway, user, site, target, relay=self.relay
            )
        except TetherError as exc:
            self._send({"refused": ident, "error": exc.message, "exit_code": exc.exit_code})
            return
        except OSError as exc:  # the gateway's files: the signer goes on, the user is told
            log.error("feed %s: signing failed: %s", self.relay, describe(exc))
            self._send({"refused": ident, "error": f"the signer failed: {describe(exc)}",
                        "exit_code": 1})  # fmt: skip
            return
        # The state first, if it changed since the last look: the relay applies it before it
        # hands the certificate on, so its reaper never judges the session this certificate
        # opens by a policy older than the grant the certificate was issued for. A file gone
        # meanwhile does not hold the answer back: the periodic look meets it too.
        try:
            await self._refresh()
        except OSError as exc:
            log.warning("feed %s: state not sent first: %s", self.relay, describe(exc))
        self._send(
            {
                "signed": ident,
                "certificate": issued.certificate,
                "serial": issued.serial,
                "valid_before": issued.valid_before.isoformat(),
            }
        )

    def _audit(self, line: object) -> None:
        """A session's audit line from the relay, into the gateway's log: its event one of the
        sessions', its fields plain values under plain names."""
        if not isinstance(line, dict) or line.get("event") not in SESSION_EVENTS:
            return
        fields = {
            key: value
            for key, value in list(line.items())[:MAX_FIELDS]
            if _FIELD.match(key) and key not in ("event", "time", "relay")
            and (value is None or isinstance(value, (str, int, float, bool)))
        }  # fmt: skip
        audit.record(self.gateway.audit, str(line["event"]), relay=self.relay, **fields)

    def _status(self, status: object) -> None:
        if not isinstance(status, dict):
            return
        self._write_status({"status": status})

    def _left(self) -> None:
        """Mark the relay's status as left, so that `tether gateway status` shows it down at
        once rather than after its heartbeats stop; unless another signer's feed has written
        the file since (the relay moved on to it before this session was seen to end)."""
        if self._written is None:
            return
        path = self.gateway.status / f"{self.relay}.json"
        with contextlib.suppress(OSError, UnicodeDecodeError):
            if path.read_text() == self._written:
                self._write_status({"left": True})

    def _write_status(self, fields: dict[str, object]) -> None:
        now = datetime.now(UTC).isoformat(timespec="seconds")
        text = json.dumps({"relay": self.relay, "time": now, **fields}, default=str) + "\n"
        with contextlib.suppress(OSError):
            write_private(self.gateway.status / f"{self.relay}.json", text)
            self._written = text


async def run(gateway: Gateway, relay: str) -> int:
    """Serve the relay on this process's stdin and stdout."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_LINE)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    transport, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(1, "wb", 0))
    try:
        return await Feed(gateway, relay, reader, transport).serve()
    finally:
        transport.close()
