"""An agent's links to its relays: one `ssh -R` per distinct address that the enrolment's
relays resolve to, each kept up (``Link``), and the set of them following the names
(``Links``): looked up again every RESOLVE_INTERVAL, a new address gets a link, an address gone
has its link ended. A name that fails to resolve keeps the links it had: a DNS outage is not a
relay's.

Each link is supervised: keepalives (a relay gone silent is seen within 15 s), reconnects with
backoff, and a refusal of the agent's certificate (revoked, or expired) ends it for good, since
no retry can succeed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence

from tether.backoff import Backoff
from tether.errors import AgentRefused, visible
from tether.gateway.addresses import (
    MAX_ADDRESSES,
    RelayAddress,
    Resolver,
    resolve,
    system_resolver,
)
from tether.limits import raise_nofile
from tether.procs import Pinned
from tether.protocol import Status
from tether.spec import Endpoint

log = logging.getLogger("tether")

UP = "forwarding_success: all expected forwarding replies received"
REFUSED = "Permission denied"
# ssh's own chatter at DEBUG1: not why a link ended.
QUIET = ("debug", "Transferred:", "Bytes per second:", "Authenticated to")
REFUSALS_FATAL = 3  # logins refused in a row before the agent gives up (about 7 s)
STOP_GRACE = 3.0  # for a link's ssh to exit after SIGTERM, before SIGKILL
#: How often the relays' names are looked up again: how soon a relay added to a name is
#: linked, and one taken out of it is let go.
RESOLVE_INTERVAL = 30.0
#: The same while a name has never resolved: the agent has no link to that relay yet.
RESOLVE_RETRY = 5.0


class Link:
    """The agent's `ssh -R` to one relay address, kept up."""

    def __init__(
        self,
        relay: RelayAddress,
        argv: list[str],
        backoff: Backoff,
        says: str,
    ) -> None:
        self.relay = relay
        self.argv = argv
        self.says = says.encode()  # the announcement (announce.py), sent at each login
        self.backoff = backoff
        self.up = asyncio.Event()
        self.refused: str | None = None
        self.last_error: str | None = None
        #: Told when the link comes up or goes down (Links.changed).
        self.on_change: Callable[[], None] = lambda: None
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
            self.on_change()
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
        raise_nofile(process.pid)  # one socket per client session of the site it carries
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
                    self.on_change()
                elif line and not line.startswith(QUIET):
                    said = [*said[-20:], line]
            await process.wait()
        finally:
            if process.stdin is not None:
                process.stdin.close()
            self.stop()
            if process.returncode is None:  # cancelled: ssh is reaped before the link is over
                try:
                    await asyncio.wait_for(process.wait(), STOP_GRACE)
                except TimeoutError:
                    process.kill()
                    await process.wait()
        return said

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.signal(signal.SIGTERM)
            process.close()


#: Makes the link to one address of a relay (not started).
LinkFactory = Callable[[RelayAddress], Link]


class Links:
    """A link to each address ``relays`` (as an enrolment names them) resolve to, made by
    ``make``; ``changed`` is set whenever one comes up, goes down, ends, or is added or let
    go."""

    def __init__(
        self,
        relays: Sequence[Endpoint],
        make: LinkFactory,
        resolver: Resolver = system_resolver,
    ) -> None:
        self.relays = tuple(relays)
        self.make = make
        self.resolver = resolver
        self.links: dict[Endpoint, Link] = {}
        self.changed = asyncio.Event()
        self._keeping: dict[Endpoint, asyncio.Task[None]] = {}
        # Per relay as named: its addresses at the last lookup that found any; why the last one
        # failed, while it fails.
        self._found: dict[Endpoint, list[RelayAddress]] = {}
        self._failing: dict[Endpoint, str] = {}

    async def follow(self) -> None:
        """Look the relays up now, then again and again, until cancelled."""
        while True:
            await self.refresh()
            unresolved = any(relay not in self._found for relay in self.relays)
            await asyncio.sleep(RESOLVE_RETRY if unresolved else RESOLVE_INTERVAL)

    async def refresh(self) -> None:
        """Look the relays up; a link for each address new since, none for one gone."""
        resolved = await resolve(self.relays, self.resolver)
        for relay in self.relays:
            why = resolved.failures.get(relay)
            if why is None:
                self._found[relay] = [a for a in resolved.addresses if a.named == relay]
                self._failing.pop(relay, None)
                continue
            failure = f"cannot resolve relay {relay.host}: {why}"
            if self._failing.get(relay) != failure:
                kept = "; its links stay" if relay in self._found else ""
                log.warning("agent: %s%s", failure, kept)
            self._failing[relay] = failure
        wanted: dict[Endpoint, RelayAddress] = {}
        for named in self.relays:
            for found in self._found.get(named, []):
                if len(wanted) < MAX_ADDRESSES:
                    wanted.setdefault(found.address, found)
        for address in [a for a in self.links if a not in wanted]:
            log.warning(
                "agent: relay %s is no longer named; its link ends", self.links[address].relay
            )
            self._end(address)
        for address, found in wanted.items():
            if address not in self.links:
                self._start(found)

    def _start(self, relay: RelayAddress) -> None:
        link = self.make(relay)
        link.on_change = self.changed.set
        task = asyncio.ensure_future(link.keep())
        task.add_done_callback(lambda _: self.changed.set())
        self.links[relay.address] = link
        self._keeping[relay.address] = task
        self.changed.set()

    def _end(self, address: Endpoint) -> None:
        link = self.links.pop(address)
        self._keeping.pop(address).cancel()
        link.stop()
        self.changed.set()

    async def close(self) -> None:
        """End every link, and wait until each has let go of its ssh."""
        keeping = list(self._keeping.values())
        for address in list(self.links):
            self._end(address)
        await asyncio.gather(*keeping, return_exceptions=True)

    def any_up(self) -> bool:
        return any(link.up.is_set() for link in self.links.values())

    def check(self) -> None:
        """Raise what ended a link for good: AgentRefused for a refused certificate; a link's
        own failure as it is (never expected)."""
        for task in self._keeping.values():
            failure = task.exception() if task.done() and not task.cancelled() else None
            if failure is not None:
                raise failure
        for link in self.links.values():
            if link.refused is not None:
                raise AgentRefused(
                    f"{link.refused}: it was revoked or has expired",
                    hint="enrol the site again: tether gateway site add",
                )

    def status(self) -> Status:
        """Ready while every relay address is linked; reconnecting, naming each relay that is
        not (and each name that resolves to nothing), while one is not. The connections are the
        links: up, of all."""
        links = list(self.links.values())
        up = sum(1 for link in links if link.up.is_set())
        down = [
            link.last_error or f"link to relay {link.relay}: not up yet"
            for link in links
            if not link.up.is_set()
        ]
        down += [why for relay, why in self._failing.items() if relay not in self._found]
        if not down:
            return Status(state="ready", connections_active=up, connections_total=len(links))
        return Status(
            state="reconnecting",
            connections_active=up,
            connections_total=len(links),
            last_error="; ".join(down),
        )
