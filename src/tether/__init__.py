"""tether: tunnels that behave like well-kept processes.

The Python API runs the same engine as the command line::

    async with Tunnel(TunnelSpec(target=Endpoint.parse("db:5432"))) as tunnel:
        print(tunnel.address)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from tether.errors import (
    AuthenticationError,
    ConfigError,
    HostKeyError,
    Interrupted,
    PortInUseError,
    ReadinessTimeoutError,
    TargetUnreachableError,
    TetherError,
    TransportUnreachableError,
    UsageError,
)
from tether.spec import Endpoint, SshOptions, TunnelSpec, Via

if TYPE_CHECKING:
    from tether.tunnel import Tunnel, TunnelStats


def __getattr__(name: str) -> Any:
    # The engine (and asyncio with it) loads on first use, so `tether list` starts fast.
    if name in ("Tunnel", "TunnelStats"):
        from tether import tunnel

        return getattr(tunnel, name)
    raise AttributeError(f"module 'tether' has no attribute {name!r}")


__all__ = [
    "AuthenticationError",
    "ConfigError",
    "Endpoint",
    "HostKeyError",
    "Interrupted",
    "PortInUseError",
    "ReadinessTimeoutError",
    "SshOptions",
    "TargetUnreachableError",
    "TetherError",
    "TransportUnreachableError",
    "Tunnel",
    "TunnelSpec",
    "TunnelStats",
    "UsageError",
    "Via",
    "__version__",
]
