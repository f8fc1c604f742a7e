"""The engine: a local listener, a transport, and the connections between them.

Phases: start (bind, connect, probe) -> serve (reconnecting the transport if it is lost, the
listener staying bound throughout) -> close (stop accepting, drain, drop the rest). Each accepted
connection lives in connection.py; the reconnect attempts and their waits are outage.py's; the
lifetime bounds, bounds.py's.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Sequence
from typing import Self

from tether.bounds import OPTIONS, Bounds
from tether.connection import Connections
from tether.errors import AccessRefused, ReadinessTimeoutError, TunnelLostError
from tether.listener import Listener, bind_all, resolve_listen
from tether.logs import LimitedLog
from tether.outage import reconnect
from tether.socksserve import HANDSHAKE_TIMEOUT
from tether.states import State
from tether.spec import Endpoint, TunnelSpec
from tether.stats import Counters, TunnelStats
from tether.transports import transport_for
from tether.transports.base import PhaseCallback, Transport

log = logging.getLogger("tether")


def not_ready(spec: TunnelSpec, phase: str) -> ReadinessTimeoutError:
    return ReadinessTimeoutError(
        f"tunnel not ready after {spec.timeout:g}s (still {phase})",
        hint="check that the server answers, or raise timeout",
        options=("timeout",),
    )


class Tunnel:
    """One local port forwarded to one target through one transport, or, with ``spec.socks``,
    serving SOCKS5: each client names its own target.

    ``start()`` returns once the tunnel is ready: listening, connected, and (unless the spec says
    ``probe=False``) a probe stream to the target was opened and closed (for a SOCKS tunnel, to
    the target its allowlist names, if it names exactly one: see ``probe_target``).
    ``wait_ended()`` returns when a lifetime bound fires and raises TunnelLostError when the
    transport is lost for good. It has no signals, no printing and no CLI, so tests, the shell
    and library users drive it alike.

    ``on_phase`` hears every change of state, and "reconnecting" again at each reconnect
    attempt (``reconnect_attempt`` and ``last_error`` say which, and why). ``sockets``, if
    given, are listening sockets to serve instead of binding ``spec.listen``.
    """

    def __init__(
        self,
        spec: TunnelSpec,
        transport: Transport | None = None,
        *,
        on_phase: PhaseCallback | None = None,
        sockets: Sequence[socket.socket] | None = None,
    ) -> None:
        self.spec = spec
        self.transport = transport if transport is not None else transport_for(spec)
        self._on_phase = on_phase
        # Listening sockets made by someone else (systemd's socket activation): served instead
        # of binding spec.listen, and owned by the tunnel from now on.
        self._given = list(sockets) if sockets else None
        self.state: State = "new"
        self.last_error: str | None = None
        self.counters = Counters()
        self.reconnect_attempt = 0  # attempts in the current outage
        self.reconnects = 0  # outages recovered from
        self._addresses: list[tuple[str, bool]] | None = None
        self._listener: Listener | None = None
        self._warnings = LimitedLog()
        self._started_at: float | None = None
        self._up = asyncio.Event()  # the transport can open streams
        self._ended = asyncio.Event()
        self._end_reason: str | None = None
        self._lost: TunnelLostError | AccessRefused | None = None
        self._dead: str | None = None  # why the transport died, until it is reconnected
        self._supervisor: asyncio.Task[None] | None = None
        self._bounds = Bounds(self._expire)  # ttl and idle_timeout
        self._closed = asyncio.Event()
        self.handshake_timeout = HANDSHAKE_TIMEOUT  # a SOCKS client's, to ask
        self._connections = Connections(
            self, self.transport, self.counters, on_full=self._full, on_idle=self._idle
        )

    # -- lifecycle ------------------------------------------------------------------------------
    async def resolve(self) -> None:
        """Find the addresses to listen on; ``start`` does it if needed."""
        if self._addresses is None:
            self._phase("binding")
            if self._given is not None:
                self._addresses = [(sock.getsockname()[0], True) for sock in self._given]
            else:
                self._addresses = await resolve_listen(self.spec.listen.host)

    def bind(self) -> None:
        """Bind the listening sockets now, without accepting yet; ``start`` does it if needed.

        Synchronous, after ``resolve``: a caller may hold a lock around it.
        """
        if self._listener is None:
            assert self._addresses is not None, "resolve() first"
            if self.state != "binding":
                self._phase("binding")
            if self._given is not None:
                socks = self._given
            else:
                socks = bind_all(self._addresses, self.spec.listen.port)
            self._listener = Listener(socks, self._connections.accept, self._warnings)

    async def start(self, deadline: float | None = None) -> None:
        """Bind, connect and probe, all within ``spec.timeout`` seconds (or by ``deadline``, a
        time of the running loop's clock)."""
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + self.spec.timeout
        try:
            async with asyncio.timeout_at(deadline):
                await self.resolve()
                self.bind()
                self._phase("connecting")
                await self.transport.connect(self._phase, self._transport_lost)
                if self.spec.probe and self.probe_target is not None:
                    self._phase("probing")
                    await self.transport.probe(self.probe_target)
        except TimeoutError:
            phase = self.state
            await self.close()
            raise not_ready(self.spec, phase) from None
        except BaseException:
            await self.close()
            raise
        assert self._listener is not None
        self._listener.start()
        self._started_at = time.monotonic()
        self._up.set()
        self._phase("ready")
        if self._dead:
            self._handle_loss()
        if self.spec.ttl:
            self._bounds.arm("ttl", self.spec.ttl)
        self._arm_idle()

    async def wait_ended(self) -> str:
        """Wait until the tunnel should end: returns "ttl", "idle" or "closed", or raises
        TunnelLostError."""
        await self._ended.wait()
        if self._lost is not None:
            raise self._lost
        assert self._end_reason is not None
        return self._end_reason

    async def close(self, drain: float = 0.0, hurry: asyncio.Event | None = None) -> None:
        """Stop accepting, give open connections up to ``drain`` seconds to finish (less, if
        ``hurry`` is or gets set: a second stop signal), then drop the rest and release the
        transport; idempotent."""
        if self.state in ("closing", "closed"):
            await self._closed.wait()
            return
        self.state = "closing"
        self._bounds.cancel()
        if self._listener is not None:
            self._listener.close()
        elif self._given is not None:
            for sock in self._given:
                sock.close()
        if drain > 0 and self._up.is_set():
            await self._drain(drain, hurry)
        self.state = "closed"
        await self._stop_reconnecting()
        self._connections.end()
        try:
            await self.transport.close()
        finally:
            if self._end_reason is None and self._lost is None:
                self._end_reason = "closed"
            self._ended.set()
            self._closed.set()

    async def _stop_reconnecting(self) -> None:
        """End a reconnect in progress, and wait until it has: the attempt cleans up in the
        transport's files (its ssh waited for, its config removed), which the transport's close
        removes. Cancelled again each second, should a step of it have taken the cancel for its
        own timeout."""
        supervisor = self._supervisor
        if supervisor is None or supervisor is asyncio.current_task():
            return
        while not supervisor.done():
            supervisor.cancel()
            await asyncio.wait([supervisor], timeout=1.0)

    async def _drain(self, drain: float, hurry: asyncio.Event | None) -> None:
        drained = self._connections.drained
        events = [drained] if hurry is None else [drained, hurry]
        waits = [asyncio.ensure_future(event.wait()) for event in events]
        try:
            await asyncio.wait(waits, timeout=drain, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        if drained.is_set():
            return
        if hurry is not None and hurry.is_set():
            log.warning(
                "%s: asked again to stop; closing %d connection(s) without draining",
                self.spec.name,
                self.counters.connections_active,
            )
            return
        log.warning(
            "%s: %d connection(s) still open after %gs of drain; closing them",
            self.spec.name,
            self.counters.connections_active,
            drain,
        )

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- state ----------------------------------------------------------------------------------
    @property
    def ready_once(self) -> bool:
        """Whether the tunnel ever became ready (uptime counts from then)."""
        return self._started_at is not None

    @property
    def address(self) -> Endpoint | None:
        """The first address actually bound (the real port when the spec asked for port 0)."""
        return self._listener.address if self._listener is not None else None

    @property
    def listen_addresses(self) -> list[str]:
        """The numeric addresses ``bind`` will take, once ``resolve`` has run."""
        assert self._addresses is not None, "resolve() first"
        return [address for address, _ in self._addresses]

    @property
    def addresses(self) -> list[str]:
        """Every address bound: 127.0.0.1 and ::1 for the default listen host."""
        return self._listener.addresses if self._listener is not None else []

    @property
    def probe_target(self) -> Endpoint | None:
        """What the probe connects to: the target; for a SOCKS tunnel, the one host and port
        its allowlist names, if it names exactly one (otherwise no target is probed)."""
        return self.spec.probe_target

    def _phase(self, phase: State) -> None:
        self.state = phase
        if self._on_phase:
            self._on_phase(phase)

    def stats(self) -> TunnelStats:
        self._connections.sync()
        c = self.counters
        return TunnelStats(
            state=self.state,
            local=self.address,
            target=self.spec.target,
            via=self.transport.label,
            engine=self.transport.engine,
            connections_active=c.connections_active,
            connections_total=c.connections_total,
            bytes_in=c.bytes_in,
            bytes_out=c.bytes_out,
            uptime=time.monotonic() - self._started_at if self._started_at else 0.0,
            last_error=self.last_error,
            reconnect_attempt=self.reconnect_attempt,
            reconnects=self.reconnects,
            ttl_left=self._bounds.left("ttl"),
            idle_left=self._bounds.left("idle"),
            ssh_master=self.transport.shared_master,
        )

    # -- lifetime bounds ------------------------------------------------------------------------
    def _arm_idle(self) -> None:
        idle = self.counters.connections_active == 0
        if self.spec.idle_timeout and self.state == "ready" and idle:
            self._bounds.arm("idle", self.spec.idle_timeout)

    def _expire(self, reason: str) -> None:
        if self._end_reason is None and not self._ended.is_set():
            # Warning level so that it shows without --debug: the process is about to exit 0.
            # The option is the last argument, so that the command line can show its flag.
            option = OPTIONS[reason]
            log.warning(
                "%s: %s reached; stopping", self.spec.name, option, extra={"option": option}
            )
            self._end_reason = reason
            self._ended.set()

    # -- losing and regaining the transport -----------------------------------------------------
    def _transport_lost(self, reason: str) -> None:
        if self.state in ("closing", "closed", "lost"):
            return
        # Remembered even while down: a connection that dies between connect() returning and
        # being marked up must not pass for a live one.
        self._dead = reason
        if self._up.is_set():
            self._handle_loss()

    def _handle_loss(self) -> None:
        reason = self._dead or "transport lost"
        self._up.clear()
        self.last_error = reason
        log.warning("%s: transport lost: %s", self.spec.name, reason)
        self._connections.cut()  # streams cannot outlive their transport
        self._phase("reconnecting")
        self._supervisor = asyncio.ensure_future(self._reconnect())

    async def _reconnect(self) -> None:
        self.reconnect_attempt = 0
        try:
            taken = await reconnect(self.spec, self.transport, self._transport_lost, self)
        except AccessRefused as exc:
            self.last_error = exc.message
            self._lost = AccessRefused(f"{self.spec.name}: access ended: {exc.message}")
            self._phase("lost")
            self._ended.set()
            return
        if taken is not None:
            log.warning("%s: reconnected after %d attempt(s)", self.spec.name, taken)
            self.reconnect_attempt = 0
            self.reconnects += 1
            self._dead = None
            self._up.set()
            self._phase("ready")
            return
        tried = (
            f"after {self.reconnect_attempt} reconnect attempt(s)"
            if self.spec.reconnect
            else "and reconnecting is off"
        )
        self._lost = TunnelLostError(f"{self.spec.name}: transport lost {tried}: {self.last_error}")
        self._phase("lost")
        self._ended.set()

    def attempting(self, attempt: int) -> None:
        """outage.reconnect begins an attempt (outage.Attempts, as the next one)."""
        self.reconnect_attempt = attempt
        self._phase("reconnecting")  # the same state, and news: which attempt, and why

    def attempt_failed(self, attempt: int, reason: str) -> None:
        self.last_error = reason
        log.warning("%s: reconnect attempt %d failed: %s", self.spec.name, attempt, reason)

    # -- what its connections ask of it (connection.Host) --------------------------------------
    def warn(self, kind: str, message: str) -> None:
        """Log a per-connection warning, at most a few of each ``kind`` per interval."""
        self._warnings.warning(kind, "%s: %s", self.spec.name, message)

    def failed(self, kind: str, message: str) -> None:
        """A connection failed (its target unreachable, its SOCKS request denied): remembered as
        ``last_error``, and logged (rate-limited)."""
        self.last_error = message
        self.warn(kind, message)

    def _full(self, full: bool) -> None:
        if self._listener is not None:
            # While full, new clients wait in the kernel's backlog until a connection ends.
            (self._listener.pause if full else self._listener.resume)("full")

    def _idle(self, idle: bool) -> None:
        if idle:
            self._arm_idle()
        else:
            self._bounds.disarm("idle")

    async def until_up(self) -> None:
        """Return once the transport is up; TimeoutError if it stays down for ``hold`` seconds
        (after which the caller resets the connection: see ``held_too_long``)."""
        if not self._up.is_set():
            # Reconnecting: the port stays open, and a client waits a moment for the transport.
            await asyncio.wait_for(self._up.wait(), self.spec.hold)

    def held_too_long(self) -> None:
        """A connection waited ``hold`` seconds for a transport that stayed down: it is reset
        (by the caller), as a refused port would be, so that its client fails at once and tries
        again, rather than waiting on, or reading an EOF it could take for an answer."""
        self.warn(
            "held",
            f"the transport is still down after {self.spec.hold:g}s (hold): connection reset; "
            f"reconnecting: {self.last_error}",
        )
