"""What a tunnel is: frozen value types and the parsers for their text forms; no I/O."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field, replace
from urllib.parse import unquote

from tether.errors import UsageError, clip, shown

# Both loopback addresses (see listener.py); "127.0.0.1" or "::1" names one of them alone.
DEFAULT_LISTEN_HOST = "localhost"
DEFAULT_TIMEOUT = 30.0
DEFAULT_SSH_PORT = 22
DEFAULT_MAX_CONNECTIONS = 1024
SCHEMES = ("ssh",)

# Durations beyond this are typos, and would overflow the event loop's and select()'s timers.
MAX_SECONDS = 365 * 86400.0
# Host names: DNS limits, which the IDNA codec enforces with a traceback if nobody checks first.
_LABEL_RE = re.compile(r"^[A-Za-z0-9_-]{1,63}$")
MAX_HOST_NAME = 253


def parse_int(value: str | int, *, what: str, low: int, high: int) -> int:
    """An integer in ``low..high`` from TOML or a flag; only ASCII digits count as digits."""
    if isinstance(value, bool):
        raise UsageError(f"{what}: expected an integer {low}-{high}, got {value}")
    if isinstance(value, int):
        number = value
    else:
        stripped = value.strip()
        # isdigit() alone accepts '²' and other digits int() refuses; the length bound keeps
        # int() away from its own limit on huge inputs.
        if not (stripped.isascii() and stripped.isdigit() and len(stripped) <= 18):
            raise UsageError(f"{what}: expected an integer {low}-{high}, got {shown(value)}")
        number = int(stripped)
    if not low <= number <= high:
        raise UsageError(f"{what}: expected an integer {low}-{high}, got {shown(number)}")
    return number


def parse_port(text: str | int, *, what: str = "port", allow_zero: bool = True) -> int:
    """Parse a TCP port number, refusing anything outside 0-65535 (1-65535 without zero)."""
    return parse_int(text, what=what, low=0 if allow_zero else 1, high=65535)


def parse_host(text: str, *, what: str = "host") -> str:
    """Validate a host name or an IP address; IPv6 may come with or without brackets."""
    host = text.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if _is_ip_address(host) or _is_host_name(host):
        return host
    raise UsageError(f"{what}: not a valid host name or address: {clip(text)!r}")


def _is_ip_address(host: str) -> bool:
    import ipaddress  # here: `tether list` never parses a host

    try:
        ipaddress.ip_address(host)  # accepts an IPv6 scope: fe80::1%eth0
    except ValueError:
        return False
    return True


def _is_host_name(host: str) -> bool:
    name = host[:-1] if host.endswith(".") else host  # a fully qualified name may end in '.'
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            return False
    return len(name) <= MAX_HOST_NAME and all(_LABEL_RE.match(p) for p in name.split("."))


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
                raise UsageError(f"{what}: expected [ADDRESS]:PORT, got {clip(text)!r}")
            host_part, port_part = text[: close + 1], text[close + 2 :]
        else:
            host_part, sep, port_part = text.rpartition(":")
            if not sep or ":" in host_part:
                raise UsageError(f"{what}: expected HOST:PORT, got {clip(text)!r}")
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
        """Parse ``ssh://[USER@]HOST[:PORT]``, refusing passwords and unknown schemes.

        A password is refused before anything else, so that no message ever echoes it.
        """
        text = text.strip()
        userinfo, at, _ = text.rpartition("@")
        if at and _holds_password(userinfo.split("://", 1)[-1]):
            raise UsageError(
                f"{what}: passwords are not accepted in the SSH address",
                hint="use an SSH agent or identity_file",
            )
        expected = f"{what}: expected ssh://[USER@]HOST[:PORT], got {clip(text)!r}"
        scheme, sep, rest = text.partition("://")
        if not sep:
            raise UsageError(expected)
        scheme = scheme.lower()
        if scheme not in SCHEMES:
            raise UsageError(f"{what}: unsupported scheme {clip(scheme)!r} (supported: ssh)")
        rest = rest.rstrip("/")
        if "/" in rest or "?" in rest or "#" in rest:
            raise UsageError(expected)
        user: str | None = None
        if at:
            userinfo, _, rest = rest.rpartition("@")
            user = _parse_user(userinfo, what)
        if rest.startswith("[") and rest.endswith("]"):
            return cls(scheme, parse_host(rest, what=what), DEFAULT_SSH_PORT, user)
        if rest.startswith("[") or rest.count(":") == 1:
            endpoint = Endpoint.parse(rest, what=what)
            return cls(scheme, endpoint.host, endpoint.port, user)
        return cls(scheme, parse_host(rest, what=what), DEFAULT_SSH_PORT, user)


def _holds_password(userinfo: str) -> bool:
    return ":" in userinfo or "%3a" in userinfo.lower()


MAX_USER = 256


def _parse_user(userinfo: str, what: str) -> str:
    """The percent-decoded user name: valid UTF-8, printable, no spaces."""
    try:
        user = unquote(userinfo, errors="strict")
    except UnicodeDecodeError:
        raise UsageError(f"{what}: the user name is not valid UTF-8 once decoded") from None
    if not user:
        raise UsageError(f"{what}: empty user name")
    if len(user) > MAX_USER or any(
        c.isspace() or unicodedata.category(c).startswith("C") for c in user
    ):
        raise UsageError(
            f"{what}: the user name holds spaces or control characters, or is too long"
        )
    return user


@dataclass(frozen=True)
class SshOptions:
    """SSH client settings; secrets never live here, only paths to them."""

    identity_files: tuple[str, ...] = ()
    known_hosts: str | None = None
    keepalive_interval: float = 15.0
    keepalive_count_max: int = 3
    connect_timeout: float | None = None


# ASCII digits only: \d would take other scripts' digits, which float() also reads.
_DURATION_RE = re.compile(r"^\s*([0-9]{1,15}(?:\.[0-9]{1,9})?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str | float, *, what: str = "duration") -> float:
    """Parse ``30s``, ``5m``, ``2h``, ``1d``, ``250ms`` or plain seconds into seconds (> 0)."""
    if isinstance(text, bool):
        raise UsageError(f"{what}: expected a duration like 30s, 5m or 2h, got {text}")
    if isinstance(text, int | float):
        try:
            seconds = float(text)
        except OverflowError:  # a huge TOML integer
            seconds = float("inf")
    else:
        match = _DURATION_RE.match(text)
        if not match:
            raise UsageError(f"{what}: expected a duration like 30s, 5m or 2h, got {shown(text)}")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    if not 0 < seconds <= MAX_SECONDS:
        raise UsageError(f"{what}: expected a positive duration of at most 365d, got {shown(text)}")
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
    #: Connections served at once; more wait in the kernel's backlog until one ends.
    max_connections: int = DEFAULT_MAX_CONNECTIONS

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", str(self.target))
        if not 0 < self.timeout <= MAX_SECONDS:
            raise UsageError(f"timeout: expected a positive number of seconds, got {self.timeout}")

    def with_changes(self, **changes: object) -> TunnelSpec:
        """A copy with some fields replaced, validated again."""
        return replace(self, **changes)  # type: ignore[arg-type]
