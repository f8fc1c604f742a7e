"""A site's agent (`tether gateway agent`): the site's own sshd on loopback, and one outbound
`ssh -R` to each relay that puts that sshd on the site's endpoint there. It makes no inbound
connection and opens no port but loopback's.

Each link to a relay is supervised: keepalives (a relay gone silent is seen within 15 s),
reconnects with backoff, and a refusal of the agent's certificate (revoked, or expired) ends the
agent with exit 5, since no retry can succeed. The site's sshd scopes each client certificate to
the one target it names (sshdconfig.site_principals).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import shutil
import signal
import socket
from collections.abc import Callable, Mapping
from pathlib import Path

from tether.backoff import Backoff
from tether.errors import AgentRefused, UsageError, visible
from tether.files import write_private
from tether.gateway.announce import Announcement
from tether.gateway.enrolment import Enrolment
from tether.gateway.hops import known_hosts_line, ssh_options
from tether.gateway.names import RELAY_PRINCIPAL
from tether.gateway.sshd import Sshd, strict_enough
from tether.gateway.sshdconfig import site_principals, sshd_config
from tether.modes.signals import StopRequest
from tether.protocol import Status
from tether.procs import Pinned
from tether.spec import Endpoint
from tether.transports.master import parent_death_wrapper

log = logging.getLogger("tether")

KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 3
CONNECT_TIMEOUT = 10
UP = "forwarding_success: all expected forwarding replies received"
REFUSED = "Permission denied"
# ssh's own chatter at DEBUG1: not why a link ended.
QUIET = ("debug", "Transferred:", "Bytes per second:", "Authenticated to")
REFUSALS_FATAL = 3  # logins refused in a row before the agent gives up (about 7 s)


class Link:
    """The agent's `ssh -R` to one relay, kept up."""

    def __init__(self, relay: Endpoint, argv: list[str], backoff: Backoff, says: str) -> None:
        self.relay = relay
        self.argv = argv
        self.says = says.encode()  # the announcement (announce.py), sent at each login
        self.backoff = backoff
        self.up = asyncio.Event()
        self.refused: str | None = None
        self.last_error: str | None = None
        self._process: Pinned | None = None

    async def keep(self) -> None:
        """Run ssh, again after each exit (with backoff), until cancelled or refused."""
        attempt = refusals = 0
        while True:
            attempt += 1
            said = await self._once()
            if self.up.is_set():
                attempt = 1  # it was up: the next outage starts its backoff afresh
            self.up.clear()
            last = said[-1] if said else "ssh exited"
            if any(REFUSED in line for line in said):
                refusals += 1
                # Once may be a relay that has not read a new enrolment yet; again and again
                # is a certificate revoked or expired, which no retry mends.
                if refusals >= REFUSALS_FATAL:
                    self.refused = f"relay {self.relay} refused this site's certificate"
                    return
            else:
                refusals = 0
            self.last_error = f"link to relay {self.relay} ended: {last}"
            log.warning("agent: %s", self.last_error)
            await asyncio.sleep(self.backoff.delay(attempt))

    async def _once(self) -> list[str]:
        process = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        self._process = Pinned.child(process.pid)
        said: list[str] = []
        try:
            # Its session on the relay reads this, then waits for the pipe's end: the pipe
            # stays open while the link lives.
            assert process.stdin is not None
            process.stdin.write(self.says)
            assert process.stderr is not None
            async for raw in process.stderr:
                line = visible(raw.decode(errors="replace").strip())
                if UP in line:
                    log.info("agent: linked to relay %s", self.relay)
                    self.up.set()
                elif line and not line.startswith(QUIET):
                    said = [*said[-20:], line]
            await process.wait()
        finally:
            if process.stdin is not None:
                process.stdin.close()
            self.stop()
        return said

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.signal(signal.SIGTERM)
            process.close()


class Agent:
    """The agent of the site ``enrolment`` names, serving ``targets``, its files in ``state``."""

    def __init__(self, enrolment: Enrolment, targets: Mapping[str, Endpoint], state: Path) -> None:
        if not targets:
            raise UsageError(
                "an agent needs at least one target",
                hint="give --target NAME=HOST:PORT or --targets-file",
            )
        self.enrolment = enrolment
        self.targets = dict(targets)
        self.state = state
        self.links: list[Link] = []
        self.sshd: Sshd | None = None

    def prepare(self) -> None:
        """Write the site sshd's and the links' files into ``state`` (a private directory)."""
        problem = strict_enough(self.state.parent)
        if problem is not None:
            raise UsageError(
                f"{self.state}: sshd would refuse every login: {problem}",
                hint="give --state-dir a directory only you (or root) can write to",
            )
        with contextlib.suppress(FileExistsError):
            os.mkdir(self.state, 0o700)
        os.chmod(self.state, 0o700)
        e = self.enrolment
        files = {
            "agent": e.agent_key,
            "agent-cert.pub": e.agent_certificate + "\n",
            "host": e.host_key,
            "host-cert.pub": e.host_certificate + "\n",
            "user_ca.pub": e.user_ca + "\n",
            "known_hosts": known_hosts_line(e.host_ca),
            "principals": site_principals(e.site, self.targets),
        }
        for name, text in files.items():
            write_private(self.state / name, text)
        port = free_port()
        write_private(
            self.state / "sshd_config",
            sshd_config(
                listen=Endpoint("127.0.0.1", port),
                user=_account(),
                host_key=self.state / "host",
                host_certificate=self.state / "host-cert.pub",
                user_ca=self.state / "user_ca.pub",
                principals=self.state / "principals",
            ),
        )
        self.sshd = Sshd("site", self.state / "sshd_config", Endpoint("127.0.0.1", port))
        says = Announcement(_account(), self.targets).encode()
        self.links = [
            Link(relay, self._ssh_argv(relay, port), Backoff(1.0, 30.0), says) for relay in e.relays
        ]

    def _ssh_argv(self, relay: Endpoint, sshd_port: int) -> list[str]:
        argv = [*parent_death_wrapper(), shutil.which("ssh") or "ssh", "-F", "/dev/null"]
        argv += ssh_options(
            key=self.state / "agent",
            certificate=self.state / "agent-cert.pub",
            known_hosts=self.state / "known_hosts",
            alias=RELAY_PRINCIPAL,
        )
        keepalive = {
            "ServerAliveInterval": KEEPALIVE_INTERVAL,
            "ServerAliveCountMax": KEEPALIVE_COUNT,
            "ConnectTimeout": CONNECT_TIMEOUT,
            "LogLevel": "DEBUG1",  # its "forwarding_success" line says the link is up
        }
        for name, value in keepalive.items():
            argv += ["-o", f"{name}={value}"]
        endpoint = f"127.0.0.1:{self.enrolment.endpoint_port}:127.0.0.1:{sshd_port}"
        argv += ["-T", "-R", endpoint, "-p", str(relay.port)]
        # The relay runs its announce command whatever this one asks for.
        account = self.enrolment.relay_account
        return [*argv, "-l", account, "--", relay.host, "announce"]

    async def run(self, on_ready: Callable[[], None], stop: StopRequest) -> int:
        """Serve until ``stop`` (0); AgentRefused if a relay refuses the site."""
        assert self.sshd is not None, "prepare() first"
        await self.sshd.check()
        await self.sshd.start()
        keeping = [asyncio.ensure_future(link.keep()) for link in self.links]
        try:
            ups = [asyncio.ensure_future(link.up.wait()) for link in self.links]
            stopping = asyncio.ensure_future(stop.event.wait())
            await asyncio.wait([*ups, *keeping, stopping], return_when=asyncio.FIRST_COMPLETED)
            for up in ups:
                up.cancel()
            self._check_refused()
            if not stop.event.is_set():
                on_ready()
                await asyncio.wait([*keeping, stopping], return_when=asyncio.FIRST_COMPLETED)
                self._check_refused()
            stopping.cancel()
        finally:
            for task in keeping:
                task.cancel()
            for link in self.links:
                link.stop()
            await self.sshd.stop()
        return 0

    def status(self) -> Status:
        """Ready while every relay link is up; reconnecting (and why) while one is not."""
        down = [link for link in self.links if not link.up.is_set()]
        if not down:
            return Status(state="ready", connections_active=len(self.links))
        return Status(
            state="reconnecting",
            connections_active=len(self.links) - len(down),
            last_error=down[0].last_error,
        )

    def _check_refused(self) -> None:
        for link in self.links:
            if link.refused is not None:
                raise AgentRefused(
                    f"{link.refused}: it was revoked or has expired",
                    hint="enrol the site again: tether gateway site add",
                )


def _account() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def free_port() -> int:
    """A port of 127.0.0.1 free now (the kernel's pick, released at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
