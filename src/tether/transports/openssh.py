"""The OpenSSH engine: the bytes move inside OpenSSH's own ssh, run as a private ControlMaster.

tether starts `ssh -M -N` with a control socket of its own (master.py) and a config written for
it (masterconfig.py), and feeds it each accepted socket through the mux protocol (mux.py): the
master forwards it to the target with the speed, the config and the keys of `ssh -L`, and tether
never touches the bytes. tether keeps the listener, readiness, reconnects, drain and the counts
(TCP_INFO, see handoff.py).
"""

from __future__ import annotations

import functools
import logging
import socket
from collections.abc import Callable
from pathlib import Path

from tether.errors import ConfigError, TransportUnreachableError, describe
from tether.spec import Endpoint, SshOptions, Via
from tether.transports import masterspawn, mux, prelogin, sharedmaster, sshexit
from tether.transports.base import Forwarding, HandoffTransport, LossCallback, PhaseCallback
from tether.transports.master import Master, parent_death_wrapper
from tether.transports.masterspawn import MasterPaths
from tether.transports.sharedmaster import SharedMaster
from tether.transports.masterconfig import available, destination, master_argv, write_config
from tether.transports.sshsetup import check_files, target_error
from tether.transports.workdir import Workdir

log = logging.getLogger("tether")

# What ssh -G names when the server is reached through something else: no address to watch.
PROXIES = ("proxyjump", "proxycommand")


class _Forwarding:
    """The control connection of one forward: it closes when the forward is over, and when
    the master dies."""

    def __init__(self, control: socket.socket, master: Master | SharedMaster) -> None:
        self.control = control
        self.master = master

    async def ended(self) -> bool:
        await mux.forward_ended(self.control)
        return not self.master.exiting()

    def close(self) -> None:
        self.control.close()


class OpenSshTransport(HandoffTransport):
    """Each local connection is handed to an OpenSSH ControlMaster: one shared by the user's
    tunnels to the same server (sharedmaster.py), or the tunnel's own (master.py)."""

    engine = "openssh"
    # A master shared with the user's other tunnels (sharedmaster.py), where the options allow.
    shareable = True

    def __init__(
        self, via: Via, options: SshOptions, *, trace: Callable[[str], None] | None = None
    ) -> None:
        self.via = via
        self.options = options
        self.label = str(via)
        # tether diagnose: the master logs at DEBUG1 (its own connection only, not a
        # ProxyJump hop's) and each line of it goes to ``trace`` as it comes. Its master is
        # its own: a shared one says nothing on tether's stderr.
        self._trace = trace
        self._master: Master | SharedMaster | None = None
        self._workdir: Workdir | None = None
        self._address: tuple[str, int] | None = None
        self._address_known = False

    @property
    def shared_master(self) -> str | None:
        """The id of the shared master the tunnel uses (what `tether list` shows), if it does."""
        return self._master.id if isinstance(self._master, SharedMaster) else None

    async def connect(
        self, on_phase: PhaseCallback | None = None, on_lost: LossCallback | None = None
    ) -> None:
        await self.close()  # a reconnect replaces what is left of the old master
        check_files(self.options)
        self._workdir = Workdir()
        try:
            config = await self.prepare(self._workdir.path)
            if self.shares() and self.runtime is not None:
                self._master = await self._lease(config, on_phase, on_lost, self.runtime)
        except BaseException:
            await self.close()
            raise
        if self._master is None:
            await self._start_own(config, on_phase, on_lost)
        else:  # the shared master's config is beside it: nothing of this one is left to kill
            self._workdir.remove()
            self._workdir = None

    def shares(self) -> bool:
        """Whether the tunnel shares a master: one registered (``runtime`` set: the tunnels of
        a registry share, and `tether list` shows them), that may, and that does not trace its
        master's every line (tether diagnose)."""
        return (
            self.shareable
            and self.options.share_master
            and self._trace is None
            and self.runtime is not None
        )

    async def _lease(
        self,
        config: Path,
        on_phase: PhaseCallback | None,
        on_lost: LossCallback | None,
        runtime: Path,
    ) -> SharedMaster | None:
        """A lease on the shared master of ``runtime``'s tunnels for this connection, started
        if none runs; None where masters cannot be shared (the tunnel then starts its own)."""
        try:
            directory = masterspawn.directory(runtime)
        except masterspawn.Unshareable as exc:
            log.warning("%s: this tunnel logs in on its own", exc)
            return None
        argv = self.ssh_argv(config, Path("/nonexistent"))
        config_text = config.read_bytes()
        # The start asked ssh -G already if it began the login (prelogin.py): its key is the
        # one that finds that login.
        asked = prelogin.asked(config_text, argv, config)
        resolved = asked[0] if asked else await sshexit.resolve(argv)
        if "hostname" not in resolved:  # ssh cannot read the config: its own start says why
            return None
        self._address, self._address_known = address_of(resolved), True
        key = asked[1] if asked else masterspawn.key(resolved, argv[0], runtime)
        place = MasterPaths(directory, key)
        linger = self.options.master_linger
        argv = self.ssh_argv(place.config, place.control, linger=linger, log_file=place.log)
        heard = None if on_phase is None else functools.partial(on_phase, "authenticating")
        leased = await sharedmaster.lease(place, config_text, argv, heard, on_lost)
        if isinstance(leased, str) and self._address is None:
            # Through a ProxyJump or ProxyCommand: ssh gives the proxy of a ControlPersist
            # master no stderr, and the hop's own words (a refused login) are lost. A master of
            # the tunnel's own tries once more, and says them.
            log.debug("the shared ssh master did not start: %s", leased)
            return None
        if isinstance(leased, str):
            raise await sshexit.startup_error(leased, resolved, self.label)
        return leased

    async def _start_own(
        self, config: Path, on_phase: PhaseCallback | None, on_lost: LossCallback | None
    ) -> None:
        """Start a master for this tunnel alone, which dies with it."""
        assert self._workdir is not None
        control = self._workdir.path / "control"
        argv = [*parent_death_wrapper(), *self.ssh_argv(config, control)]
        master = Master(argv, control, on_lost, on_line=self._trace)
        self._master = master
        try:
            await master.started(
                None if on_phase is None else functools.partial(on_phase, "authenticating")
            )
        except BaseException:
            await self.close()
            raise
        if master.failure is not None:  # it exited before its socket answered
            try:
                resolved = await sshexit.resolve(self.ssh_argv(config, Path("/nonexistent")))
                error = await sshexit.startup_error(master.stderr_text(), resolved, self.label)
            finally:
                await self.close()
            raise error

    async def prepare(self, workdir: Path) -> Path:
        """Write the master's config into ``workdir`` (private to this connection); its path."""
        return write_config(workdir / "config", self.options)

    async def server_address(self) -> tuple[str, int] | None:
        """Asked once of `ssh -G`, with the master's own config and arguments."""
        if not self._address_known:
            self._address = await self._resolve_address()
            self._address_known = True
        return self._address

    async def _resolve_address(self) -> tuple[str, int] | None:
        try:
            workdir = Workdir()
        except OSError:
            return None
        try:
            config = write_config(workdir.path / "config", self.options)
            resolved = await sshexit.resolve(self.ssh_argv(config, Path("/nonexistent")))
        except (OSError, ConfigError):
            return None
        finally:
            workdir.remove()
        return address_of(resolved)

    def ssh_argv(
        self,
        config: Path,
        control: Path,
        *,
        linger: float | None = None,
        log_file: Path | None = None,
    ) -> list[str]:
        """The master's command line (masterconfig.master_argv)."""
        traced = self._trace is not None
        whom = self.destination()
        return master_argv(config, control, whom, linger=linger, log_file=log_file, traced=traced)

    def destination(self) -> list[str]:
        """The last words of an ssh command line: whom the master logs in to."""
        return destination(self.via)

    async def forward(self, target: Endpoint, sock: socket.socket) -> Forwarding:
        master = self._master
        if master is None or master.failure is not None:
            raise TransportUnreachableError(f"SSH master for {self.via} is not running")
        try:
            inbox = await mux.start_forward(str(master.control), target.host, target.port, sock)
        except mux.Unanswered:
            # Stopped or hung: it is lost, and its death (by SIGKILL, which even a stopped
            # process cannot ignore) is what the tunnel reconnects from.
            silent = f"did not answer within {mux.MUX_ANSWER_TIMEOUT:g}s"
            master.unresponsive(silent)
            raise TransportUnreachableError(f"SSH master for {self.via} {silent}") from None
        except (OSError, mux.MuxError) as exc:
            reason = exc.reason if isinstance(exc, mux.MuxError) else describe(exc)
            raise TransportUnreachableError(
                f"SSH master for {self.via} does not answer: {reason}"
            ) from None
        control = inbox.sock
        try:
            await mux.forward_opened(inbox)
        except mux.MuxError as exc:
            control.close()
            if master.failure is not None:
                raise TransportUnreachableError(f"SSH master for {self.via} exited") from None
            reason = await master.open_failure(exc.reason)
            raise target_error(target, self.label, reason) from None
        except BaseException:
            control.close()
            raise
        return _Forwarding(control, master)

    async def close(self) -> None:
        master, self._master = self._master, None
        if master is not None:
            await master.stop()
        workdir, self._workdir = self._workdir, None
        if workdir is not None:
            workdir.remove()


def address_of(resolved: dict[str, list[str]]) -> tuple[str, int] | None:
    """The server's address as `ssh -G` resolved it; None through a proxy (nothing to watch)."""
    if any(sshexit.first(resolved, key, "none") != "none" for key in PROXIES):
        return None
    hostname = sshexit.first(resolved, "hostname", "")
    try:
        port = int(sshexit.first(resolved, "port", ""))
    except ValueError:
        return None
    return (hostname, port) if hostname else None


__all__ = ["OpenSshTransport", "available"]
