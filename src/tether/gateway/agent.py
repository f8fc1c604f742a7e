"""A site's agent (`tether gateway agent`): the site's own sshd on loopback, and one outbound
`ssh -R` to each relay that puts that sshd on the site's endpoint there. It makes no inbound
connection and opens no port but loopback's.

A relay of the enrolment may be a name of several addresses: each is a relay, linked on its own
(links.py), and the names are looked up again as the agent runs. The agent is ready once one
relay is linked. A refusal of the agent's certificate (revoked, or expired) ends the agent with
exit 5, since no retry can succeed. The site's sshd scopes each client certificate to the one
target it names (sshdconfig.site_principals).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import socket
from collections.abc import Callable, Mapping
from pathlib import Path

from tether.backoff import Backoff
from tether.errors import UsageError
from tether.files import write_private, write_private_files
from tether.gateway.addresses import RelayAddress, Resolver, system_resolver
from tether.gateway.announce import Announcement
from tether.gateway.enrolment import Enrolment
from tether.gateway.hops import known_hosts_lines, ssh_options
from tether.gateway.links import Link, Links
from tether.gateway.names import RELAY_PRINCIPAL
from tether.gateway.sshd import Sshd, strict_enough
from tether.gateway.sshdconfig import site_principals, sshd_config
from tether.modes.signals import StopRequest
from tether.protocol import Status
from tether.spec import Endpoint
from tether.transports.master import parent_death_wrapper

KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 3
CONNECT_TIMEOUT = 10
# A link's reconnects: 1 s after its first failure, doubling up to this.
LINK_BACKOFF_MAX = 30.0


class Agent:
    """The agent of the site ``enrolment`` names, serving ``targets``, its files in ``state``."""

    def __init__(
        self,
        enrolment: Enrolment,
        targets: Mapping[str, Endpoint],
        state: Path,
        *,
        resolver: Resolver = system_resolver,
    ) -> None:
        if not targets:
            raise UsageError(
                "an agent needs at least one target",
                hint="give --target NAME=HOST:PORT or --targets-file",
            )
        self.enrolment = enrolment
        self.targets = dict(targets)
        self.state = state
        self.resolver = resolver
        self.links: Links | None = None
        self.sshd: Sshd | None = None

    def prepare(self) -> None:
        """Write the site sshd's and the links' files into ``state`` (a private directory)."""
        problem = strict_enough(self.state.parent)
        if problem is not None:
            raise UsageError(
                f"{self.state}: sshd would refuse every login: {problem}",
                hint="give --state-dir a directory only you (or root) can write to",
            )
        e = self.enrolment
        files = {
            "agent": e.agent_key,
            "agent-cert.pub": e.agent_certificate + "\n",
            "host": e.host_key,
            "host-cert.pub": e.host_certificate + "\n",
            # From the enrolment only, never from a relay: a relay that could name a user CA
            # could mint access to this site. A CA rollover reaches sites by re-enrolment.
            "user_ca.pub": "".join(f"{ca}\n" for ca in e.user_cas),
            "known_hosts": known_hosts_lines(e.host_cas),
            "principals": site_principals(e.site, self.targets),
        }
        write_private_files(self.state, files)
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

        def link(relay: RelayAddress) -> Link:
            return Link(
                relay, self._ssh_argv(relay.address, port), Backoff(1.0, LINK_BACKOFF_MAX), says
            )

        self.links = Links(e.relays, link, self.resolver)

    def _ssh_argv(self, relay: Endpoint, sshd_port: int) -> list[str]:
        """ssh to one address of a relay: its host certificate is checked under the name it
        carries (HostKeyAlias), whatever the address."""
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
        """Serve until ``stop`` (0), ready once a relay is linked; AgentRefused if a relay
        refuses the site."""
        assert self.sshd is not None and self.links is not None, "prepare() first"
        links = self.links
        await self.sshd.check()
        await self.sshd.start()
        stopping = asyncio.ensure_future(stop.event.wait())
        following = asyncio.ensure_future(links.follow())
        try:
            ready = False
            while not stop.event.is_set():
                links.changed.clear()
                links.check()
                if not ready and links.any_up():
                    ready = True
                    on_ready()
                changed = asyncio.ensure_future(links.changed.wait())
                await asyncio.wait(
                    [changed, stopping, following], return_when=asyncio.FIRST_COMPLETED
                )
                changed.cancel()
                if following.done():
                    following.result()  # its failure (lookups' own are caught): never expected
        finally:
            stopping.cancel()
            following.cancel()
            await links.close()
            await self.sshd.stop()
        return 0

    def status(self) -> Status:
        """Ready while every relay is linked; reconnecting (naming each that is not) while one
        is not, the links up of all as its connections."""
        if self.links is None:
            return Status(state="connecting")
        return self.links.status()


def _account() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def free_port() -> int:
    """A port of 127.0.0.1 free now (the kernel's pick, released at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
