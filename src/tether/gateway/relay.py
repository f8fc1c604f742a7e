"""A relay: the gateway's stock sshd, configured, checked and supervised by tether, run from a
relay bundle (relaybundle.py) with no CA key.

Its files live in its state directory (private): the bundle's keys, the config (checked by `sshd
-t`), and the policy, revocation list and CAs' trusted keys as a signer last sent them
(feedlink.py), kept so that a relay restarted while no signer answers serves as it did. sshd
reads the principals file, the users' keys, the revocation list and the user CAs' keys at each
login, so a change needs no restart: the relay writes them again when a signer sends new ones.
The CAs' keys come from the bundle until a signer sends them: a CA rollover reaches relays over
the feed, whose signer is checked against the host CA the relay trusts already.

A user's own key logs in to the relay to ask for a certificate; the relay passes the request to
a signer over its feed and answers with the certificate and what only it knows: where the site's
agent, linked to it, says the target is.

sshd checks every directory above the principals file (StrictModes): each must be owned by root
or the relay's user and writable by no one else, so a state directory under /tmp is refused
here, in one line, before sshd would refuse every login.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pwd
import shutil
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tether.control import bind_private_socket
from tether.errors import AccessRefused, AgentRefused, RelayError, TetherError, UsageError
from tether.files import write_private, write_private_files
from tether.gateway import announce, keygen, policy
from tether.gateway.feed import Trusted
from tether.gateway.feedlink import FeedLink
from tether.gateway.hops import known_hosts_lines, ssh_options
from tether.gateway.names import SIGNER_PRINCIPAL, parse_target_path
from tether.gateway.relaybundle import RelayBundle
from tether.gateway.sshd import Sshd, strict_enough
from tether.gateway.reaper import Sessions
from tether.gateway.sessions import leftovers
from tether.gateway.sshdconfig import relay_principals, signer_keys, sshd_config
from tether.modes.signals import StopRequest
from tether.protocol import Status
from tether.spec import Endpoint
from tether.transports.master import parent_death_wrapper

log = logging.getLogger("tether")

# A Unix socket's path holds at most 107 bytes (sun_path, with its NUL).
MAX_SOCKET_PATH = 107
SIGN_TIMEOUT = 10.0  # for a signing request's one line
TICK = 1.0  # how often sessions are reaped, and told to the signer if they changed
# How often their bytes are counted (`ss`, a subprocess that reads every session's TCP_INFO: a
# megabyte at 2,000 sessions), and at the next tick after a cut, whose close it notices.
COUNT = 5.0
# The sessions a status lists, at most (about 200 bytes each, well within a feed's line); it
# says how many more there are.
MAX_TOLD = 5000
# A relay's status goes up at least this often, changed or not: `tether gateway status` takes a
# relay not heard from for a few of these to be down (its host gone, or no signer reaching it).
HEARTBEAT = 5.0
# The feed's ssh: a signer gone silent is seen within 15 s, and the next one tried.
FEED_OPTIONS = ("ServerAliveInterval=5", "ServerAliveCountMax=3", "ConnectTimeout=10")


class Relay:
    """The relay of ``bundle``, its files in ``state``, listening on ``listen``."""

    def __init__(self, bundle: RelayBundle, state: Path, listen: Endpoint) -> None:
        self.bundle = bundle
        self.state = Path(os.path.abspath(state))
        self.listen = listen
        self.config = self.state / "sshd_config"
        self.principals = self.state / "principals"
        self.authorized_keys = self.state / "authorized_keys"
        self.policy_cache = self.state / "policy.toml"
        self.revoked = self.state / "revoked.krl"
        self.trusted_cache = self.state / "cas.json"
        self.signer_socket = self.state / "signer.sock"
        self.sessions = Sessions(listen, self.feed_audit)
        self.sshd = Sshd("relay", self.config, listen, on_line=self.sessions.heard)
        self.feed = FeedLink(bundle.signers, self._feed_argv, self._fed)
        self._policy: policy.Policy | None = None
        self._policy_known = asyncio.Event()
        self._said: int | None = None  # the sessions' changes at the last status sent up
        self._said_at = 0.0  # when (time.monotonic())

    def prepare(self) -> None:
        """Write the bundle's keys and the config; refuse a directory sshd would refuse."""
        problem = strict_enough(self.state.parent)
        if problem is not None:
            raise UsageError(
                f"{self.state}: sshd would refuse every login: {problem}",
                hint="give --state-dir a directory only you (or root) can write to",
            )
        if len(os.fsencode(self.signer_socket)) > MAX_SOCKET_PATH:
            raise UsageError(
                f"{self.state}: too deep for the relay's signer socket "
                f"({self.signer_socket} is over {MAX_SOCKET_PATH} bytes)",
                hint="give --state-dir a directory with a shorter path",
            )
        b = self.bundle
        files = {
            "host": b.host_key,
            "host-cert.pub": b.host_certificate + "\n",
            "login": b.login_key,
            "login-cert.pub": b.login_certificate + "\n",
        }
        write_private_files(self.state, files)
        if not self.revoked.exists():
            keygen.empty_revocations(self.revoked)
        self._write_trusted(Trusted(b.user_cas, b.host_cas))
        self._load_cache()
        write_private(
            self.config,
            sshd_config(
                listen=self.listen,
                user=pwd.getpwuid(os.getuid()).pw_name,
                host_key=self.state / "host",
                host_certificate=self.state / "host-cert.pub",
                user_ca=self.state / "user_ca.pub",
                principals=self.principals,
                revoked=self.revoked,
                authorized_keys=self.authorized_keys,
            ),
        )

    def _load_cache(self) -> None:
        """The policy and CAs' keys a signer sent before this relay last stopped, if any; until
        a policy is known nothing may log in."""
        with contextlib.suppress(OSError, ValueError):
            cached = Trusted.parse(json.loads(self.trusted_cache.read_bytes()))
            if cached is not None:
                # With the bundle's too: a bundle newer than the cache (issued after a
                # rollover the relay slept through) must still let it check the signers.
                b = self.bundle
                both = Trusted(_union(cached.user, b.user_cas), _union(cached.host, b.host_cas))
                self._write_trusted(both)
        try:
            raw = self.policy_cache.read_bytes()
            self._apply(policy.parse(raw, source=str(self.policy_cache)))
        except (OSError, TetherError):
            self._write_access({}, {})

    def _fed(self, raw: bytes, revoked: bytes, trusted: Trusted | None) -> None:
        """A signer's policy, revocation list and CAs' keys: applied now (the reaper follows
        within a second), and kept for the next start."""
        try:
            current = policy.parse(raw, source="the signer's policy")
        except TetherError as exc:
            log.warning("relay: policy not applied: %s", exc.message)
            return
        if trusted is not None:
            self._write_trusted(trusted)
            write_private(self.trusted_cache, json.dumps(
                {"user_cas": list(trusted.user), "host_cas": list(trusted.host)}
            ) + "\n")  # fmt: skip
        write_private(self.revoked, revoked)
        write_private(self.policy_cache, raw)
        self._apply(current)

    def _apply(self, current: policy.Policy) -> None:
        self._policy = current
        self._write_access(
            {site.name: site.port for site in current.sites.values()},
            {user.name: user.key for user in current.users.values()},
        )
        self._policy_known.set()

    def _write_trusted(self, trusted: Trusted) -> None:
        """The user CAs' keys sshd takes certificates of (read at each login), and the host
        CAs' the signers' host certificates are checked against (at each feed's login)."""
        write_private(self.state / "user_ca.pub", "".join(f"{ca}\n" for ca in trusted.user))
        write_private(self.state / "known_hosts", known_hosts_lines(trusted.host, SIGNER_PRINCIPAL))

    def _write_access(self, sites: dict[str, int], users: dict[str, str]) -> None:
        """The principals file (``sites``: site -> endpoint port) and the users' keys, which
        may only ask this relay for a certificate."""
        tether = [sys.executable, "-m", "tether", "gateway"]
        announce = [*tether, "announce", str(self.state)]
        write_private(self.principals, relay_principals(sites, announce))
        client = str(Path(__file__).with_name("signclient.py"))
        sign = [sys.executable, "-I", "-S", client, str(self.signer_socket)]
        write_private(self.authorized_keys, signer_keys(users, sign))

    def _feed_argv(self, signer: Endpoint) -> list[str]:
        argv = [*parent_death_wrapper(), shutil.which("ssh") or "ssh", "-F", "/dev/null"]
        argv += ssh_options(
            key=self.state / "login",
            certificate=self.state / "login-cert.pub",
            known_hosts=self.state / "known_hosts",
            alias=SIGNER_PRINCIPAL,
        )
        for option in FEED_OPTIONS:
            argv += ["-o", option]
        account = self.bundle.signer_account
        return [*argv, "-T", "-p", str(signer.port), "-l", account, "--", signer.host, "feed"]

    async def run(self, on_ready: Callable[[], None], stop: StopRequest) -> int:
        """Check, start, tell ``on_ready``, serve until ``stop`` (0), and end sshd and its
        sessions; RelayError if sshd fails or exits by itself, AgentRefused if the signers
        refuse this relay."""
        await self.sshd.check()
        await self._end_leftovers()
        feeding = asyncio.ensure_future(self.feed.keep())
        stopping = asyncio.ensure_future(stop.event.wait())
        tasks: list[asyncio.Future[Any]] = [feeding, stopping]
        signing: asyncio.AbstractServer | None = None
        try:
            known = asyncio.ensure_future(self._policy_known.wait())
            tasks.append(known)
            await asyncio.wait([known, feeding, stopping], return_when=asyncio.FIRST_COMPLETED)
            self._check_refused()
            if stop.event.is_set():
                return 0
            signing = await self._serve_signer()
            await self.sshd.start()
            on_ready()
            serving = asyncio.ensure_future(self.serve())
            tasks.append(serving)
            await asyncio.wait([serving, stopping, feeding], return_when=asyncio.FIRST_COMPLETED)
            self._check_refused()
            if serving.done():
                raise RelayError(f"the relay's sshd exited with status {serving.result()}")
        finally:
            # Every task of this relay ends here, before its sshd: none is left for the
            # event loop's close to cancel.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.sshd.stop()
            self.sessions.close_all()
            self.feed.stop()
            if signing is not None:
                signing.close()
            self.signer_socket.unlink(missing_ok=True)
        return 0

    def _check_refused(self) -> None:
        if self.feed.refused is not None:
            raise AgentRefused(
                f"{self.feed.refused}: it was removed, revoked or has expired",
                hint="add the relay again: tether gateway relays add",
            )

    async def _serve_signer(self) -> asyncio.AbstractServer:
        """The signer's socket (0600, in the relay's 0700 state directory): what a user's key
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
                reply = {"answer": await self._answer(user, site, target)}
            except TetherError as exc:
                reply = {"error": exc.message, "exit_code": exc.exit_code}
            except (ValueError, KeyError, TypeError):
                reply = {"error": "not a signing request", "exit_code": 2}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (OSError, TimeoutError, ValueError):
            pass  # the client left, or said too much: it gets nothing
        finally:
            writer.close()

    async def _answer(self, user: str, site: str, target: str) -> dict[str, object]:
        """What a client asks for before it connects: a certificate for ``user``'s key that
        opens ``site``/``target`` (from a signer), and how to reach it: the site's endpoint on
        this relay, the account its sshd logs clients in as and where the target is (as the
        site's agent announced them here)."""
        announced = announce.load(self.state, site)
        # What an agent announced stays when its link ends: linked is a live session of it.
        if announced is None or not self.sessions.linked(site):
            raise RelayError(f"site {site} has no agent linked to this relay")
        where = announced.targets.get(target)
        if where is None:
            raise RelayError(f"site {site} serves no target {target}")
        current = self._policy
        enrolled = current.sites.get(site) if current is not None else None
        known = current.users.get(user) if current is not None else None
        if enrolled is None or known is None:
            raise AccessRefused(f"access to {site}/{target} refused")
        signed = await self.feed.sign(user, site, target)
        return {
            "certificate": signed.get("certificate"),
            "key": known.key,
            "serial": signed.get("serial"),
            "valid_before": signed.get("valid_before"),
            "port": enrolled.port,
            "account": announced.account,
            "target": str(where),
        }

    def status(self) -> Status:
        """What `tether list` shows: ready while sshd serves, its live sessions (agents' and
        clients') and their bytes so far (at the last count: every COUNT seconds)."""
        received, sent = self.sessions.bytes()
        return Status(
            state="ready" if self.sshd.pid is not None else "connecting",
            connections_active=len(self.sessions),
            bytes_out=received,
            bytes_in=sent,
        )

    async def serve(self) -> int:
        """Until sshd exits (its status): each second, cut the sessions whose access ended and
        tell the signer what changed; every COUNT seconds, count their bytes first."""
        exited = self.sshd.exited
        assert exited is not None
        counted = -COUNT
        recount = False
        while not exited.done():
            await asyncio.wait([exited], timeout=TICK)
            if recount or time.monotonic() - counted >= COUNT:
                counted = time.monotonic()
                await self.sessions.count()
            root = self.sshd.pid
            recount = False
            if root is not None and self._policy is not None:
                recount = await self.sessions.reap(root, self._policy, datetime.now(UTC))
            self._tell()
        return exited.result()

    def _tell(self) -> None:
        """This relay's state, up to the signer (for `tether gateway status`), when it
        changed, and each HEARTBEAT regardless: a relay that says nothing is taken to be
        down, and a signer reached after an outage hears from it soon. A session's age alone
        is no change: it is told again at the heartbeat."""
        now = time.monotonic()
        changes = self.sessions.changes
        if changes == self._said and now - self._said_at < HEARTBEAT:
            return
        said: dict[str, object] = {
            "listen": str(self.listen),
            "sessions": self.sessions.told(MAX_TOLD),
        }
        if len(self.sessions) > MAX_TOLD:
            said["untold"] = len(self.sessions) - MAX_TOLD
        self.feed.status(said)
        self._said, self._said_at = changes, now

    async def _end_leftovers(self) -> None:
        """End the sessions a killed relay left on this port: they would outlive it unseen by
        this relay's reaper, a revoke or an expiry never cutting them."""
        left = await asyncio.to_thread(leftovers, self.listen.port)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if left:
            log.warning("relay: ended %d session process(es) a previous relay left", len(left))
            self.feed_audit("leftovers", count=len(left))

    def feed_audit(self, event: str, **fields: object) -> None:
        """An audit line, up to the signers (kept while none answers)."""
        self.feed.audit(event, **fields)


def _union(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*first, *second)))
