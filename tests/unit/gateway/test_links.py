"""An agent's links (links.py): one per address its relays' names resolve to, following the
names as they change, each kept up on its own; the status names each relay that is down.

Each link runs a stand-in for ssh: it says what ssh says once its forward is up (or why it
failed), and holds until its stdin ends, as the agent's `ssh -R` does."""

from __future__ import annotations

import asyncio
import resource
import socket
import sys
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.waiting import wait_until
from tether.backoff import Backoff
from tether.errors import AgentRefused
from tether.gateway import links as links_module
from tether.gateway.addresses import RelayAddress
from tether.gateway.links import UP, Link, Links
from tether.spec import Endpoint

LINKED = f"import sys; print('debug1: {UP}', file=sys.stderr, flush=True); sys.stdin.read()"
REFUSED = "import sys; print('agent@relay: Permission denied (publickey).', file=sys.stderr)"
UNREACHABLE = "import sys; print('ssh: connect to host: Connection refused', file=sys.stderr)"
NAMED = Endpoint("relays.example", 2222)
LOWERED = 256  # a soft descriptor limit below the hard one


class Names:
    """A resolver whose answers the test changes: relays.example's addresses, or a failure."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = list(addresses)
        self.failing = False

    async def __call__(self, host: str, port: int) -> list[str]:
        if self.failing:
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return list(self.addresses) if host == NAMED.host else [host]


def stand_in(behaviour: dict[str, str]) -> links_module.LinkFactory:
    """Links whose ssh does what ``behaviour`` says for their address (linked by default)."""

    def make(relay: RelayAddress) -> Link:
        script = behaviour.get(relay.address.host, LINKED)
        return Link(relay, [sys.executable, "-c", script], Backoff(0.01, 0.05), "{}\n")

    return make


@pytest.fixture
async def names() -> AsyncIterator[Names]:
    yield Names("10.0.0.1", "10.0.0.2")


def linked(links: Links) -> list[str]:
    return sorted(address.host for address, link in links.links.items() if link.up.is_set())


async def test_a_link_per_address_following_the_names(names: Names) -> None:
    links = Links([NAMED], stand_in({}), names)
    try:
        await links.refresh()
        await wait_until(lambda: linked(links) == ["10.0.0.1", "10.0.0.2"], "both links up")
        status = links.status()
        assert (status.state, status.connections_active, status.connections_total) == (
            "ready",
            2,
            2,
        )
        kept, gone = (
            links.links[Endpoint("10.0.0.2", 2222)],
            links.links[Endpoint("10.0.0.1", 2222)],
        )
        names.addresses = ["10.0.0.2", "10.0.0.3"]
        await links.refresh()
        assert sorted(a.host for a in links.links) == ["10.0.0.2", "10.0.0.3"]
        assert links.links[Endpoint("10.0.0.2", 2222)] is kept  # not restarted
        assert gone._process is None  # its ssh was ended
        await wait_until(lambda: linked(links) == ["10.0.0.2", "10.0.0.3"], "the new link up")
        # A lookup that fails is no relay's failure: the links stay.
        names.failing = True
        await links.refresh()
        assert linked(links) == ["10.0.0.2", "10.0.0.3"] and links.status().state == "ready"
    finally:
        await links.close()
    assert links.links == {}


async def test_following_picks_up_a_new_address(
    names: Names, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(links_module, "RESOLVE_INTERVAL", 0.2)
    links = Links([NAMED, Endpoint("10.0.0.9", 22)], stand_in({}), names)
    task = asyncio.ensure_future(links.follow())
    try:
        await wait_until(lambda: len(linked(links)) == 3, "three links")
        names.addresses.append("10.0.0.4")
        await wait_until(lambda: "10.0.0.4" in linked(links), "the added relay's link")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await links.close()


async def test_the_status_names_each_relay_that_is_down(names: Names) -> None:
    names.addresses = ["10.0.0.1", "10.0.0.3"]
    links = Links([NAMED, Endpoint("gone.example", 22)], stand_in({"10.0.0.3": UNREACHABLE}), names)

    async def partly(host: str, port: int) -> list[str]:
        if host == "gone.example":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return await names(host, port)

    links.resolver = partly
    try:
        await links.refresh()
        down = links.links[Endpoint("10.0.0.3", 2222)]
        await wait_until(lambda: linked(links) == ["10.0.0.1"], "one link up")
        await wait_until(lambda: down.last_error is not None, "the other one's failure")
        status = links.status()
        assert (status.state, status.connections_active, status.connections_total) == (
            "reconnecting",
            1,
            2,
        )
        assert status.last_error is not None
        assert "link to relay relays.example:2222 (10.0.0.3) ended: " in status.last_error
        assert "Connection refused" in status.last_error
        assert "cannot resolve relay gone.example" in status.last_error
        assert "\n" not in status.last_error
        links.check()  # down is not ended: nothing to raise
    finally:
        await links.close()


async def test_a_refused_certificate_ends_the_links_for_good(names: Names) -> None:
    links = Links([NAMED], stand_in({"10.0.0.2": REFUSED}), names)
    try:
        await links.refresh()

        def refused() -> bool:
            try:
                links.check()
            except AgentRefused:
                return True
            return False

        await wait_until(refused, "the refusal to end it")
        with pytest.raises(AgentRefused, match=r"relay relays.example:2222 \(10.0.0.2\) refused"):
            links.check()
    finally:
        await links.close()


@pytest.fixture
def lowered_limit() -> Iterator[int]:
    """This process's soft descriptor limit lowered below its hard one, for the test; the hard
    one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= LOWERED:
        pytest.skip(f"the hard descriptor limit is {hard}: nothing to raise to")
    resource.setrlimit(resource.RLIMIT_NOFILE, (LOWERED, hard))
    try:
        yield hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_a_links_ssh_may_hold_a_socket_per_session(lowered_limit: int) -> None:
    # It carries every client session of the site: its soft limit is raised to the hard one,
    # and the agent's own is left as it was.
    links = Links([Endpoint("10.0.0.1", 2222)], stand_in({}), Names())
    try:
        await links.refresh()
        await wait_until(lambda: linked(links) == ["10.0.0.1"], "the link up")
        process = links.links[Endpoint("10.0.0.1", 2222)]._process
        assert process is not None
        assert resource.prlimit(process.pid, resource.RLIMIT_NOFILE)[0] == lowered_limit
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == LOWERED
    finally:
        await links.close()
