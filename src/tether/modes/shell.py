"""Shell mode: tunnels that live inside an interactive tether process until stopped or exit."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from tether.errors import TetherError
from tether.modes.drain import Ending, bound_ending, drain_for
from tether.modes.hosted import HostedTunnel
from tether.modes.loopthread import LoopThread
from tether.registry import Registry
from tether.spec import TunnelSpec

log = logging.getLogger("tether")


class ShellSession:
    """Runs an event loop in a helper thread so the prompt can block on input meanwhile.

    Tunnels are registered with mode "shell": other processes list them and can stop them
    through their control sockets, which this loop serves.
    """

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.tunnels: dict[str, HostedTunnel] = {}
        self._watchers: set[asyncio.Task[None]] = set()
        # The prompt's thread reads stdin and handles the signals.
        self._thread = LoopThread("tether-shell")
        self._loop = self._thread.loop
        self._call = self._thread.call
        self._hurry = asyncio.Event()  # set in the loop's thread only

    def start(self, spec: TunnelSpec) -> HostedTunnel:
        """Open a tunnel in this process; returns once it is ready."""
        holder: list[HostedTunnel] = []

        async def on_stop() -> None:  # a `tether stop` from any process, in the loop thread
            await self._close(holder[0], "stop")

        hosted = HostedTunnel(spec, self.registry, "shell", on_stop=on_stop)
        hosted.hurry = self._hurry
        holder.append(hosted)
        self._call(hosted.start())
        self.tunnels[hosted.id] = hosted
        self._loop.call_soon_threadsafe(self._watch, hosted)
        return hosted

    def _watch(self, hosted: HostedTunnel) -> None:
        async def watch() -> None:
            ending: Ending
            try:
                reason = await hosted.tunnel.wait_ended()
                ending = bound_ending(reason)
            except TetherError as exc:
                reason, ending = exc.message, "lost"
            if hosted.id in self.tunnels:
                log.warning("%s (%s) ended: %s", hosted.spec.name, hosted.id, reason)
                await self._close(hosted, ending)

        task = self._loop.create_task(watch())
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    def owns(self, entry_id: str) -> bool:
        return entry_id in self.tunnels

    def stop(self, entry_id: str) -> None:
        hosted = self.tunnels.get(entry_id)
        if hosted is not None:
            self._call(self._close(hosted, "stop"))

    async def _close(self, hosted: HostedTunnel, ending: Ending) -> None:
        self.tunnels.pop(hosted.id, None)
        await hosted.close(drain_for(hosted.spec, "shell", ending))

    def hurry(self) -> None:
        """End every drain at once (a stop signal while the session closes); from any thread,
        a signal handler's included."""
        with contextlib.suppress(RuntimeError):  # the loop is closed already: nothing to hurry
            self._loop.call_soon_threadsafe(self._hurry.set)

    def close(self) -> None:
        """Close every tunnel of the session and stop the loop."""

        async def close_all() -> None:
            for task in self._watchers:
                task.cancel()
            await asyncio.gather(*self._watchers, return_exceptions=True)
            await asyncio.gather(*(self._close(h, "closed") for h in list(self.tunnels.values())))

        try:
            self._call(close_all())
        finally:
            self._thread.close()
