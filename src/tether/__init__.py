"""tether: tunnels that behave like well-kept processes.

The Python API runs the same tunnels as the command line::

    with tether.open("prod-db") as t:          # a profile, or to=..., via=..., port=...
        connect(host=t.host, port=t.port)

    async with tether.open_async(to="db:5432", via="ssh://bastion") as t:
        ...

    tether.list()                              # every tunnel of this user, as TunnelInfo
    tether.stop("prod-db")
"""

from __future__ import annotations

import logging as _logging
from typing import TYPE_CHECKING, Any

# The one place the version is written: the package metadata (pyproject.toml) reads it here.
__version__ = "0.2.0.dev0"

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
    TunnelClosedError,
    TunnelLostError,
    UsageError,
)

# A library logs, and the application decides where records go: without a handler of its own,
# Python's last resort would print tether's warnings on stderr.
_logging.getLogger("tether").addHandler(_logging.NullHandler())

if TYPE_CHECKING:
    from tether.spec import Endpoint, SshOptions, TunnelSpec, Via
    from tether.api import OpenTunnel
    from tether.api import list_open as _list_open
    from tether.api import open as open
    from tether.api import open_async as open_async
    from tether.api import stop as stop

    list = _list_open
    from tether.record import TunnelInfo
    from tether.stats import TunnelStats
    from tether.tunnel import Tunnel

# The engine (asyncio with it) and the option tables load on first use: `tether list` needs
# neither, and starts fast. Each name -> (module, attribute).
_LAZY = {
    "Endpoint": ("tether.spec", "Endpoint"),
    "SshOptions": ("tether.spec", "SshOptions"),
    "TunnelSpec": ("tether.spec", "TunnelSpec"),
    "Via": ("tether.spec", "Via"),
    "Tunnel": ("tether.tunnel", "Tunnel"),
    "TunnelStats": ("tether.stats", "TunnelStats"),
    "TunnelInfo": ("tether.record", "TunnelInfo"),
    "OpenTunnel": ("tether.api", "OpenTunnel"),
    "open": ("tether.api", "open"),
    "open_async": ("tether.api", "open_async"),
    "list": ("tether.api", "list_open"),
    "stop": ("tether.api", "stop"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'tether' has no attribute {name!r}")


# tether.open, tether.list and tether.stop are meant to be called as such: a star import would
# shadow the builtins open and list, so they stay out of __all__.
__all__ = [
    "AuthenticationError",
    "ConfigError",
    "Endpoint",
    "HostKeyError",
    "Interrupted",
    "OpenTunnel",
    "PortInUseError",
    "ReadinessTimeoutError",
    "SshOptions",
    "TargetUnreachableError",
    "TetherError",
    "TransportUnreachableError",
    "Tunnel",
    "TunnelClosedError",
    "TunnelInfo",
    "TunnelLostError",
    "TunnelSpec",
    "TunnelStats",
    "UsageError",
    "Via",
    "__version__",
]
