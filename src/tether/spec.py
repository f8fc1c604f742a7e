"""What a tunnel is: frozen value types and the parsers for their text forms; no I/O."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from urllib.parse import unquote

from tether.errors import UsageError

DEFAULT_LISTEN_HOST = "127.0.0.1"
DEFAULT_TIMEOUT = 30.0
DEFAULT_SSH_PORT = 22
SCHEMES = ("ssh",)

# A hostname, an IPv4 address or a bracket-less IPv6 literal: no spaces, no slashes, no '@'.
_HOST_RE = re.compile(r"^[A-Za-z0-9_.\-:%]+$")


def parse_port(text: str | int, *, what: str = "port", allow_zero: bool = True) -> int:
    """Parse a TCP port number, refusing anything outside 0-65535 (1-65535 without zero)."""
    low = 0 if allow_zero else 1
    if isinstance(text, bool):
        raise UsageError(f"{what}: expected an integer {low}-65535, got {text}")
    if isinstance(text, int):
        value = text
    else:
        stripped = text.strip()
        if not stripped.isascii() or not stripped.isdigit():
            raise UsageError(f"{what}: expected an integer {low}-65535, got {json.dumps(text)}")
        value = int(stripped)
    if not low <= value <= 65535:
        raise UsageError(f"{what}: expected an integer {low}-65535, got {value}")
    return value


def parse_host(text: str, *, what: str = "host") -> str:
    """Validate a host name or address; IPv6 may come with or without brackets."""
    host = text.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not _HOST_RE.match(host):
        raise UsageError(f"{what}: not a valid host name or address: {text!r}")
    return host


@dataclass(frozen=True)
class Endpoint:
    """A host and a TCP port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str, *, what: str = "address", allow_zero: bool = False) -> Endpoint:
        """Parse ``host:port`` or ``[v6addr]:port``."""
        text = text.strip()
        if text.startswith("["):
            close = text.find("]")
            if close < 0 or text[close + 1 : close + 2] != ":":
                raise UsageError(f"{what}: expected [ADDRESS]:PORT, got {text!r}")
            host_part, port_part = text[: close + 1], text[close + 2 :]
        else:
            host_part, sep, port_part = text.rpartition(":")
            if not sep or ":" in host_part:
                raise UsageError(f"{what}: expected HOST:PORT, got {text!r}")
        return cls(
            parse_host(host_part, what=what),
            parse_port(port_part, what=f"{what} port", allow_zero=allow_zero),
        )


@dataclass(frozen=True)
class Via:
    """The jump host a tunnel goes through, as ``scheme://[user@]host[:port]``.

    It never holds a secret, so it is safe to print, log and register.
    """

    scheme: str
    host: str
    port: int
    user: str | None = None

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{user}{host}:{self.port}"

    @classmethod
    def parse(cls, text: str, *, what: str = "--via") -> Via:
        """Parse ``ssh://[USER@]HOST[:PORT]``, refusing passwords and unknown schemes."""
        scheme, sep, rest = text.strip().partition("://")
        if not sep:
            raise UsageError(f"{what}: expected ssh://[USER@]HOST[:PORT], got {text!r}")
        scheme = scheme.lower()
        if scheme not in SCHEMES:
            raise UsageError(f"{what}: unsupported scheme {scheme!r} (supported: ssh)")
        rest = rest.rstrip("/")
        if "/" in rest or "?" in rest or "#" in rest:
            raise UsageError(f"{what}: expected ssh://[USER@]HOST[:PORT], got {text!r}")
        user: str | None = None
        if "@" in rest:
            userinfo, _, rest = rest.rpartition("@")
            if ":" in userinfo:
                raise UsageError(
                    f"{what}: passwords are not accepted on the command line",
                    hint="use an SSH agent or identity_file",
                )
            user = unquote(userinfo)
            if not user:
                raise UsageError(f"{what}: empty user name in {text!r}")
        if rest.startswith("[") or rest.count(":") == 1:
            if rest.startswith("[") and rest.endswith("]"):
                return cls(scheme, parse_host(rest, what=what), DEFAULT_SSH_PORT, user)
            endpoint = Endpoint.parse(rest, what=what)
            return cls(scheme, endpoint.host, endpoint.port, user)
        return cls(scheme, parse_host(rest, what=what), DEFAULT_SSH_PORT, user)


@dataclass(frozen=True)
class SshOptions:
    """SSH client settings; secrets never live here, only paths to them."""

    identity_files: tuple[str, ...] = ()
    known_hosts: str | None = None
    keepalive_interval: float = 15.0
    keepalive_count_max: int = 3
    connect_timeout: float | None = None


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str | float, *, what: str = "duration") -> float:
    """Parse ``30s``, ``5m``, ``2h``, ``1d``, ``250ms`` or plain seconds into seconds (> 0)."""
    if isinstance(text, bool):
        raise UsageError(f"{what}: expected a duration like 30s, 5m or 2h, got {text}")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        match = _DURATION_RE.match(text)
        if not match:
            raise UsageError(
                f"{what}: expected a duration like 30s, 5m or 2h, got {json.dumps(text)}"
            )
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    if not 0 < seconds < float("inf"):
        raise UsageError(f"{what}: expected a positive duration, got {text}")
    return seconds


@dataclass(frozen=True)
class TunnelSpec:
    """Every option of one tunnel, held once; flags, profiles and the Python API build it."""

    target: Endpoint
    listen: Endpoint = field(default_factory=lambda: Endpoint(DEFAULT_LISTEN_HOST, 0))
    via: Via | None = None
    name: str = ""
    timeout: float = DEFAULT_TIMEOUT
    probe: bool = True
    ssh: SshOptions = field(default_factory=SshOptions)
    #: Reconnect a lost transport; ``max_retries`` None means without limit.
    reconnect: bool = True
    max_retries: int | None = None
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    #: Seconds that open connections may take to finish on a graceful stop.
    drain: float = 5.0
    #: Stop after this long, and after this long without connections.
    ttl: float | None = None
    idle_timeout: float | None = None

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", str(self.target))
        if not self.timeout > 0:
            raise UsageError(f"timeout: expected a positive number of seconds, got {self.timeout}")

    def with_changes(self, **changes: object) -> TunnelSpec:
        """A copy with some fields replaced, validated again."""
        return replace(self, **changes)  # type: ignore[arg-type]
