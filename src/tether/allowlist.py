"""A SOCKS tunnel's allowlist: the targets its clients may ask for; parsed at config time, no I/O.

An entry is HOST:PORT, where HOST is a name (``db.internal``), a name pattern (``*.corp.example``:
any name under it, not the name itself), an address or a network (``10.0.0.0/8``,
``[fd00::/8]``), or ``*`` (any host); and PORT a port or ``*``. A name is matched as the client
sent it, before anything resolves it (the far side does, for SSH), so it is matched only by name
entries: ``10.0.0.0/8:*`` lets a client name 10.1.2.3, never a name that may resolve there.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from tether.errors import UsageError, clip, shown
from tether.values import parse_host, parse_port

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
ANY = "*"
EXPECTED = "expected HOST:PORT (HOST a name, *.DOMAIN, an address, a network or *; PORT or *)"


@dataclass(frozen=True)
class Rule:
    """One allowlist entry; ``str()`` gives it back in its canonical form."""

    host: str  # as written, normalised: "db.internal", "*.corp.example", "10.0.0.0/8", "*"
    port: int | None  # None: any port
    network: Network | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        port = ANY if self.port is None else str(self.port)
        return f"[{self.host}]:{port}" if ":" in self.host else f"{self.host}:{port}"

    def matches(self, host: str, address: Address | None, port: int) -> bool:
        """Whether the target ``host`` (``address`` when it is one, else a normalised name)
        and ``port`` fall under this rule."""
        if self.port is not None and port != self.port:
            return False
        if self.host == ANY:
            return True
        if self.network is not None:
            return address is not None and address in self.network
        if address is not None:
            return False
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])
        return host == self.host

    @property
    def concrete(self) -> bool:
        """One host and one port: a target that can be probed."""
        if self.port is None or self.host == ANY or self.host.startswith("*."):
            return False
        return self.network is None or self.network.num_addresses == 1


def parse_rule(text: str) -> Rule:
    """Parse one entry; UsageError naming it if it is not one."""
    entry = text.strip()
    if entry.startswith("["):
        close = entry.find("]")
        if close < 0 or entry[close + 1 : close + 2] != ":":
            raise UsageError(f"allow: {EXPECTED}, got {shown(text)}")
        host_part, port_part = entry[1:close], entry[close + 2 :]
    else:
        host_part, sep, port_part = entry.rpartition(":")
        if not sep or ":" in host_part:
            hint = " (an IPv6 address goes in brackets)" if entry.count(":") > 1 else ""
            raise UsageError(f"allow: {EXPECTED}{hint}, got {shown(text)}")
    port = None if port_part.strip() == ANY else _port(port_part, text)
    host = host_part.strip()
    if host == ANY:
        return Rule(ANY, port)
    if host.startswith("*.") and "*" not in host[2:]:
        return Rule("*." + _name(host[2:], text), port)
    if "*" in host:
        raise UsageError(f"allow: a wildcard is * or a leading *. only, got {shown(text)}")
    if "%" in host:
        # ipaddress takes any zone, escape sequences too; parse_host only an interface's.
        parse_host(host.split("/", 1)[0], what="allow")
    if "/" in host:
        try:
            network = ipaddress.ip_network(host, strict=True)
        except ValueError as exc:
            raise UsageError(f"allow: not a network: {clip(host)!r} ({exc})") from None
        if network.num_addresses == 1:  # 10.0.0.1/32 is the address 10.0.0.1
            return Rule(str(network.network_address), port, network)
        return Rule(str(network), port, network)
    address = as_address(host)
    if address is not None:
        return Rule(str(address), port, ipaddress.ip_network(address))
    return Rule(_name(host, text), port)


def parse_rules(value: object) -> tuple[Rule, ...]:
    """One entry or a list of them (a profile's list, or the repeated flag's values)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise UsageError(f"allow: expected HOST:PORT or a list of them, got {shown(value)}")
    return tuple(parse_rule(item) for item in items)


def allows(rules: tuple[Rule, ...], host: str, port: int) -> bool:
    """Whether a client may reach ``host:port``; no rules allow everything."""
    if not rules:
        return True
    address = as_address(host)
    name = host if address is not None else normal_name(host)
    return any(rule.matches(name, address, port) for rule in rules)


def probe_target(rules: tuple[Rule, ...]) -> tuple[str, int] | None:
    """The one target to probe before ready: when the allowlist names exactly one host and
    port, a SOCKS tunnel is as good as a tunnel to it."""
    if len(rules) == 1 and rules[0].concrete:
        assert rules[0].port is not None
        return rules[0].host, rules[0].port
    return None


def as_address(host: str) -> Address | None:
    """``host`` as an IP address (an IPv4-mapped IPv6 address as IPv4), or None for a name."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def normal_name(name: str) -> str:
    """A host name as rules compare it: lower case, without the root's trailing dot."""
    return name.lower().removesuffix(".")


def _name(text: str, entry: str) -> str:
    try:
        name = parse_host(text, what="allow")
    except UsageError:
        raise UsageError(f"allow: not a valid host name in {shown(entry)}") from None
    if as_address(name) is not None:
        raise UsageError(f"allow: *. goes before a domain name, not an address: {shown(entry)}")
    if not name.isascii():
        name = name.encode("idna").decode("ascii")  # as clients send it (parse_host checked it)
    return normal_name(name)


def _port(text: str, entry: str) -> int:
    try:
        return parse_port(text, what="allow", allow_zero=False)
    except UsageError:
        raise UsageError(f"allow: expected a port 1-65535 or *, in {shown(entry)}") from None
