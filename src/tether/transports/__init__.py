"""Transports: how a tunnel reaches its target. asyncssh is imported only when SSH is used."""

from __future__ import annotations

from tether.spec import TunnelSpec
from tether.transports.base import Transport
from tether.transports.direct import DirectTransport


def transport_for(spec: TunnelSpec) -> Transport:
    """The transport a spec asks for: direct without ``via``, else the via's scheme."""
    if spec.via is None:
        return DirectTransport()
    from tether.transports.ssh import SshTransport

    return SshTransport(spec.via, spec.ssh)


__all__ = ["DirectTransport", "Transport", "transport_for"]
