"""A relay: the gateway's stock sshd, configured, checked and supervised by tether.

Its config and principals file are written at each start into DIR/relay/run (private), from the
gateway's files and the policy's sites, and checked by `sshd -t` before it starts. sshd reads
the principals file and the revocation list at each login, so a site added or removed needs no
restart: the relay writes the principals file again when the policy changes.

sshd checks every directory above the principals file (StrictModes): each must be owned by root
or the relay's user and writable by no one else, so a gateway under /tmp is refused here, in one
line, before sshd would refuse every login.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pwd
import re
import signal
import sys
import time
from dataclasses import dataclass
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from tether.control import bind_private_socket
from tether.errors import RelayError, TetherError, UsageError, describe, visible
from tether.files import write_private
from tether.gateway import audit, policy, signer
from tether.gateway.layout import Gateway
from tether.gateway.names import parse_target_path
from tether.gateway.sshd import Sshd, strict_enough
from tether.gateway.sessions import Login, accepted, holder, leftovers, traffic
from tether.gateway.signer import parse_client_key_id
from tether.gateway.sshdconfig import relay_principals, signer_keys, sshd_config
from tether.modes.signals import StopRequest
from tether.protocol import Status
from tether.spec import Endpoint

log = logging.getLogger("tether")

# A Unix socket's path holds at most 107 bytes (sun_path, with its NUL).
MAX_SOCKET_PATH = 107
SIGN_TIMEOUT = 10.0  # for a signing request's one line
POLICY_CHECK = 1.0  # how often the policy's mtime is compared, to rewrite the principals
# A session younger than this may not be in the kernel's table yet when its bytes are counted.
SETTLE = 2.0


class Relay:
    """The relay of ``gateway``, listening on ``listen``."""

    def __init__(self, gateway: Gateway, listen: Endpoint) -> None:
        self.gateway = gateway
        self.listen = listen
        self.run_dir = gateway.relay_run
        self.config = self.run_dir / "sshd_config"
        self.principals = self.run_dir / "principals"
        self.authorized_keys = self.run_dir / "authorized_keys"
        self.signer_socket = self.run_dir / "signer.sock"
        self.sshd = Sshd("relay", self.config, listen, on_line=self._heard)
        self._policy_mtime = 0.0
        self._policy: policy.Policy | None = None
        self._sessions: dict[tuple[str, int], _Session] = {}  # live sessions, by their peer

    def prepare(self) -> None:
        """Write the config and the principals; refuse a directory sshd would refuse."""
        problem = strict_enough(self.gateway.root)
        if problem is not None:
            raise UsageError(
                f"{self.gateway.root}: sshd would refuse every login: {problem}",
                hint="keep the gateway in a directory only you (or root) can write to, and "
                "whose parents are the same",
            )
        if len(os.fsencode(self.signer_socket)) > MAX_SOCKET_PATH:
            raise UsageError(
                f"{self.gateway.root}: too deep for the relay's signer socket "
                f"({self.signer_socket} is over {MAX_SOCKET_PATH} bytes)",
                hint="keep the gateway in a directory with a shorter path",
            )
        with contextlib.suppress(FileExistsError):
            os.mkdir(self.run_dir, 0o700)
        os.chmod(self.run_dir, 0o700)
        self.write_principals()
        write_private(
            self.config,
            sshd_config(
                listen=self.listen,
                user=pwd.getpwuid(os.getuid()).pw_name,
                host_key=self.gateway.relay_key,
                host_certificate=self.gateway.relay_certificate,
                user_ca=Path(f"{self.gateway.user_ca}.pub"),
                principals=self.principals,
                revoked=self.gateway.revoked,
                authorized_keys=self.authorized_keys,
            ),
        )

    def write_principals(self) -> None:
        """The principals file (from the policy's sites) and the signer's keys (from its
        users), now."""
        self._policy_mtime = os.stat(self.gateway.policy).st_mtime
        current = self._policy = policy.load(self.gateway.policy)
        sites = {site.name: site.port for site in current.sites.values()}
        tether = [sys.executable, "-m", "tether", "gateway"]
        announce = [*tether, "announce", str(self.gateway.root)]
        write_private(self.principals, relay_principals(sites, announce))
        keys = {user.name: user.key for user in current.users.values()}
        client = str(Path(__file__).with_name("signclient.py"))
        sign = [sys.executable, "-I", "-S", client, str(self.signer_socket)]
        write_private(self.authorized_keys, signer_keys(keys, sign))

    async def run(self, on_ready: Callable[[], None], stop: StopRequest) -> int:
        """Check, start, tell ``on_ready``, serve until ``stop`` (0), and end sshd and its
        sessions; RelayError if sshd fails or exits by itself."""
        await self.sshd.check()
        await self._end_leftovers()
        signing = await self._serve_signer()
        try:
            await self.sshd.start()
        except BaseException:
            signing.close()
            raise
        try:
            on_ready()
            serving = asyncio.ensure_future(self.serve())
            stopping = asyncio.ensure_future(stop.event.wait())
            await asyncio.wait([serving, stopping], return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if serving.done():
                raise RelayError(f"the relay's sshd exited with status {serving.result()}")
            serving.cancel()
        finally:
            await self.sshd.stop()
            signing.close()
            self.signer_socket.unlink(missing_ok=True)
        return 0

    async def _serve_signer(self) -> asyncio.AbstractServer:
        """The signer's socket (0600, in the relay's 0700 run directory): what a user's key
        runs at the relay (signclient.py) asks it for a certificate."""
        self.signer_socket.unlink(missing_ok=True)
        sock = bind_private_socket(self.signer_socket)
        return await asyncio.start_unix_server(self._sign, sock=sock)

    async def _sign(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), SIGN_TIMEOUT)
            reply: dict[str, object]
            try:
                request = json.loads(line)
                user, asked = str(request["user"]), str(request["asked"])
                site, target = parse_target_path(
                    asked.removeprefix("sign ").strip(), what="SITE/TARGET"
                )
                answered = await asyncio.to_thread(signer.answer, self.gateway, user, site, target)
                reply = {"answer": answered}
            except TetherError as exc:
                reply = {"error": exc.message, "exit_code": exc.exit_code}
            except (ValueError, KeyError, TypeError):
                reply = {"error": "not a signing request", "exit_code": 2}
            except OSError as exc:  # the gateway's files: the relay goes on, the user is told
                log.error("relay: signing failed: %s", describe(exc))
                reply = {"error": f"the relay's signer failed: {describe(exc)}", "exit_code": 1}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (OSError, TimeoutError, ValueError):
            pass  # the client left, or said too much: it gets nothing
        finally:
            writer.close()

    def status(self) -> Status:
        """What `tether list` shows: ready while sshd serves, its live sessions (agents' and
        clients') and their bytes so far (at the last count: each second)."""
        return Status(
            state="ready" if self.sshd.pid is not None else "connecting",
            connections_active=len(self._sessions),
            bytes_out=sum(s.received for s in self._sessions.values()),
            bytes_in=sum(s.sent for s in self._sessions.values()),
        )

    async def serve(self) -> int:
        """Until sshd exits (its status); the principals follow the policy meanwhile."""
        exited = self.sshd.exited
        assert exited is not None
        while not exited.done():
            await asyncio.wait([exited], timeout=POLICY_CHECK)
            with contextlib.suppress(OSError):
                if os.stat(self.gateway.policy).st_mtime != self._policy_mtime:
                    try:
                        self.write_principals()
                    except TetherError as exc:  # a hand edit gone wrong: keep the last good one
                        log.warning("relay: policy not applied: %s", exc.message)
            await self._count()
            await self._reap(datetime.now(UTC))
        return exited.result()

    async def _end_leftovers(self) -> None:
        """End the sessions a killed relay left on this port: they would outlive it unseen by
        this relay's reaper, a revoke or an expiry never cutting them."""
        left = await asyncio.to_thread(leftovers, self.listen.port)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if left:
            log.warning("relay: ended %d session process(es) a previous relay left", len(left))
            audit.record(self.gateway.audit, "leftovers", count=len(left))

    def _heard(self, line: str) -> None:
        """Follow the sessions in sshd's log: logins with a certificate, and their ends; each
        an audit line."""
        login = accepted(line)
        if login is not None:
            peer = (login.host, login.port)
            self._sessions[peer] = _Session(login, time.monotonic())
            self._record("opened", login, relay=str(self.listen))
            return
        gone = _GONE.search(line)
        if gone is not None:
            self._closed((gone["host"], int(gone["port"])))

    def _closed(self, peer: tuple[str, int]) -> None:
        """The session of ``peer`` is over: its audit line (how long, how many bytes, why if it
        was cut), once."""
        session = self._sessions.pop(peer, None)
        if session is None:
            return
        self._record(
            "closed",
            session.login,
            seconds=round(time.monotonic() - session.opened, 3),
            bytes_from_client=session.received,
            bytes_to_client=session.sent,
            **({"cut": session.cut} if session.cut else {}),
        )

    async def _count(self) -> None:
        """The bytes of each live session so far (the audit's close line says the last); a
        session the kernel no longer holds has closed, whether sshd said so or not (a session
        process ended by a signal says nothing)."""
        if not self._sessions:
            return
        counts = await traffic(self.listen.port)
        if counts is None:
            return
        now = time.monotonic()
        for peer, session in list(self._sessions.items()):
            if peer in counts:
                session.received, session.sent = counts[peer]
            elif now - session.opened > SETTLE:
                self._closed(peer)

    async def _reap(self, now: datetime) -> None:
        """End the sessions whose access has ended: OpenSSH lets a session outlive its
        certificate, and a grant or a site can be taken away before that."""
        root = self.sshd.pid
        if root is None or self._policy is None:
            return
        for peer, session in list(self._sessions.items()):
            login = session.login
            reason = None if session.cut else access_ended(login, self._policy, now)
            if reason is None:
                continue
            session.cut = reason
            pid = await asyncio.to_thread(holder, root, login.host, login.port)
            if pid is None:
                self._closed(peer)  # it ended by itself
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            log.warning("relay: session of %s cut: %s", visible(login.key_id), reason)
            self._record("cut", login, reason=reason)

    def _record(self, event: str, login: Login, **fields: object) -> None:
        """An audit line of a session: its certificate's key id and serial (which join it to
        the issuance), its peer, and ``fields``."""
        peer = f"{login.host}:{login.port}"
        audit.record(
            self.gateway.audit, event, key_id=login.key_id, serial=login.serial, peer=peer, **fields
        )


@dataclass
class _Session:
    """A live session on the relay, as its log and the kernel tell it."""

    login: Login
    opened: float  # time.monotonic()
    received: int = 0  # bytes from the client, at the last count
    sent: int = 0  # bytes to it
    cut: str | None = None  # why the reaper ended it


_GONE = re.compile(
    r"(?:Disconnected from user \S+|Connection closed by|Received disconnect from) "
    r"(?P<host>\S+) port (?P<port>\d+)"
)


def access_ended(login: Login, current: policy.Policy, now: datetime) -> str | None:
    """Why the session of ``login`` may go on no longer, or None while it may."""
    client = parse_client_key_id(login.key_id)
    if client is not None:
        # A certificate's end alone cuts nothing: it bounds when a login may start, and ends
        # no sooner than its grant, so a live grant's session goes on and a tunnel is not
        # cut every few minutes.
        user, site, target, _end = client
        if not any(
            (g.user, g.site, g.target) == (user, site, target) and g.live(now)
            for g in current.grants
        ):
            return "access revoked"
        return None
    if login.key_id.startswith("agent:"):
        enrolled = current.sites.get(login.key_id.removeprefix("agent:"))
        if enrolled is None or enrolled.serial != login.serial:
            return "its site was removed"
    return None
