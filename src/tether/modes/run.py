"""Run mode: open the tunnels, run one command with their addresses, exit with its status."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import Callable, Sequence
from pathlib import Path

from tether.errors import CommandError
from tether.modes.foreground import start_all
from tether.modes.hosted import HostedTunnel
from tether.modes.pidfile import remove_pid_file, write_pid_file
from tether.modes.signals import STOP_SIGNALS, StopRequest, capture_stop_signals
from tether.registry import Registry
from tether.spec import TunnelSpec
from tether.transports.base import PhaseCallback


KILL_GRACE = 5.0


def env_name(name: str) -> str:
    """TETHER_<NAME>_ prefix part: upper case, anything not alphanumeric becomes '_'."""
    return re.sub(r"[^A-Z0-9]", "_", name.upper())


def command_env(tunnels: Sequence[HostedTunnel]) -> dict[str, str]:
    """The variables the command sees; the unprefixed ones describe the first tunnel."""
    env: dict[str, str] = {}
    for index, hosted in enumerate(tunnels):
        address = hosted.tunnel.address
        assert address is not None
        values = {
            "HOST": address.host,
            "PORT": str(address.port),
            "ADDR": str(address),
            "ID": hosted.id,
        }
        prefixes = [f"TETHER_{env_name(hosted.spec.name)}_"] + (["TETHER_"] if index == 0 else [])
        for prefix in prefixes:
            env.update({prefix + key: value for key, value in values.items()})
    return env


def _forward(child: asyncio.subprocess.Process, signum: int) -> None:
    if child.returncode is None:
        child.send_signal(signum)


async def _follow(child: asyncio.subprocess.Process, tunnels: Sequence[HostedTunnel]) -> int:
    """Wait for the command. If a tunnel ends first, the command is stopped: a lost tunnel then
    raises TunnelLostError, a lifetime bound gives the command's own status."""
    exited = asyncio.ensure_future(child.wait())
    watchers = [asyncio.ensure_future(t.tunnel.wait_ended()) for t in tunnels]
    try:
        await asyncio.wait([exited, *watchers], return_when=asyncio.FIRST_COMPLETED)
        if exited.done():
            return exited.result()
        await terminate(child)
        next(w for w in watchers if w.done()).result()
        return await exited
    finally:
        for watcher in watchers:
            watcher.cancel()


async def terminate(child: asyncio.subprocess.Process, grace: float = KILL_GRACE) -> None:
    """SIGTERM, then SIGKILL if the command has not exited after ``grace`` seconds."""
    if child.returncode is not None:
        return
    child.terminate()
    try:
        await asyncio.wait_for(child.wait(), grace)
    except TimeoutError:
        child.kill()
        await child.wait()


def exit_status(returncode: int) -> int:
    """A child killed by signal N gives 128+N, as shells report it."""
    return 128 - returncode if returncode < 0 else returncode


async def run_command(
    specs: Sequence[TunnelSpec],
    registry: Registry,
    command: str | Sequence[str],
    *,
    on_ready: Callable[[Sequence[HostedTunnel]], None],
    on_phase: PhaseCallback | None = None,
    pid_file: Path | None = None,
) -> int:
    """Open every tunnel, run ``command`` (a shell string or an argv list), return its status."""
    stop = StopRequest()
    child: asyncio.subprocess.Process | None = None

    def stop_child() -> None:
        stop.set(signal.SIGTERM)
        if child is not None and child.returncode is None:
            child.terminate()

    with capture_stop_signals(stop):
        tunnels = [
            HostedTunnel(spec, registry, "run", on_stop=stop_child, on_phase=on_phase)
            for spec in specs
        ]
        await start_all(tunnels, stop)
        try:
            if pid_file is not None:
                write_pid_file(pid_file)
            on_ready(tunnels)
            env = {**os.environ, **command_env(tunnels)}
            try:
                if isinstance(command, str):
                    child = await asyncio.create_subprocess_shell(command, env=env)
                else:
                    child = await asyncio.create_subprocess_exec(*command, env=env)
            except OSError as exc:
                program = command if isinstance(command, str) else command[0]
                raise CommandError(f"cannot run {program!r}: {exc.strerror}") from None
            loop = asyncio.get_running_loop()
            for signum in STOP_SIGNALS:
                # From now on a signal is the command's to handle; we follow its exit.
                loop.add_signal_handler(signum, _forward, child, signum)
            returncode = await _follow(child, tunnels)
        finally:
            await asyncio.gather(*(t.close() for t in tunnels))
            if pid_file is not None:
                remove_pid_file(pid_file)
    return exit_status(returncode)
