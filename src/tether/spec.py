"""What a tunnel is: frozen value types, each option declared once on its field; no I/O."""

from __future__ import annotations

import unicodedata
from typing import Literal
from dataclasses import dataclass, field, replace
from urllib.parse import unquote

from tether.errors import UsageError, clip
from tether import allowlist, values
from tether.allowlist import Rule
from tether.options import option
from tether.states import DIRECT
from tether.values import MAX_SECONDS, host_port, parse_host, parse_port

# Both loopback addresses (see listener.py); "127.0.0.1" or "::1" names one of them alone.
DEFAULT_LISTEN_HOST = "localhost"
DEFAULT_TIMEOUT = 30.0
#: The bound on one reconnect attempt when connect_timeout is not given (or --timeout, if
#: shorter): the start's timeout is for a first connection, and an attempt against a server
#: that hangs must end in time for the next, so that the tunnel is back soon after its server.
RECONNECT_TIMEOUT = 10.0
#: A shared OpenSSH master's wait for the next tunnel after its last (a --run in a loop).
DEFAULT_MASTER_LINGER = 10.0
#: How long a connection that arrives while the transport is down waits for it by default.
DEFAULT_HOLD = 3.0
DEFAULT_SSH_PORT = 22
DEFAULT_MAX_CONNECTIONS = 1024
SCHEMES = ("ssh", "gw")
GATEWAY = "gw"  # the scheme of a gateway's relay: the target is SITE/TARGET behind it
DURATION = (int, float, str)  # what TOML may give for a duration
Engine = Literal["openssh", "asyncssh"]


@dataclass(frozen=True)
class Endpoint:
    """A host and a TCP port."""

    host: str
    port: int

    def __str__(self) -> str:
        return host_port(self.host, self.port)

    @property
    def behind_gateway(self) -> bool:
        """Whether this is a gateway's SITE/TARGET (its port is 0: the site knows the rest)."""
        return self.port == 0 and "/" in self.host

    @classmethod
    def parse_target(cls, text: str, *, what: str = "to") -> Endpoint:
        """A tunnel's target: ``HOST:PORT``, or ``SITE/TARGET`` behind a gateway."""
        if "/" not in text:
            return cls.parse(text, what=what)
        from tether.gateway.names import parse_target_path

        site, target = parse_target_path(text.strip(), what=what)
        return cls(f"{site}/{target}", 0)

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
    """The SSH server a tunnel goes through, as ``scheme://[user@]host[:port]`` (ProxyJump hops
    on the way to it come from ssh_config); a gateway's may name several relays,
    ``gw://[user@]host[:port],host2[:port2],...``, tried in turn.

    It never holds a secret, so it is safe to print, log and register.
    """

    scheme: str
    host: str  # a host name, an address, or an alias of the user's ssh_config
    port: int
    user: str | None = None
    #: Whether the address named the port. If not, ssh_config's Port (or 22) applies.
    port_given: bool = field(default=True, compare=False)
    #: A gateway's further relays, after host:port, in the order named: each a Via of one
    #: relay (same scheme and user). Empty for any other via.
    alternates: tuple[Via, ...] = ()

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        return f"{self.scheme}://{user}" + ",".join(relay._address() for relay in self.relays)

    def _address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host + (f":{self.port}" if self.port_given else "")

    @property
    def relays(self) -> tuple[Via, ...]:
        """Every server this via names, each a Via of its own: the first (host:port), then the
        alternates. One for anything but a gateway's list."""
        if not self.alternates:
            return (self,)
        return (replace(self, alternates=()), *self.alternates)

    @classmethod
    def parse(cls, text: str, *, what: str = "--via") -> Via:
        """Parse ``ssh://[USER@]HOST[:PORT]`` (or ``gw://``, a gateway's relay, or several of
        them separated by commas), refusing passwords and unknown schemes.

        A password is refused before anything else, so that no message ever echoes it.
        """
        text = text.strip()
        userinfo, at, _ = text.rpartition("@")
        if at and _holds_password(userinfo.split("://", 1)[-1]):
            raise UsageError(
                f"{what}: passwords are not accepted in the SSH address",
                hint="use an SSH agent or identity_file",
                options=("identity_file",),
            )
        expected = f"{what}: expected ssh://[USER@]HOST[:PORT], got {clip(text)!r}"
        scheme, sep, rest = text.partition("://")
        if not sep:
            raise UsageError(expected)
        scheme = scheme.lower()
        if scheme not in SCHEMES:
            raise UsageError(f"{what}: unsupported scheme {clip(scheme)!r} (supported: ssh, gw)")
        rest = rest.rstrip("/")
        if "/" in rest or "?" in rest or "#" in rest:
            raise UsageError(expected)
        user: str | None = None
        if at:
            userinfo, _, rest = rest.rpartition("@")
            if scheme == GATEWAY and "," in userinfo:
                # gw://a,me@b would otherwise read as user "a,me" at b.
                raise UsageError(
                    f"{what}: one USER@ for every relay, before the first: "
                    f"gw://USER@RELAY,RELAY2, got {clip(text)!r}"
                )
            user = _parse_user(userinfo, what)
        parts = rest.split(",")
        if len(parts) > 1 and scheme != GATEWAY:
            raise UsageError(
                f"{what}: only a gateway's via (gw://) names several servers, got {clip(text)!r}"
            )
        if len(parts) > 1 and "" in parts:
            raise UsageError(f"{what}: an empty server in the list, got {clip(text)!r}")
        if len(parts) > MAX_RELAYS:
            raise UsageError(f"{what}: at most {MAX_RELAYS} relays, got {len(parts)}")
        relays = [_parse_server(scheme, part, user, what) for part in parts]
        seen: set[tuple[str, int]] = set()
        for relay in relays:
            key = (relay.host.lower(), relay.port)
            if key in seen:
                raise UsageError(f"{what}: relay {host_port(relay.host, relay.port)} named twice")
            seen.add(key)
        return replace(relays[0], alternates=tuple(relays[1:]))


#: The most relays one gateway via may name: each that fails costs a login attempt before the
#: next is tried.
MAX_RELAYS = 8


def _parse_server(scheme: str, text: str, user: str | None, what: str) -> Via:
    """One server of a via: ``HOST``, ``HOST:PORT``, ``[V6]`` or ``[V6]:PORT`` (an IPv6 address
    may come bare, without a port)."""
    if text.startswith("[") and text.endswith("]"):
        return Via(scheme, parse_host(text, what=what), DEFAULT_SSH_PORT, user, False)
    if text.startswith("[") or text.count(":") == 1:
        endpoint = Endpoint.parse(text, what=what)
        return Via(scheme, endpoint.host, endpoint.port, user)
    return Via(scheme, parse_host(text, what=what), DEFAULT_SSH_PORT, user, False)


def _holds_password(userinfo: str) -> bool:
    return ":" in userinfo or "%3a" in userinfo.lower()


MAX_USER = 256
# What OpenSSH's ssh (9.6 and later) refuses in a user name: shell metacharacters, which a
# ProxyCommand or Match exec would pass to a shell; and '$' too, as its host names refuse it.
# Refused here, so that both engines say so the same way, a usage error before anything starts.
SHELL_METACHARACTERS = "'`\"$;&<>|(){}"


def _parse_user(userinfo: str, what: str) -> str:
    """The percent-decoded user name: valid UTF-8, printable, no spaces, and nothing that ssh
    refuses (a leading '-', shell metacharacters, a trailing backslash)."""
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
    if user.startswith("-") or user.endswith("\\"):
        raise UsageError(
            f"{what}: a user name cannot start with '-' or end with '\\': {clip(user)!r}"
        )
    bad = sorted({c for c in user if c in SHELL_METACHARACTERS})
    if bad:
        raise UsageError(
            f"{what}: the user name {clip(user)!r} holds {' '.join(bad)}, which ssh refuses"
        )
    return user


@dataclass(frozen=True)
class SshOptions:
    """SSH client settings; secrets never live here, only paths to them."""

    identity_files: tuple[str, ...] = option(
        (),
        key="identity_file",
        short="-i",
        parse=values.paths,
        toml=(str, list),
        metavar="PATH",
        help="SSH private key to use (a profile may list several)",
        default_text="agent and ~/.ssh keys",
    )
    known_hosts: str | None = option(
        None,
        parse=values.path,
        metavar="PATH",
        help="known_hosts file to verify the server with",
        default_text="ssh_config's, else ~/.ssh/known_hosts",
    )
    keepalive_interval: float = option(
        15.0,
        parse=values.duration_or_zero,
        toml=DURATION,
        metavar="DURATION",
        help="SSH keepalive interval, 0 for off",
        default_text="15s",
    )
    keepalive_count_max: int = option(
        3,
        flag="--keepalive-count",
        parse=values.count,
        toml=(int,),
        metavar="N",
        help="Unanswered keepalives before the link counts as lost",
    )
    engine: Engine | None = option(
        None,
        parse=values.choice("openssh", "asyncssh"),
        metavar="openssh|asyncssh",
        help="How SSH tunnels move bytes: inside OpenSSH's ssh, or in process",
        default_text="openssh when ssh >= 7.6 is installed",
    )
    ssh_config: str | None = option(
        None,
        parse=values.path,
        metavar="PATH",
        help="ssh_config file to use instead of ~/.ssh/config",
        default_text="~/.ssh/config",
    )
    connect_timeout: float | None = option(
        None,
        parse=values.duration,
        toml=DURATION,
        metavar="DURATION",
        help="Bound on the TCP connect and SSH handshake, and on each reconnect attempt",
        default_text=f"within --timeout; a reconnect attempt: {RECONNECT_TIMEOUT:g}s or "
        "--timeout if shorter",
    )
    # Last, so that the fields before keep their positions.
    certificate_files: tuple[str, ...] = option(
        (),
        key="certificate_file",
        parse=values.paths,
        toml=(str, list),
        metavar="PATH",
        help="SSH certificate to log in with, signed for by its key from an identity file or "
        "the agent (a profile may list several)",
        default_text="ssh_config's CertificateFile, else KEY-cert.pub beside each key",
    )
    share_master: bool = option(
        True,
        parse=values.boolean,
        toml=(bool,),
        help="Log in once per SSH server: share an OpenSSH master with this user's other "
        "tunnels that reach it with the same ssh settings",
    )
    master_linger: float = option(
        DEFAULT_MASTER_LINGER,
        parse=values.duration,
        toml=DURATION,
        metavar="DURATION",
        help="How long a shared master stays after its last tunnel ends, for the next",
        default_text=f"{DEFAULT_MASTER_LINGER:g}s",
    )


@dataclass(frozen=True)
class TunnelSpec:
    """Every option of one tunnel, held once; flags, profiles and the Python API build it."""

    # The target and the listen address come from several keys each (to, target_host,
    # target_port; host, port), which config.ADDRESS_OPTIONS declares. A SOCKS tunnel has no
    # target: each client names its own.
    target: Endpoint | None = None
    listen: Endpoint = field(default_factory=lambda: Endpoint(DEFAULT_LISTEN_HOST, 0))
    via: Via | None = option(
        None,
        parse=lambda text: None if text == DIRECT else Via.parse(text, what="via"),
        metavar="ssh://[USER@]HOST[:PORT]|gw://[USER@]RELAY[:PORT][,RELAY2...]|direct",
        help="The SSH server the tunnel goes through (ssh_config's ProxyJump hops lead to it), "
        "or a gateway's relay, or several tried in turn (then the target is SITE/TARGET); "
        "direct TCP without (or with 'direct', over a profile's via)",
        default_text=DIRECT,
    )
    name: str = option(
        "",
        parse=values.label,
        profile=False,
        metavar="NAME",
        help="Name in banners and lists",
        default_text="profile or target",
    )
    timeout: float = option(
        DEFAULT_TIMEOUT,
        parse=values.duration,
        toml=DURATION,
        metavar="DURATION",
        help="Bound on getting ready",
        default_text="30s",
    )
    probe: bool = option(
        True, parse=values.boolean, toml=(bool,), help="Test-connect to the target before ready"
    )
    ssh: SshOptions = field(default_factory=SshOptions)
    reconnect: bool = option(
        True, parse=values.boolean, toml=(bool,), help="Reconnect a lost transport"
    )
    #: None means without limit.
    max_retries: int | None = option(
        None,
        parse=values.retries,
        toml=(int, str),
        metavar="N",
        help="Reconnect attempts before giving up, or 'unlimited'",
        default_text="unlimited; 5 with --run / --",
    )
    backoff_initial: float = option(
        0.5,
        parse=values.duration,
        toml=DURATION,
        metavar="DURATION",
        help="First reconnect delay",
        default_text="0.5s",
    )
    backoff_max: float = option(
        30.0,
        parse=values.duration,
        toml=DURATION,
        metavar="DURATION",
        help="Longest reconnect delay",
        default_text="30s",
    )
    drain: float = option(
        5.0,
        parse=values.duration_or_zero,
        toml=DURATION,
        metavar="DURATION",
        help="On stop, time for open connections to finish, 0 for none",
        default_text="5s",
    )
    ttl: float | None = option(
        None,
        parse=values.duration,
        toml=DURATION,
        metavar="DURATION",
        help="Stop after this long (30s, 5m, 2h)",
    )
    idle_timeout: float | None = option(
        None,
        parse=values.duration,
        toml=DURATION,
        metavar="DURATION",
        help="Stop after this long without connections",
    )
    max_connections: int = option(
        DEFAULT_MAX_CONNECTIONS,
        parse=values.count,
        toml=(int, str),
        metavar="N",
        help="Connections served at once; more wait until one ends",
    )
    # Last, so that the fields before keep their positions.
    socks: bool = option(
        False,
        parse=values.boolean,
        toml=(bool,),
        help="Serve SOCKS5 on the local port: each client names its target (no --to)",
    )
    allow: tuple[Rule, ...] = option(
        (),
        parse=allowlist.parse_rules,
        toml=(str, list),
        multiple=True,
        metavar="HOST:PORT",
        help="With --socks, a target clients may reach: HOST or *.DOMAIN or ADDR[/BITS] or *, "
        "then :PORT or :*; repeatable",
        default_text="any target",
    )
    hold: float = option(
        DEFAULT_HOLD,
        parse=values.duration_or_zero,
        toml=DURATION,
        metavar="DURATION",
        help="While reconnecting, time a new connection waits for the transport before it is "
        "reset, 0 for none",
        default_text="3s",
    )

    def __post_init__(self) -> None:
        if self.socks and self.target is not None:
            raise UsageError(
                "a SOCKS tunnel has no target: its clients name theirs",
                hint="drop to (or target_host and target_port), or socks",
                options=("to", "socks"),
            )
        if not self.socks and self.target is None:
            raise UsageError(
                "no target",
                hint="give a PROFILE, to HOST:PORT, target_host and target_port, or socks",
                options=("to", "target_host", "target_port", "socks"),
            )
        if self.allow and not self.socks:
            raise UsageError(
                "allow is the allowlist of a SOCKS tunnel; this one forwards to one target",
                hint="add socks, or drop allow",
                options=("allow", "socks"),
            )
        self._check_gateway()
        if not self.name:
            object.__setattr__(self, "name", "socks" if self.socks else str(self.target))
        values.label(self.name)  # the Python API's TunnelSpec(name=...) skips the option parse
        if not 0 < self.timeout <= MAX_SECONDS:
            raise UsageError(f"timeout: expected a positive number of seconds, got {self.timeout}")
        if not 0 <= self.hold <= MAX_SECONDS:
            raise UsageError(f"hold: expected a number of seconds, 0 or more, got {self.hold}")

    def _check_gateway(self) -> None:
        through = self.via is not None and self.via.scheme == GATEWAY
        behind = self.target is not None and self.target.behind_gateway
        if through and (self.socks or not behind):
            raise UsageError(
                "a tunnel through a gateway reaches one SITE/TARGET",
                hint="give to SITE/TARGET (and no socks)",
                options=("to", "via"),
            )
        if behind and not through:
            raise UsageError(
                f"{self.target} is a target behind a gateway: it needs via gw://RELAY",
                options=("to", "via"),
            )
        if through and self.ssh.engine == "asyncssh":
            raise UsageError(
                "a tunnel through a gateway runs on the openssh engine",
                hint="drop engine, or choose openssh",
                options=("engine", "via"),
            )

    @property
    def reconnect_timeout(self) -> float:
        """The bound on one reconnect attempt: connect_timeout, else RECONNECT_TIMEOUT or the
        start's timeout, whichever is shorter."""
        return self.ssh.connect_timeout or min(self.timeout, RECONNECT_TIMEOUT)

    @property
    def reaches(self) -> str:
        """What the tunnel reaches, for banners and status lines: its target, or for a SOCKS
        tunnel "socks5 (any)" or its allowlist in short."""
        if self.target is None:
            return values.socks_reach(self.allow)
        return str(self.target)

    @property
    def probe_target(self) -> Endpoint | None:
        """What a probe connects to: the target; for a SOCKS tunnel, the one host and port its
        allowlist names, if it names exactly one (otherwise no target is probed)."""
        if self.target is not None:
            return self.target
        single = allowlist.probe_target(self.allow)
        return Endpoint(*single) if single else None

    def with_changes(self, **changes: object) -> TunnelSpec:
        """A copy with some fields replaced, validated again."""
        return replace(self, **changes)  # type: ignore[arg-type]
