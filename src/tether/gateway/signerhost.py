"""A signer: the one place a gateway's CA keys are used (`tether gateway signer DIR`). It is the
gateway's stock sshd again, which only relays log in to, each with its own certificate
(principal ``relay:NAME``, from `tether gateway relays add`), and whose only command is the
relay's feed (feed.py): the policy down, signing requests up.

Several signers may serve one gateway directory (on shared storage, or the same host): each reads
the same policy, revocation list and serial counter (taken under a lock), and writes to the same
audit log (one append per line). A relay's bundle names every signer and uses the first that
answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import sys
from collections.abc import Callable

from tether.errors import RelayError, TetherError, UsageError, describe
from tether.files import write_private
from tether.gateway import policy
from tether.gateway.layout import Gateway
from tether.gateway.names import parse_name, relay_principal
from tether.gateway.sessions import accepted, ended
from tether.gateway.sshd import Sshd, strict_enough
from tether.gateway.sshdconfig import forced, sshd_config
from tether.modes.signals import StopRequest
from tether.protocol import Status
from tether.spec import Endpoint

log = logging.getLogger("tether")

POLICY_CHECK = 1.0  # how often the policy's mtime is compared, to rewrite the principals


class SignerHost:
    """The signer of ``gateway``, listening on ``listen``."""

    def __init__(self, gateway: Gateway, listen: Endpoint) -> None:
        self.gateway = gateway
        self.listen = listen
        self.run_dir = gateway.signer_run
        self.config = self.run_dir / "sshd_config"
        self.principals = self.run_dir / "principals"
        # Every trusted user CA's key (two during a rollover), read by sshd at each login.
        self.user_cas = self.run_dir / "user_cas.pub"
        self.sshd = Sshd("signer", self.config, listen, on_line=self._heard)
        self._policy_mtime = 0.0
        self._relays: dict[tuple[str, int], str] = {}  # fed relays, by peer

    def prepare(self) -> None:
        """Write the config and the principals; refuse a directory sshd would refuse."""
        problem = strict_enough(self.gateway.root)
        if problem is not None:
            raise UsageError(
                f"{self.gateway.root}: sshd would refuse every login: {problem}",
                hint="keep the gateway in a directory only you (or root) can write to, and "
                "whose parents are the same",
            )
        with contextlib.suppress(FileExistsError):
            os.mkdir(self.run_dir, 0o700)
        os.chmod(self.run_dir, 0o700)
        self.write_principals()
        self.write_user_cas()
        write_private(
            self.config,
            sshd_config(
                listen=self.listen,
                user=pwd.getpwuid(os.getuid()).pw_name,
                host_key=self.gateway.signer_key,
                host_certificate=self.gateway.signer_certificate,
                user_ca=self.user_cas,
                principals=self.principals,
                revoked=self.gateway.revoked,
                forwarding=False,
            ),
        )

    def write_principals(self) -> None:
        """One line per relay of the policy: its certificate runs its feed, nothing else."""
        self._policy_mtime = os.stat(self.gateway.policy).st_mtime
        current = policy.load(self.gateway.policy)
        feed = [sys.executable, "-m", "tether", "gateway", "feed", str(self.gateway.root)]
        lines = ["# Written by tether for a gateway signer. Not to be edited."]
        for name in sorted(current.relays):
            parse_name(name, what="relay")
            lines.append(f"{forced(feed, name)} {relay_principal(name)}")
        write_private(self.principals, "\n".join([*lines, ""]))

    def write_user_cas(self) -> None:
        """The user CAs' keys this signer's sshd takes relays' certificates of, when they
        changed (a rollover's add or retire)."""
        text = "".join(f"{ca}\n" for ca in self.gateway.trusted("user"))
        with contextlib.suppress(OSError):
            if self.user_cas.read_text() == text:
                return
        write_private(self.user_cas, text)

    async def run(self, on_ready: Callable[[], None], stop: StopRequest) -> int:
        """Check, start, tell ``on_ready``, serve until ``stop`` (0), and end sshd and its
        sessions; RelayError if sshd fails or exits by itself."""
        await self.sshd.check()
        await self.sshd.start()
        try:
            on_ready()
            serving = asyncio.ensure_future(self._serve())
            stopping = asyncio.ensure_future(stop.event.wait())
            await asyncio.wait([serving, stopping], return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if serving.done():
                raise RelayError(f"the signer's sshd exited with status {serving.result()}")
            serving.cancel()
        finally:
            await self.sshd.stop()
        return 0

    async def _serve(self) -> int:
        exited = self.sshd.exited
        assert exited is not None
        while not exited.done():
            await asyncio.wait([exited], timeout=POLICY_CHECK)
            with contextlib.suppress(OSError):
                if os.stat(self.gateway.policy).st_mtime != self._policy_mtime:
                    try:
                        self.write_principals()
                    except TetherError as exc:  # a hand edit gone wrong: keep the last good one
                        log.warning("signer: policy not applied: %s", exc.message)
            try:
                self.write_user_cas()
            except TetherError as exc:  # a retire under way: the next look settles it
                log.warning("signer: user CAs not read: %s", exc.message)
            except OSError as exc:
                log.warning("signer: user CAs not read: %s", describe(exc))
        return exited.result()

    def _heard(self, line: str) -> None:
        login = accepted(line)
        if login is not None:
            self._relays[(login.host, login.port)] = login.key_id.removeprefix("relay:")
            return
        gone = ended(line)
        if gone is not None:
            self._relays.pop(gone, None)

    def status(self) -> Status:
        """What `tether list` shows: ready while sshd serves, and the relays it feeds."""
        return Status(
            state="ready" if self.sshd.pid is not None else "connecting",
            connections_active=len(self._relays),
        )
