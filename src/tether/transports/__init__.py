"""Transports: how a tunnel reaches its target. Each is imported only when it is used: asyncssh
above all, and asyncio too, which a start's first steps (prelogin.py) do without."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tether.errors import UsageError
from tether.spec import GATEWAY, TunnelSpec

if TYPE_CHECKING:
    from tether.transports.base import Transport


def transport_for(spec: TunnelSpec) -> Transport:
    """The transport a spec asks for: direct without ``via``; with it, the SSH engine it names,
    or OpenSSH's when an ssh client new enough is installed, else the in-process one."""
    if spec.via is None:
        from tether.transports.direct import DirectTransport

        return DirectTransport()
    from tether.transports import openssh

    if spec.via.scheme == GATEWAY:
        if not openssh.available():
            raise UsageError("a tunnel through a gateway needs an OpenSSH client >= 7.6 on PATH")
        from tether.transports.gateway import GatewayTransport, parse_target

        assert spec.target is not None  # the spec holds one SITE/TARGET with gw://
        return GatewayTransport(spec.via, spec.ssh, *parse_target(spec.target))
    engine = spec.ssh.engine or ("openssh" if openssh.available() else "asyncssh")
    if engine == "openssh":
        if not openssh.available():
            raise UsageError(
                "engine openssh needs an OpenSSH client >= 7.6 on PATH",
                hint="install openssh-client, or choose engine asyncssh",
                options=("engine",),
            )
        return openssh.OpenSshTransport(spec.via, spec.ssh)
    from tether.transports.asyncssh import AsyncSshTransport

    return AsyncSshTransport(spec.via, spec.ssh)


__all__ = ["transport_for"]
