"""What a diagnosis asks of an SSH engine: the tunnel's own login, cut into its host-key and its
authentication steps, then a channel and a probe through it."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import Any

from tether.diagnose.network import Peer
from tether.diagnose.report import NotReached, Step
from tether.errors import AuthenticationError, HostKeyError, TetherError
from tether.spec import Endpoint, SshOptions, Via
from tether.transports.base import Transport


class EngineProbe(ABC):
    """One engine's transport, connected as the tunnel would connect it, and watched.

    ``prepare`` reads the configuration (no network but `ssh -G`); ``hop`` is then the host the
    first TCP connection goes to (None when a ProxyCommand makes it), ``ssh_config`` the
    settings that matter and ``note`` what the report should say about the path.
    """

    engine: str
    transport: Transport

    def __init__(self, via: Via, options: SshOptions) -> None:
        self.via = via
        self.options = options
        self.ssh_config: dict[str, Any] = {}
        self.hop: Peer | None = None
        self.note: str | None = None
        #: Set once the server's host key is accepted (the engine's login goes on to auth).
        self.verified = asyncio.Event()
        self._login: asyncio.Task[None] | None = None

    @abstractmethod
    async def prepare(self) -> None: ...

    @abstractmethod
    def host_key_facts(self, step: Step) -> None:
        """Fill the host-key step from what the engine saw."""

    @abstractmethod
    def auth_facts(self, step: Step) -> None:
        """Fill the authentication step from what the engine saw."""

    @abstractmethod
    async def probe(self, target: Endpoint, step: Step) -> None:
        """A new connection to ``target`` that listens for the target's first bytes."""

    async def host_key(self, step: Step) -> None:
        """Start the tunnel's login and return once the host key is accepted (or the login
        failed before it was)."""
        self._login = asyncio.create_task(self.transport.connect(self._phase))
        verified = asyncio.create_task(self.verified.wait())
        try:
            await asyncio.wait({self._login, verified}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            verified.cancel()
            self.host_key_facts(step)
        if self._login.done() and (error := _failure(self._login)) is not None:
            if isinstance(error, HostKeyError):
                step.facts["refused"] = refusal(error)
                if error.hop is not None:
                    step.facts["hop"] = error.hop
                raise error
            if isinstance(error, AuthenticationError) and error.hop is not None:
                # A jump host's login failed: the server's host key was never shown.
                raise NotReached(f"not reached: the login to jump host {error.hop} failed first")
            if not self.verified.is_set():
                raise error

    async def auth(self, step: Step) -> None:
        """The rest of the login: authentication."""
        assert self._login is not None
        hop = None
        try:
            await self._login
        except AuthenticationError as exc:
            hop = exc.hop
            raise
        finally:
            if hop is None:
                self.auth_facts(step)
            else:  # the jump host's login: what the engine saw of the server is nothing
                step.facts["hop"] = hop

    async def channel(self, target: Endpoint, step: Step) -> None:
        """The tunnel's own readiness probe: a channel to the target, opened and closed."""
        await self.transport.probe(target)
        step.detail = f"direct-tcpip channel to {target} opened and closed"

    def _phase(self, phase: str) -> None:
        if phase == "authenticating":
            self.verified.set()

    async def close(self) -> None:
        if self._login is not None and not self._login.done():
            self._login.cancel()
            await asyncio.gather(self._login, return_exceptions=True)
        await self.transport.close()


def _failure(task: asyncio.Task[None]) -> TetherError | None:
    if task.cancelled():
        return None
    error = task.exception()
    if error is None or isinstance(error, TetherError):
        return error
    raise error


# Why known_hosts refused the key, as sshsetup.KeyProblem words it for both engines.
REFUSALS = (
    ("is marked @revoked", "revoked"),
    ("does not match", "changed"),
    ("trusts only certificate authorities", "ca-only"),
    ("is not in", "unknown"),
)


def refusal(error: HostKeyError) -> str:
    """unknown, changed, revoked or ca-only."""
    return next((kind for words, kind in REFUSALS if words in error.message), "unknown")


def pick(facts: dict[str, Any], *keys: str) -> dict[str, Any]:
    """Those of ``facts`` named, in that order."""
    return {key: facts[key] for key in keys if key in facts}
