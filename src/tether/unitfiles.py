"""systemd unit files for a profile: a Type=notify service and, for socket activation, a socket.

Pure text from a TunnelSpec and the facts of the installation (``Installation``); nothing here
reads the environment or writes a file. Every setting carries a comment that says why.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tether.errors import UsageError, clip
from tether.listener import LOOPBACK, LOOPBACK_NAME
from tether.spec import TunnelSpec
from tether.values import host_port

# A unit name holds at most 255 characters; "tether-" and ".service" take 15 of them. Profile
# names (config.PROFILE_NAME) use only characters that unit names allow as they are, so a name
# is used unescaped: `systemctl status tether-prod-db` reads as the profile's name.
UNIT_PROFILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,239}")
# tether's own --timeout ends a slow start (exit 7) with a clear message; systemd's bound comes
# this much later, so that tether's message is the one in the journal.
START_MARGIN = 15
# After the drain, tether stops its ssh (up to 3 s) and removes its registry entry.
STOP_MARGIN = 10
# The shortest watchdog: a restart is no cure for a network that needs a minute to come back.
MIN_WATCHDOG = 60
RESTART_SEC = 5


@dataclass(frozen=True)
class Installation:
    """The facts of this machine and user that a unit depends on."""

    #: The command that runs tether: its absolute path, or an interpreter and ``-m tether``.
    command: tuple[str, ...]
    user: str
    uid: int
    #: The config file that defines the profile, absolute.
    config: str
    #: tether's variables to carry into the service, so that it sees what this shell sees.
    environment: Mapping[str, str] = field(default_factory=dict)
    #: Whether ::1 can be bound here (a host without IPv6 listens on 127.0.0.1 alone).
    ipv6_loopback: bool = True


@dataclass(frozen=True)
class UnitFile:
    name: str
    text: str


def unit_name(profile: str, suffix: str = "service", *, what: str = "profile name") -> str:
    """``tether-PROFILE.SUFFIX``; a name that is no valid unit name is refused."""
    if not UNIT_PROFILE.fullmatch(profile):
        raise UsageError(
            f"{what} {clip(profile)!r} cannot name a systemd unit",
            hint="use letters, digits, '.', '_' and '-', at most 240 of them",
        )
    return f"tether-{profile}.{suffix}"


def specifiers(text: str) -> str:
    """``text`` with systemd's specifier character escaped (``%`` -> ``%%``)."""
    return text.replace("%", "%%")


def one_line(value: str, what: str) -> str:
    """``value``, refused if it could end its line of a unit file or hide in it: a newline
    would start a setting or a section of its own (``[Service]``, ``ExecStartPre=+...``, run
    as root), and a trailing backslash would join the next line to it. Every value a profile
    gives is checked where it is parsed; this is the last check, where it is written."""
    if not value.isprintable() or value.endswith("\\"):
        raise UsageError(
            f"{what}: {clip(value)!r} holds control characters or ends in a backslash, "
            "which a unit file cannot hold"
        )
    return value


def quoted(word: str, *, command: bool = False) -> str:
    """One word of a unit file setting: escaped, and in double quotes when it needs them.

    In ``command`` lines (ExecStart=) ``$`` is systemd's variable expansion, so it is doubled.
    """
    if not word.isprintable():
        raise UsageError(f"{clip(word)!r} holds control characters, which a unit file cannot")
    text = specifiers(word)
    if command:
        text = text.replace("$", "$$")
    if word and not re.search(r"[\s\"'\\;]", word):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def listen_streams(spec: TunnelSpec, ipv6_loopback: bool) -> list[str]:
    """The socket unit's ListenStream= values for the spec's listen address."""
    host, port = spec.listen.host, spec.listen.port
    if port == 0:
        raise UsageError(
            f"--socket needs a fixed port, and profile {spec.name} has none",
            hint="set port in the profile",
        )
    if host == LOOPBACK_NAME:
        hosts = list(LOOPBACK) if ipv6_loopback else [LOOPBACK[0]]
    else:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise UsageError(
                f"--socket needs a numeric listen address or localhost, not {clip(host)!r}",
                hint="set host in the profile to an address",
            ) from None
        hosts = [host]
    return [host_port(h, port) for h in hosts]


def description(spec: TunnelSpec) -> str:
    via = f" via {spec.via}" if spec.via else ""
    listen = host_port(spec.listen.host, spec.listen.port) if spec.listen.port else "a free port"
    text = f"tether tunnel {spec.name}: {listen} -> {spec.reaches}{via}"
    return specifiers(one_line(text, "Description"))


def service_unit(
    spec: TunnelSpec, at: Installation, *, user_mode: bool, socket: bool = False
) -> UnitFile:
    """The Type=notify service that runs ``tether start PROFILE --foreground``."""
    name = unit_name(spec.name)
    command = [*at.command, "start", spec.name, "--foreground", "--config", at.config]
    watchdog = max(MIN_WATCHDOG, math.ceil(2 * (spec.timeout + spec.backoff_max)))
    lines = [
        *_header(name, spec, user_mode),
        "[Unit]",
        f"Description={description(spec)}",
    ]
    if not user_mode:
        lines += [
            "# ssh needs a network; tether's reconnects cover one that comes and goes later.",
            "Wants=network-online.target",
            "After=network-online.target",
        ]
    if socket:
        sock = unit_name(spec.name, "socket")
        lines += [
            "# systemd holds the port (socket activation) and hands it to tether.",
            f"Requires={sock}",
            f"After={sock}",
        ]
    registry = at.environment.get("TETHER_RUNTIME_DIR")
    if not user_mode and registry is None:
        runtime = f"user-runtime-dir@{at.uid}.service"
        lines += [
            f"# /run/user/{at.uid} exists while this unit runs, even with nobody logged in:",
            "# tether registers there, where `tether list` in your shell looks too: through",
            f"# XDG_RUNTIME_DIR, or (su, sudo -u: none set) /run/user/{at.uid} itself, when it",
            "# is yours, mode 0700. TETHER_RUNTIME_DIR, where set, decides instead.",
            f"Wants={runtime}",
            f"After={runtime}",
        ]
    notify = [
        "# tether says when the tunnel really serves (READY=1: bound, connected, probed) and",
        "# what it is doing (STATUS=, in `systemctl status`). Only tether may say it, not its ssh.",
    ]
    lines += service_head(
        notify,
        command,
        user=at.user,
        uid=at.uid,
        environment=at.environment,
        user_mode=user_mode,
    )
    lines += [
        f"# tether gives up after the profile's timeout ({spec.timeout:g}s, exit 7); systemd a",
        "# little later, so that the journal shows tether's reason.",
        f"TimeoutStartSec={math.ceil(spec.timeout) + START_MARGIN}",
        f"# On stop tether drains connections for up to drain ({spec.drain:g}s), then exits 0.",
        f"TimeoutStopSec={math.ceil(spec.drain) + STOP_MARGIN}",
        "# SIGTERM goes to tether alone, which stops its ssh once the drain is over.",
        "KillMode=mixed",
        "# tether pings the watchdog while the tunnel is up, and stops while it reconnects: a",
        "# tunnel still down after two reconnect attempts at the longest backoff is restarted.",
        f"WatchdogSec={watchdog}",
        "# ...with SIGTERM, so that it still closes cleanly (the default, SIGABRT, dumps core).",
        "WatchdogSignal=SIGTERM",
        "Restart=on-failure",
        f"RestartSec={RESTART_SEC}",
        "# A bad profile or flag (exit 2) will not fix itself by restarting.",
        "RestartPreventExitStatus=2",
        "",
        "# Hardening that leaves ssh, its agent and its keys working.",
        "# ssh is not setuid here; only host-based authentication (ssh-keysign) would need it.",
        "NoNewPrivileges=yes",
        "# IP for the tunnel, Unix sockets for ssh's control socket, its agent and this unit's",
        "# notifications, netlink for glibc's getaddrinfo.",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        "RestrictNamespaces=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "SystemCallArchitectures=native",
        "# The registry, control sockets and ssh's files: the user's alone.",
        "UMask=0077",
    ]
    lines += _user_sandbox(registry) if user_mode else _system_sandbox(at, registry)
    lines += [
        "",
        "[Install]",
        f"WantedBy={'default.target' if user_mode else 'multi-user.target'}",
        "",
    ]
    return unit_file(name, lines)


def service_head(
    why: list[str],
    command: Sequence[str],
    *,
    user: str,
    uid: int,
    environment: Mapping[str, str],
    user_mode: bool,
) -> list[str]:
    """The opening of a Type=notify [Service] section that runs ``command`` as ``user``.

    ``why`` is the comment above Type=notify. A system unit names the user, and unless
    TETHER_RUNTIME_DIR is carried, points XDG_RUNTIME_DIR at the user's /run/user/UID, where
    the process registers; ``environment`` is carried in as it is.
    """
    lines = [
        "",
        "[Service]",
        *why,
        "Type=notify",
        "NotifyAccess=main",
        "ExecStart=" + " ".join(quoted(word, command=True) for word in command),
    ]
    if not user_mode:
        lines += [f"User={one_line(user, 'User')}"]
    if not user_mode and environment.get("TETHER_RUNTIME_DIR") is None:
        lines += [f"Environment=XDG_RUNTIME_DIR=/run/user/{uid}"]
    for key, value in sorted(environment.items()):
        lines += [f"Environment={quoted(f'{key}={value}')}"]
    return lines


def unit_file(name: str, lines: list[str]) -> UnitFile:
    """The unit file of ``lines``, each of which must be one line (see one_line)."""
    for line in lines:
        one_line(line, f"unit file {name}")
    return UnitFile(name, "\n".join(lines))


def _header(name: str, spec: TunnelSpec, user_mode: bool) -> list[str]:
    where = "~/.config/systemd/user" if user_mode else "/etc/systemd/system"
    return [
        f"# file: {name}",
        f"# Made by tether systemd-unit for profile {spec.name}, for {where}.",
    ]


def _system_sandbox(at: Installation, registry: str | None) -> list[str]:
    writable = quoted(f"-{registry}") if registry else f"/run/user/{at.uid}"
    return [
        "# Read-only file system: tether reads keys, known_hosts and its config, and writes",
        "# only its registry. ssh never writes known_hosts here (host keys are checked strictly).",
        "# ProtectHome= would add only a read-only or hidden /run/user, the registry's home.",
        "ProtectSystem=strict",
        f"ReadWritePaths={writable}",
        "# ssh's private control directory goes to this private /tmp.",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "# No capability: a port below 1024 comes from a .socket unit (systemd-unit --socket).",
        "CapabilityBoundingSet=",
    ]


def _user_sandbox(registry: str | None) -> list[str]:
    writable = quoted(f"-{registry}") if registry else "%t"
    return [
        "# A user manager can confine further only inside a user namespace, which some systems",
        "# forbid (a unit asking for one then fails to start). Where they are allowed (Debian's",
        "# default), uncomment these:",
        "#ProtectSystem=strict",
        f"#ReadWritePaths={writable}",
        "#PrivateTmp=yes",
        "#ProtectKernelTunables=yes",
        "#ProtectControlGroups=yes",
    ]


def socket_unit(spec: TunnelSpec, at: Installation, *, user_mode: bool) -> UnitFile:
    """The socket that holds the profile's port and starts the service at the first client."""
    name = unit_name(spec.name, "socket")
    streams = listen_streams(spec, at.ipv6_loopback)
    lines = [
        *_header(name, spec, user_mode),
        "[Unit]",
        f"Description={description(spec)} (listening socket)",
        "",
        "[Socket]",
        "# systemd listens here and starts the service at the first connection; clients that",
        "# come before tether is ready wait in the backlog, and are served once it is.",
        *(f"ListenStream={stream}" for stream in streams),
    ]
    if spec.listen.host == "::":
        lines += ["# [::] takes IPv4 too, as tether binds it.", "BindIPv6Only=both"]
    if spec.listen.host == LOOPBACK_NAME and not at.ipv6_loopback:
        lines += ["# No [::1]: this host has no IPv6 loopback."]
    lines += [
        "# tether accepts every connection itself: one service for all of them.",
        "Accept=no",
        "Backlog=512",
        "",
        "[Install]",
        "WantedBy=sockets.target",
        "",
    ]
    return unit_file(name, lines)


def unit_files(
    spec: TunnelSpec, at: Installation, *, user_mode: bool, socket: bool
) -> list[UnitFile]:
    """The service, and with ``socket`` the socket unit too."""
    units = [service_unit(spec, at, user_mode=user_mode, socket=socket)]
    if socket:
        units.append(socket_unit(spec, at, user_mode=user_mode))
    return units
