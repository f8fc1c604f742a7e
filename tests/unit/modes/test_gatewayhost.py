"""A gateway process hosted as a tunnel (gatewayhost.py): the service manager's watchdog is fed
while it serves, an agent with one relay of several linked included, and not once none is."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from tests.support.servers import free_port
from tests.support.systemd import NotifySocket
from tests.support.waiting import wait_until
from tether.modes.gatewayhost import Described, HostedService
from tether.modes.notify import Notifier
from tether.modes.report import QUIET
from tether.modes.signals import StopRequest
from tether.protocol import Status
from tether.registry import Registry
from tether.spec import Endpoint


class Agent:
    """An agent's stand-in: ready at once, its status the test's."""

    def __init__(self, status: Status) -> None:
        self.current = status
        self.asked = 0

    def status(self) -> Status:
        self.asked += 1
        return self.current

    async def run(self, on_ready: Callable[[], None], stop: StopRequest) -> int:
        on_ready()
        await stop.event.wait()
        return 0


def pings(manager: NotifySocket) -> int:
    manager.pending()
    return sum(n.text == "WATCHDOG=1" for n in manager.received)


async def test_the_watchdog_is_fed_while_one_relay_of_several_is_linked(tmp_path: Path) -> None:
    one_of_two = Status(state="reconnecting", connections_active=1, connections_total=2)
    agent = Agent(one_of_two)
    with NotifySocket(str(tmp_path / "notify")) as manager:
        hosted = HostedService(
            agent,
            Described("agent", "agent-lab", Endpoint("127.0.0.1", free_port()), "lab"),
            Registry(tmp_path / "run"),
            "foreground",
            QUIET,
            notifier=Notifier(manager.env, watchdog=0.01),
        )
        running = asyncio.ensure_future(hosted.run())
        try:
            await wait_until(lambda: pings(manager) >= 3, "pings while one relay is linked")
            agent.current = Status(state="reconnecting", connections_active=0, connections_total=2)
            await wait_until(
                lambda: agent.asked >= 3, "the status asked again"
            )  # a ping may be due
            fed, asked = pings(manager), agent.asked
            await wait_until(lambda: agent.asked >= asked + 5, "five more ticks")
            assert pings(manager) == fed, "the watchdog was fed with every relay down"
        finally:
            hosted.stop.set(0)
            assert await running == 0
