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

if TYPE_CHECKING:
    from tether.spec import Endpoint, SshOptions, TunnelSpec, Via
    from tether.tunnel import Tunnel, TunnelStats

# The engine (asyncio with it) and the option tables load on first use: `tether list` needs
# neither, and starts fast.
_LAZY = {
    "Endpoint": "tether.spec",
    "SshOptions": "tether.spec",
    "TunnelSpec": "tether.spec",
    "Via": "tether.spec",
    "Tunnel": "tether.tunnel",
    "TunnelStats": "tether.tunnel",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
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
