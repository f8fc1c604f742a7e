"""Tunnels through a gateway (``via = "gw://[USER@]RELAY[:PORT][,RELAY2[:PORT2]...]"``,
``to = "SITE/TARGET"``).

The OpenSSH engine, with two steps of its own before each master starts:

1. a relay's signer: `ssh tether-relay sign SITE/TARGET`, logged in with the user's own key
   (an identity file, else ssh-agent), answers with a certificate for that key that opens the
   one target for minutes, the site's endpoint on the relay, the account the site's sshd takes
   and where the target is (gateway/signer.py). The relays are asked in turn (relayorder.py):
   one that cannot be reached, logged in to, or has no link from the site, is passed over for
   the next; a refusal of access is the policy's, the same on every relay, and final;
2. a config of tether's own: the relay that signed as ``tether-relay`` and the site as
   ``SITE.site.tether`` behind it (ProxyJump), each host key checked against the gateway's host
   CA under that name (the ``@cert-authority`` line of `tether gateway trust`, in known_hosts).

The master's session ends at the site's sshd: the relay forwards ciphertext. Every reconnect
asks for a new certificate, so an access that has ended ends the tunnel: exit 5, "access
ended".
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tether import paths
from tether.errors import (
    AccessRefused,
    ConfigError,
    TetherError,
    TransportUnreachableError,
    UsageError,
    visible,
)
from tether.gateway.addresses import Resolver, system_resolver
from tether.gateway.names import ACCOUNT, RELAY_PRINCIPAL, site_host_alias
from tether.spec import Endpoint, SshOptions, Via
from tether.transports import sshexit
from tether.transports.base import Forwarding, LossCallback, PhaseCallback
from tether.transports.childoutput import collected, killed
from tether.transports.masterconfig import quoted, session_words, write_gateway_config
from tether.transports.master import parent_death_wrapper
from tether.transports.openssh import OpenSshTransport
from tether.transports.relayorder import Candidate, RelayOrder
from tether.transports.workdir import Workdir

log = logging.getLogger("tether")

# What the signer's answer may hold: a certificate line, and nothing long; and what its ssh may
# say on stderr (the signer's error line, ssh's own): both come from a peer, read to a bound.
MAX_ANSWER = 64 * 1024
MAX_SAID = 64 * 1024
_CERTIFICATE = re.compile(r"[a-z0-9-]+-cert-v01@openssh\.com [A-Za-z0-9+/]+={0,2}\Z")
_PUBLIC_KEY = re.compile(r"(?:ssh|ecdsa|sk)-[a-z0-9@.-]+ [A-Za-z0-9+/]+={0,2}\Z")
# The signer's own exit statuses (errors.py): access refused, the site not linked.
REFUSED, UNREACHABLE = 5, 4
# How long a relay's signer may take before the next relay is asked, or connect_timeout if
# longer (the last one asked has the whole attempt's time): a relay whose host went silent must
# not use up every attempt.
RELAY_TIMEOUT = 10.0
# A reconnect keeps the certificate it has while this much of its validity is left (they are
# issued for 5 minutes): a relay checks it (and the revocation list) at the login all the same.
REUSE_MARGIN = 60.0


class Answer:
    """The signer's answer, checked whole: it comes from a peer."""

    def __init__(self, text: str) -> None:
        try:
            data = json.loads(text)
        except ValueError:
            raise TransportUnreachableError("the relay's signer answered no JSON") from None
        if not isinstance(data, dict):
            raise TransportUnreachableError("the relay's signer answered no object")
        certificate, key = data.get("certificate"), data.get("key")
        port, account, target = data.get("port"), data.get("account"), data.get("target")
        if not isinstance(certificate, str) or not _CERTIFICATE.match(certificate):
            raise TransportUnreachableError("the relay's signer answered no certificate")
        if not isinstance(key, str) or not _PUBLIC_KEY.match(key):
            raise TransportUnreachableError("the relay's signer answered no key")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise TransportUnreachableError("the relay's signer answered no port")
        if not isinstance(account, str) or not ACCOUNT.match(account):
            raise TransportUnreachableError("the relay's signer answered no account")
        if not isinstance(target, str):
            raise TransportUnreachableError("the relay's signer answered no target")
        self.certificate = certificate
        self.key = key
        self.port = port
        self.account = account
        self.valid_before = _instant(data.get("valid_before"))
        self.connected = 0  # masters that logged in with it
        try:
            self.target = Endpoint.parse(target, what="the signer's target")
        except TetherError as exc:
            raise TransportUnreachableError(exc.message) from None

    def lasts(self, seconds: float) -> bool:
        """Whether the certificate is still valid ``seconds`` from now (by this host's clock)."""
        if self.valid_before is None:
            return False
        return self.valid_before - datetime.now(UTC) > timedelta(seconds=seconds)


def _instant(value: object) -> datetime | None:
    """An answer's ISO 8601 time with its zone; None if it has none (the answer is then never
    used twice)."""
    try:
        when = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return when if when is not None and when.tzinfo is not None else None


class GatewayTransport(OpenSshTransport):
    """A private OpenSSH ControlMaster to a site's sshd, through one of a gateway's relays."""

    # Its login is a certificate made for this tunnel alone: no other tunnel could share it.
    shareable = False

    def __init__(
        self,
        via: Via,
        options: SshOptions,
        site: str,
        target: str,
        *,
        resolver: Resolver = system_resolver,
    ) -> None:
        super().__init__(via, options)
        self.site = site
        self.target = target
        self.label = f"{via} {site}/{target}"
        self.relays = RelayOrder(via, resolver)
        #: The relay whose signer answered last: the one the next (or current) master uses.
        self.signer: Candidate | None = None
        self._relay: Candidate | None = None  # the relay the master jumps through
        self._forward_to: Endpoint | None = None
        self._answer: Answer | None = None
        self._using: Answer | None = None  # the answer of the master being connected
        self._held: Answer | None = None  # kept for the next attempt (attempt_ended)

    def known_hosts(self) -> str:
        return self.options.known_hosts or str(paths.known_hosts())

    async def authorize(self) -> Answer:
        """Ask the signers now; the next connect uses the answer (tether diagnose's step)."""
        workdir = Workdir()
        try:
            self.signer, self._answer = await self._sign_any(
                workdir.path, list(self.options.identity_files)
            )
        finally:
            workdir.remove()
        return self._answer

    async def connect(
        self, on_phase: PhaseCallback | None = None, on_lost: LossCallback | None = None
    ) -> None:
        def lost(reason: str) -> None:
            # The relay may be what was lost (or the site's link to it): the next attempt
            # asks another first, and this one again only after it.
            self._relay_failed()
            if on_lost is not None:
                on_lost(reason)

        try:
            await super().connect(on_phase, lost)
            self.attempt_ended(None)
        except BaseException as exc:
            self.attempt_ended(exc)
            relay = self._relay
            several = len(self.relays.ordered()) > 1
            if relay is not None and isinstance(exc, TetherError) and several:
                exc.message = f"{exc.message} (through relay {relay.label})"
                exc.args = (exc.message,)
            self._relay_failed()  # signed, and the master could not get through it
            raise

    def _relay_failed(self) -> None:
        relay, self._relay = self._relay, None
        if relay is not None:
            self.relays.failed(relay)

    async def prepare(self, workdir: Path) -> Path:
        """Ask the signers for a certificate, then write the master's config for it, through
        the relay that signed."""
        self._relay = None
        identities = list(self.options.identity_files)
        answer, self._answer = self._answer, None
        relay = self.signer
        if answer is None:
            answer, relay = await self._reusable()
        if answer is None or relay is None:
            self.signer, answer = await self._sign_any(workdir, identities)
            relay = self.signer
        self._relay, self._using = relay, answer
        certificate = workdir / "id-cert.pub"
        certificate.write_text(answer.certificate + "\n")
        if not identities:  # the key is in ssh-agent: its public half names it
            public = workdir / "id.pub"
            public.write_text(answer.key + "\n")
            identities = [str(public)]
        alias = site_host_alias(self.site)
        settings = self._relay_settings(relay)
        settings["CertificateFile"] = quoted(str(certificate), "certificate")
        hosts = {
            RELAY_PRINCIPAL: settings,
            alias: {
                "HostName": "127.0.0.1",
                "Port": str(answer.port),
                "User": answer.account,
                "HostKeyAlias": alias,
                "ProxyJump": RELAY_PRINCIPAL,
                "CertificateFile": quoted(str(certificate), "certificate"),
            },
        }
        self._forward_to = answer.target
        return write_gateway_config(
            workdir / "config",
            self.options,
            hosts,
            identities=identities,
            known_hosts=self.known_hosts(),
        )

    def attempt_ended(self, failure: BaseException | None) -> None:
        """Keep the certificate of this attempt's master for the next one if it connected, or
        if the attempt ran out of time (a failover's load says nothing against it). Any other
        failure drops it, and the next attempt asks the signers and hears the policy's word: a
        relay refusing a revoked certificate only closes the connection, which reads like a
        relay that is down."""
        if failure is None and self._using is not None:
            self._using.connected += 1
        timed_out = isinstance(failure, TimeoutError | asyncio.CancelledError)
        self._held = self._using if failure is None or timed_out else None

    async def _reusable(self) -> tuple[Answer | None, Candidate | None]:
        """The certificate kept from the last attempt, if it has REUSE_MARGIN left, and the
        relay to use it through (the first in order): a reconnect after a relay died then
        costs one login, not two, and a failover of many tunnels does not queue them all at
        the signers. Used by two masters at most: a session cut again after the first reuse
        (its access ended, and the policy was edited without revoking the certificate) is
        then told by a signer, not reconnected until the certificate runs out."""
        held, self._held = self._held, None
        if held is None or held.connected >= 2 or not held.lasts(REUSE_MARGIN):
            return None, None
        relay = next((c for c in await self.relays.refresh() if c.unresolved is None), None)
        return (held, relay) if relay is not None else (None, None)

    def _relay_settings(self, relay: Candidate) -> dict[str, str]:
        settings = {
            "HostName": quoted(relay.address.host, "relay"),
            "Port": str(relay.address.port),
            "HostKeyAlias": RELAY_PRINCIPAL,
        }
        if self.via.user:
            settings["User"] = quoted(self.via.user, "relay user")
        return settings

    async def _sign_any(self, workdir: Path, identities: list[str]) -> tuple[Candidate, Answer]:
        """The first answer of the relays' signers, asked in turn; each relay that fails goes
        to the end of the order. AccessRefused at once if one refuses; else, once every relay
        has failed, one error that names them all."""
        relays = await self.relays.refresh()
        tried: list[tuple[Candidate, TetherError]] = []
        patience = max(RELAY_TIMEOUT, self.options.connect_timeout or 0)
        for index, relay in enumerate(relays):
            bound = patience if index < len(relays) - 1 else None
            try:
                if relay.unresolved is not None:
                    raise TransportUnreachableError(relay.unresolved)
                async with asyncio.timeout(bound):
                    answer = await self._sign(relay, workdir / f"sign-config-{index}", identities)
            except (AccessRefused, UsageError):
                raise  # the policy's word, or the user's own config: the same on every relay
            except TimeoutError:
                self.relays.failed(relay)
                late = f"relay {relay.label}: no answer within {patience:g}s"
                tried.append((relay, TransportUnreachableError(late)))
            except TetherError as exc:
                self.relays.failed(relay)
                tried.append((relay, exc))
            except BaseException:
                self.relays.failed(relay)  # cancelled while it was asked: it may hang again
                raise
            else:
                # Said, so that one can tell why a relay carries less (when none signs, the
                # error names them all instead).
                for passed in tried:
                    log.warning("%s; signed by relay %s", _said(*passed), relay.label)
                return relay, answer
        raise _none_signed(tried, f"{self.site}/{self.target}")

    async def _sign(self, relay: Candidate, config: Path, identities: list[str]) -> Answer:
        """``relay``'s signer's answer for this target; tether's error if it refuses or cannot
        be reached."""
        write_gateway_config(
            config,
            self.options,
            {RELAY_PRINCIPAL: self._relay_settings(relay)},
            identities=identities,
            known_hosts=self.known_hosts(),
        )
        ssh = shutil.which("ssh") or "ssh"
        argv = [*parent_death_wrapper(), ssh, "-F", str(config), *session_words()]
        if not identities:  # any key of ssh-agent's may be the user's
            argv += ["-o", "IdentitiesOnly=no"]
        asked = f"{self.site}/{self.target}"
        argv += ["-o", "LogLevel=ERROR", "--", RELAY_PRINCIPAL, "sign", asked]
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        try:
            output = await collected(process, MAX_ANSWER, MAX_SAID)
        finally:
            if process.returncode is None:  # cancelled: by the timeout, or a signal
                await killed(process)
        if output is None:
            raise TransportUnreachableError(
                f"relay {relay.label}: the signer's answer is over {MAX_ANSWER // 1024} KiB"
            )
        out, err = output
        said = err.decode(errors="replace").strip()
        last = visible(said.splitlines()[-1]) if said else ""
        last = last.removeprefix("tether: ").removeprefix("error: ")
        if process.returncode == 0:
            try:
                return Answer(out.decode(errors="replace"))
            except TransportUnreachableError as exc:
                raise TransportUnreachableError(f"relay {relay.label}: {exc.message}") from None
        if process.returncode == REFUSED:
            raise AccessRefused(last or f"access to {self.site}/{self.target} refused")
        if process.returncode == UNREACHABLE:
            raise TransportUnreachableError(f"relay {relay.label}: {last}")
        if process.returncode == 255:  # ssh's own failure: to reach or log in to the relay
            resolved = await sshexit.resolve([ssh, "-F", str(config), "--", RELAY_PRINCIPAL])
            raise await sshexit.startup_error(said, resolved, relay.label)
        raise TransportUnreachableError(
            f"relay {relay.label}: the signer failed: {last or f'exit {process.returncode}'}"
        )

    def destination(self) -> list[str]:
        # The master logs in to the site, through the relay (its config says how).
        return ["--", site_host_alias(self.site)]

    async def server_address(self) -> tuple[str, int] | None:
        """The relay in use; after a loss, the one the next attempt asks first (the watch of
        outage.py sees it answer again)."""
        relay = self._relay or self.relays.ordered()[0]
        return relay.address.host, relay.address.port

    async def forward(self, target: Endpoint, sock: socket.socket) -> Forwarding:
        # The site's sshd opens the target by the address its agent announced.
        if self._forward_to is None:
            raise TransportUnreachableError(f"{self.label}: not connected")
        return await super().forward(self._forward_to, sock)


def _none_signed(tried: list[tuple[Candidate, TetherError]], asked: str) -> TetherError:
    """One error for the relays that all failed, naming each with why, on one line. Its kind
    (and exit code) is the most telling failure's: a relay that answered and refused (a login,
    a host key) says more of what to mend than one that could not be reached."""
    if len(tried) == 1:
        return tried[0][1]
    chosen = next(
        (exc for _, exc in tried if not isinstance(exc, TransportUnreachableError)), tried[-1][1]
    )
    chosen.message = f"no relay signed for {asked}: " + "; ".join(_said(*t) for t in tried)
    chosen.args = (chosen.message,)
    return chosen


def _said(relay: Candidate, exc: TetherError) -> str:
    """Why ``relay`` did not sign, naming it once."""
    return exc.message if relay.label in exc.message else f"relay {relay.label}: {exc.message}"


def parse_target(target: Endpoint) -> tuple[str, str]:
    """SITE and TARGET of a spec's ``SITE/TARGET`` target (checked when it was parsed)."""
    site, _, name = target.host.partition("/")
    if not site or not name:
        raise ConfigError(f"not SITE/TARGET: {target.host}")
    return site, name


__all__ = ["GatewayTransport", "parse_target"]
