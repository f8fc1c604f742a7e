"""Run mode: open the tunnels, run one command with their addresses, exit with its status."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import Sequence

from tether.errors import UsageError
from tether.modes.command import Command
from tether.modes.drain import Ending, bound_ending, drain_for
from tether.modes.hosted import HostedTunnel, start_all
from tether.modes.pidfile import NO_FILES, PidFile, ReadyFiles
from tether.modes.report import Reporter
from tether.modes.signals import StopRequest, capture_stop_signals
from tether.registry import Registry
from tether.spec import TunnelSpec


def env_name(name: str) -> str:
    """TETHER_<NAME>_ prefix part: upper case, anything not alphanumeric becomes '_'."""
    return re.sub(r"[^A-Z0-9]", "_", name.upper())


def check_env_names(names: Sequence[str]) -> None:
    """Refuse tunnel names that would share variables (x-1 and x.1 are both TETHER_X_1_)."""
    seen: dict[str, str] = {}
    for name in names:
        other = seen.setdefault(env_name(name), name)
        if other != name:
            raise UsageError(
                f"tunnels {other!r} and {name!r} would share the variables "
                f"TETHER_{env_name(name)}_*; give one of them another name"
            )


def command_env(tunnels: Sequence[HostedTunnel]) -> dict[str, str]:
    """The variables the command sees; the unprefixed ones describe the first tunnel, and the
    proxy variables the first SOCKS tunnel."""
    env: dict[str, str] = {}
    proxy: dict[str, str] = {}
    for index, hosted in enumerate(tunnels):
        address = hosted.tunnel.address
        assert address is not None
        values = {
            "HOST": address.host,
            "PORT": str(address.port),
            "ADDR": str(address),
            "ID": hosted.id,
        }
        if hosted.spec.socks:
            values["SOCKS"] = str(address)
            # socks5h: the client passes names on, to be resolved on the far side. curl reads
            # all_proxy before ALL_PROXY, so a user's own all_proxy would otherwise win.
            url = f"socks5h://{address}"
            proxy = proxy or {"TETHER_SOCKS": str(address), "ALL_PROXY": url, "all_proxy": url}
        prefixes = [f"TETHER_{env_name(hosted.spec.name)}_"] + (["TETHER_"] if index == 0 else [])
        for prefix in prefixes:
            env.update({prefix + key: value for key, value in values.items()})
    return {**env, **proxy}


async def _follow(
    command: Command, tunnels: Sequence[HostedTunnel], stop: StopRequest, asked: list[bool]
) -> tuple[int, Ending]:
    """Wait for the command; its status, and how the run ended. A stop signal was already
    passed on to it (``stop.forward``); a tunnel that ends first ends the command: a lost
    tunnel then raises TunnelLostError, a lifetime bound gives the command's own status."""
    exited = asyncio.ensure_future(command.wait())
    stopping = asyncio.ensure_future(stop.wait())
    watchers = [asyncio.ensure_future(t.tunnel.wait_ended()) for t in tunnels]
    try:
        await asyncio.wait([exited, stopping, *watchers], return_when=asyncio.FIRST_COMPLETED)
        if exited.done():
            return exited.result(), "command"
        ending: Ending
        if stopping.done():
            ending = "stop" if asked else "signal"
            await command.end(None)
        else:
            await command.end(signal.SIGTERM)
            ending = bound_ending(next(w for w in watchers if w.done()).result())
        return await exited, ending
    finally:
        for task in (exited, stopping, *watchers):
            task.cancel()


def exit_status(returncode: int) -> int:
    """A child killed by signal N gives 128+N, as shells report it."""
    return 128 - returncode if returncode < 0 else returncode


async def run_command(
    specs: Sequence[TunnelSpec],
    registry: Registry,
    command: str | Sequence[str],
    reporter: Reporter,
    *,
    files: ReadyFiles = NO_FILES,
) -> int:
    """Open every tunnel, run ``command`` (a shell string or an argv list), return its status.

    Every ending (the command's own, a signal, `tether stop`, a lifetime bound, a lost tunnel)
    leaves no process of the command behind.
    """
    check_env_names([spec.name for spec in specs])
    stop = StopRequest()
    asked: list[bool] = []  # not empty once `tether stop` asked: the command still gets SIGTERM

    def on_stop() -> None:
        asked.append(True)
        stop.set(signal.SIGTERM)

    with capture_stop_signals(stop):
        tunnels = [
            HostedTunnel(spec, registry, "run", on_stop=on_stop, on_phase=reporter.phase)
            for spec in specs
        ]
        await start_all(tunnels, stop)
        written: list[PidFile] = []
        ending: Ending = "lost"  # or any failure: nothing graceful to wait for
        try:
            records = [t.record() for t in tunnels]
            written = files.create(records)
            reporter.ready(records)
            if stop.signum is not None:  # stopped before the command could start
                ending = "stop" if asked else "signal"
                return 128 + stop.signum
            child = Command.spawn(command, {**os.environ, **command_env(tunnels)})
            stop.forward = child.send
            try:
                returncode, ending = await _follow(child, tunnels, stop, asked)
            finally:
                stop.forward = None
                await child.end(signal.SIGTERM)  # whatever the command left in its group
        finally:
            await asyncio.gather(*(t.close(drain_for(t.spec, "run", ending)) for t in tunnels))
            for file in written:
                file.remove()
    return exit_status(returncode)
