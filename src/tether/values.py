"""The text forms of single values, as flags and profiles give them: integers, ports, host
names and durations. Every bad value is a UsageError naming what it was for; nothing here does
I/O."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from tether.errors import UsageError, clip, shown

# Durations beyond this are typos, and would overflow the event loop's and select()'s timers.
MAX_SECONDS = 365 * 86400.0
# Host names: DNS limits, which the IDNA codec enforces with a traceback if nobody checks first.
# \Z, not $: '$' also matches before a final newline ("db\n.example").
_LABEL_RE = re.compile(r"\A[A-Za-z0-9_-]{1,63}\Z")
MAX_HOST_NAME = 253
# An IPv6 zone (fe80::1%eth0) names an interface by its name or index: IFNAMSIZ (16) holds at
# most 15 characters on Linux and the BSDs. ipaddress takes any text after '%', newlines too,
# and the host reaches ssh's command line, unit files and tables.
_ZONE_RE = re.compile(r"[A-Za-z0-9_.-]{1,15}")
# What a name for banners and lists may hold at most.
MAX_LABEL = 200


def host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets; a target behind a gateway,
    ``SITE/TARGET``, has no port of its own."""
    if "/" in host and port == 0:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def socks_reach(allowed: Sequence[object]) -> str:
    """What a SOCKS tunnel reaches, for lists and banners, from its allowlist (rules or their
    texts): "socks5 (any)", "socks5 (db.internal:5432)", "socks5 (db.internal:5432 +2)"."""
    if not allowed:
        return "socks5 (any)"
    more = f" +{len(allowed) - 1}" if len(allowed) > 1 else ""
    return f"socks5 ({allowed[0]}{more})"


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
    # A leading '-' would read as an option to ssh (which refuses such a host itself).
    if not host.startswith("-") and (_is_ip_address(host) or _is_host_name(host)):
        return host
    raise UsageError(f"{what}: not a valid host name or address: {clip(text)!r}")


def _is_ip_address(host: str) -> bool:
    import ipaddress  # here: `tether list` never parses a host

    _, percent, zone = host.partition("%")
    if percent and not _ZONE_RE.fullmatch(zone):
        return False  # ipaddress would take any zone at all: "fe80::1%x\n[Service]"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_host_name(host: str) -> bool:
    name = host[:-1] if host.endswith(".") else host  # a fully qualified name may end in '.'
    if not name.isprintable():
        return False  # IDNA maps some invisible characters (U+200B) to nothing
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            return False
    return len(name) <= MAX_HOST_NAME and all(_LABEL_RE.match(p) for p in name.split("."))


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


MAX_COUNT = 1_000_000
#: What parse_retries returns for "unlimited".
UNLIMITED = -1


def duration(value: object) -> float:
    """A positive duration (see parse_duration)."""
    return parse_duration(value, what="duration")  # type: ignore[arg-type]


def duration_or_zero(value: object) -> float:
    """A duration, or 0 meaning off."""
    return 0.0 if value in (0, "0") else duration(value)


def count(value: object) -> int:
    """A positive count."""
    return parse_int(value, what="count", low=1, high=MAX_COUNT)  # type: ignore[arg-type]


def retries(value: object) -> int:
    """A count of attempts, 0 included, or "unlimited" (UNLIMITED)."""
    if value == "unlimited":
        return UNLIMITED
    try:
        return parse_int(value, what="retries", low=0, high=MAX_COUNT)  # type: ignore[arg-type]
    except UsageError:
        raise UsageError(f'retries: expected a count or "unlimited", got {shown(value)}') from None


def choice(*allowed: str) -> Callable[[object], str]:
    """A parser that takes one of ``allowed``."""

    def parse(value: object) -> str:
        if value not in allowed:
            raise UsageError(f"choice: expected {' or '.join(allowed)}, got {shown(value)}")
        return str(value)

    return parse


def printable(value: object, *, what: str) -> str:
    """A string that prints on one line as it is: no control character (ESC, newline, DEL,
    C1), no line separator, no invisible format character."""
    if not isinstance(value, str):
        raise UsageError(f"{what}: expected a string, got {shown(value)}")
    if not value.isprintable():
        raise UsageError(f"{what}: holds control or invisible characters: {shown(value)}")
    return value


def label(value: object) -> str:
    """A name for banners and lists: printable, at most MAX_LABEL characters."""
    text = printable(value, what="name")
    if len(text) > MAX_LABEL:
        raise UsageError(f"name: longer than {MAX_LABEL} characters: {shown(text)}")
    return text


def boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise UsageError(f"flag: expected true or false, got {shown(value)}")
    return value


def path(value: object) -> str:
    """A file path, with ~ expanded, made absolute against the working directory: here, once,
    so that ssh (which reads a relative path against ~/.ssh) and a service (whose working
    directory is /) mean the file the user named."""
    from pathlib import Path

    if not isinstance(value, str) or not value or "\0" in value:
        raise UsageError(f"path: expected a path, got {shown(value)}")
    if not value.isprintable():
        # It would reach a generated ssh config, a unit file, a table: none may get a line
        # break or an escape sequence from a value.
        raise UsageError(f"path: a path holds no control characters, got {shown(value)}")
    return str(Path(value).expanduser().absolute())


def paths(value: object) -> tuple[str, ...]:
    """One path, or a list of them."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
        raise UsageError(f"path: expected a path or a list of paths, got {shown(value)}")
    return tuple(path(item) for item in items)
