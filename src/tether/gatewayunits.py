"""systemd service units for a gateway's long-running processes: a signer, a relay, an agent.

Each runs `tether gateway KIND ... --name NAME` in the foreground as a Type=notify service, as
gatewayhost.py hosts it: READY=1 once it serves, STATUS=, WATCHDOG=1 while it serves. Pure text
from what the command line resolved (``GatewayProcess``) and who runs it (``Account``); every
value goes through unitfiles' quoting, and every line through its one-line check.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from tether.unitfiles import (
    MIN_WATCHDOG,
    RESTART_SEC,
    UnitFile,
    one_line,
    quoted,
    service_head,
    specifiers,
    unit_file,
    unit_name,
)

Kind = Literal["signer", "relay", "agent"]

# An agent's link: ssh's ConnectTimeout and the longest pause between two attempts
# (gateway/agent.py's CONNECT_TIMEOUT and LINK_BACKOFF_MAX; a test holds them equal).
AGENT_CONNECT_TIMEOUT = 10
AGENT_BACKOFF_MAX = 30.0
# A stop: tether ends its sshd (3 s grace, then SIGKILL) and an agent its links (the same),
# then removes its registry entry.
STOP_TIMEOUT = 20
# A relay and an agent hold thousands of sessions: on each, every client session is an sshd
# process of its own (systemd's default TasksMax, 15% of the kernel's limit, can be a few
# thousand), and one process holds a socket per session: on the relay the sshd of the agent's
# link, at the site the agent's `ssh -R`. tether raises its children's soft limit to this.
SESSIONS_NOFILE = 65536
SESSIONS_TASKS = 16384
# Exits that no restart mends: 2, a bad flag, file or directory; 5, a site removed or a relay
# removed (its certificate is refused, again and again).
NO_RESTART = (2, 5)
# Below it, binding a port needs CAP_NET_BIND_SERVICE.
PRIVILEGED_PORTS = 1024


@dataclass(frozen=True)
class Account:
    """Who runs the process, and with which tether."""

    #: The command that runs tether: its absolute path, or an interpreter and ``-m tether``.
    command: tuple[str, ...]
    user: str
    uid: int
    #: tether's variables to carry into the service (TETHER_RUNTIME_DIR: where it registers).
    environment: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GatewayProcess:
    """One signer, relay or agent, as its command line runs it."""

    kind: Kind
    #: Its name in `tether list` and `tether stop`, and in the unit's: tether-NAME.service.
    name: str
    #: What follows `tether gateway KIND`, every path absolute: the gateway directory, bundle or
    #: enrolment file, and the options (--listen, --target, --targets-file).
    arguments: tuple[str, ...]
    #: The directory it writes: a signer's gateway directory, a relay's or an agent's state
    #: directory. None: systemd makes one (StateDirectory=, system units only).
    directory: str | None
    #: The port it listens on for the world (an agent listens on loopback only: None).
    port: int | None = None


def watchdog_seconds(kind: Kind) -> int:
    """WatchdogSec= for ``kind``. gatewayhost.py pings at half of it while the process serves:
    a signer and a relay whenever their event loop runs (the watchdog catches a hung one), an
    agent while one relay at least is linked. An agent unlinked through two attempts at its
    longest backoff is restarted; a shorter outage is the network's, which a restart won't cure."""
    if kind == "agent":
        return max(MIN_WATCHDOG, math.ceil(2 * (AGENT_CONNECT_TIMEOUT + AGENT_BACKOFF_MAX)))
    return MIN_WATCHDOG


def description(process: GatewayProcess) -> str:
    """``tether gateway relay relay-r1``; a signer named as its kind only once."""
    named = "" if process.name == process.kind else f" {process.name}"
    return specifiers(one_line(f"tether gateway {process.kind}{named}", "Description"))


def state_directory(process: GatewayProcess) -> str:
    """Where systemd makes a relay's or an agent's state directory in a system unit, below
    StateDirectory's /var/lib (made by systemd for root, 0755, as sshd wants its parents)."""
    return f"tether/{process.name}"


def gateway_unit(process: GatewayProcess, account: Account, *, user_mode: bool) -> UnitFile:
    """The Type=notify service that runs ``process`` as ``account``."""
    name = unit_name(process.name, what="name")
    if user_mode and process.directory is None:
        raise ValueError("a user unit needs the state directory named")
    directory = process.directory
    if directory is None:
        directory = "/var/lib/" + state_directory(process)
    command = [*account.command, "gateway", process.kind, *process.arguments]
    command += ["--name", process.name]
    if process.kind != "signer":
        command += ["--state-dir", directory]
    watchdog = watchdog_seconds(process.kind)
    registry = account.environment.get("TETHER_RUNTIME_DIR")
    where = "~/.config/systemd/user" if user_mode else "/etc/systemd/system"
    lines = [
        f"# file: {name}",
        f"# Made by tether gateway systemd-unit {process.kind}, for {where}.",
        "[Unit]",
        f"Description={description(process)}",
    ]
    if not user_mode:
        lines += [
            "# A signer and a relay bind their address, an agent dials out: all need a network.",
            "Wants=network-online.target",
            "After=network-online.target",
        ]
    if not user_mode and registry is None:
        runtime = f"user-runtime-dir@{account.uid}.service"
        lines += [
            f"# /run/user/{account.uid} exists while this unit runs, even with nobody logged in:",
            "# the process registers there, where `tether list` and `tether stop` look.",
            f"Wants={runtime}",
            f"After={runtime}",
        ]
    lines += service_head(
        ["# tether says when it serves (READY=1) and what it does (STATUS=); its sshd may not."],
        command,
        user=account.user,
        uid=account.uid,
        environment=account.environment,
        user_mode=user_mode,
    )
    if process.directory is None:
        lines += [
            "# systemd makes the state directory (private, the account's) before each start.",
            f"StateDirectory={quoted(state_directory(process))}",
            "StateDirectoryMode=0700",
        ]
    lines += [
        "# Not ready within as long as the watchdog grants a running one: restarted, as below.",
        f"TimeoutStartSec={watchdog}",
        "# On stop tether ends its sshd and its sessions, then its registry entry.",
        f"TimeoutStopSec={STOP_TIMEOUT}",
        "# SIGTERM goes to tether alone, which stops its sshd; what is left then is killed.",
        "KillMode=mixed",
        *_watchdog_comment(process.kind),
        f"WatchdogSec={watchdog}",
        "# ...with SIGTERM, so that it still stops cleanly (the default, SIGABRT, dumps core).",
        "WatchdogSignal=SIGTERM",
        "Restart=on-failure",
        f"RestartSec={RESTART_SEC}",
        "# A bad flag or file (exit 2), a removed site or relay (exit 5): no restart mends them.",
        "RestartPreventExitStatus=" + " ".join(map(str, NO_RESTART)),
    ]
    if process.kind in ("relay", "agent"):
        lines += [
            "# Thousands of sessions, each an sshd process, and a link with a socket for each.",
            f"LimitNOFILE={SESSIONS_NOFILE}",
            f"TasksMax={SESSIONS_TASKS}",
        ]
    lines += [
        "",
        "# Hardening that leaves the gateway's sshd (run as this account, not root) working.",
        "NoNewPrivileges=yes",
        "# IP for sshd and ssh, Unix sockets for the notifications, the control socket and a",
        "# relay's signer socket, netlink for glibc's getaddrinfo.",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        "RestrictNamespaces=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "SystemCallArchitectures=native",
        "# Keys, certificates, the registry: the account's alone.",
        "UMask=0077",
    ]
    writable = [_registry_path(registry, account.uid, user_mode)]
    if process.directory is not None:
        writable.append(quoted(process.directory))
    if user_mode:
        lines += _user_sandbox(writable)
    else:
        lines += _system_sandbox(process, writable)
    lines += [
        "",
        "[Install]",
        f"WantedBy={'default.target' if user_mode else 'multi-user.target'}",
        "",
    ]
    return unit_file(name, lines)


def _watchdog_comment(kind: Kind) -> list[str]:
    if kind == "agent":
        return [
            "# tether pings the watchdog while one relay at least is linked: an agent with no",
            "# link through two attempts at its longest backoff is restarted.",
        ]
    return ["# tether pings the watchdog while it serves: a hung process is restarted."]


def _registry_path(registry: str | None, uid: int, user_mode: bool) -> str:
    """Where the process registers (its entry and control socket), as ReadWritePaths= takes
    it: a directory named by TETHER_RUNTIME_DIR may not exist yet ("-": then it is skipped)."""
    if registry is not None:
        return quoted(f"-{registry}")
    return "%t" if user_mode else f"/run/user/{uid}"


def _system_sandbox(process: GatewayProcess, writable: list[str]) -> list[str]:
    lines = [
        "# Read-only file system but for the registry and the directory it writes:",
        _writes(process.kind),
        "ProtectSystem=strict",
        f"ReadWritePaths={' '.join(writable)}",
        "# ssh-keygen's and sshd's temporary files go to this private /tmp.",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
    ]
    if process.port is not None and process.port < PRIVILEGED_PORTS:
        return [
            *lines,
            f"# Port {process.port} is privileged: this capability binds it, and nothing more.",
            "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
            "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        ]
    return [
        *lines,
        "# No capability: sshd runs as this account, as it does by hand.",
        "CapabilityBoundingSet=",
    ]


def _writes(kind: Kind) -> str:
    return {
        "signer": "# the gateway directory (its serials, audit log, revocations, sshd's files).",
        "relay": "# its state directory (keys, sshd's files, the policy a signer last sent).",
        "agent": "# its state directory (the site sshd's keys and config, the links' files).",
    }[kind]


def _user_sandbox(writable: list[str]) -> list[str]:
    return [
        "# A user manager can confine further only inside a user namespace, which some systems",
        "# forbid (a unit asking for one then fails to start). Where they are allowed (Debian's",
        "# default), uncomment these:",
        "#ProtectSystem=strict",
        f"#ReadWritePaths={' '.join(writable)}",
        "#PrivateTmp=yes",
        "#ProtectKernelTunables=yes",
        "#ProtectControlGroups=yes",
    ]
