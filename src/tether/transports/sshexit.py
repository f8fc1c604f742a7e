"""Why an OpenSSH master exited while it started, as tether's errors: read from what it printed,
and asked of ssh's own helpers (ssh -G, ssh-keygen, ssh-keyscan) where its words are not enough.

The helpers run as asyncio subprocesses: they never hold up the event loop (a keyscan of a
silent server takes seconds), and a signal that cancels the wait kills them too.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import pwd
import re
import socket
import subprocess
from pathlib import Path

from tether.errors import TetherError, TransportUnreachableError
from tether.transports.masterconfig import parse_resolved
from tether.transports import sshagent, sshcerts, sshidentities
from tether.transports.sshsetup import (
    KeyProblem,
    config_problem,
    hop_refused,
    login_refused,
    unsafe_config,
)

HELPER_TIMEOUT = 10.0


async def output(argv: list[str], data: bytes | None = None) -> str:
    """What a short helper command prints; empty if it cannot run or takes too long."""
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
    except OSError:
        return ""
    try:
        out, _ = await asyncio.wait_for(process.communicate(data), HELPER_TIMEOUT)
    except TimeoutError:
        return ""
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return out.decode(errors="replace")


async def resolve(argv: list[str]) -> dict[str, list[str]]:
    """What ssh makes of the host after ssh_config: `ssh -G` with the master's own arguments
    (hostname, port, userknownhostsfile, ...), every value of a key in order (identityfile is
    often repeated)."""
    return parse_resolved(await output([argv[0], "-G", *argv[1:]]))


def first(resolved: dict[str, list[str]], key: str, default: str) -> str:
    """The value of ``key`` that ssh uses (the first), or ``default``."""
    return resolved.get(key, [default])[0]


# What a master that exits during start-up says, and what it means. OpenSSH 7.6 to 9.x.
_KEY_UNKNOWN = re.compile(r"host key is known for (\S+) and you have requested strict checking")
_KEY_CHANGED = re.compile(r"Host key for (\S+) has changed and you have requested strict")
_KEY_REVOKED = re.compile(r"host key for (\S+) is marked as revoked")
_FINGERPRINT = re.compile(r"(SHA256:[A-Za-z0-9+/=]+)")
_OFFENDING = re.compile(r"Offending \S+ key in (.+):\d+")
# "user@host: Permission denied (publickey)." from 7.x on; user@host is who logged in where.
_DENIED = re.compile(r"(?:(?P<login>\S+@\S+): )?Permission denied \((?P<methods>.*)\)")
_UNRESOLVED = re.compile(r"Could not resolve hostname (\S+): (.+)")
_BAD_CONFIG = re.compile(r"Bad owner or permissions on (.+)$", re.M)
# What the master says when its ProxyJump hop (its ProxyCommand, `ssh -W`) exited before the
# master's own server spoke: whatever the hop said before is about the hop.
_HOP_CLOSED = re.compile(r"(?:kex|ssh)_exchange_identification: |Connection closed by UNKNOWN")
_SIGNING_CA = re.compile(r"Signing CA: \S+ (SHA256:[A-Za-z0-9+/=]+)")


async def startup_error(stderr: str, resolved: dict[str, list[str]], via: str) -> TetherError:
    """tether's error for a master that exited before it was up, from what it printed; ``via``
    names the server as the user did. The words follow the asyncssh engine's."""
    last = stderr.strip().splitlines()[-1] if stderr.strip() else "ssh exited"
    known_hosts = first(resolved, "userknownhostsfile", "~/.ssh/known_hosts").split()[0]
    jump = first(resolved, "proxyjump", "none")
    proxied = jump != "none" or first(resolved, "proxycommand", "none") != "none"
    bad_config = _BAD_CONFIG.search(stderr)
    if bad_config:  # an ssh_config that tether did not check itself: one it includes
        return _unsafe_config(bad_config.group(1).strip())
    for pattern, kind in (
        (_KEY_REVOKED, "revoked"),
        (_KEY_CHANGED, "changed"),
        (_KEY_UNKNOWN, "unknown"),
    ):
        found = pattern.search(stderr)
        if found:
            hostname, port = _host_and_port(found.group(1))
            offending = _OFFENDING.search(stderr)
            where = offending.group(1) if offending else known_hosts
            if kind == "unknown" and await _only_authorities(found.group(1), where):
                kind = "authority"  # ssh fell back from certificates to a plain, unknown key
            fingerprint = _FINGERPRINT.search(stderr)
            hop = jump != "none" and _HOP_CLOSED.search(stderr, found.end()) is not None
            return KeyProblem(
                kind,
                hostname,
                port,
                where,
                fingerprint.group(1) if fingerprint else await _fingerprint(hostname, port),
                # Behind a jump host, the server cannot be asked from here.
                await _authority(hostname, port) if kind == "unknown" and not proxied else None,
                jump=jump if hop else None,
            ).error()
    if "Host key verification failed" in stderr:
        return KeyProblem(
            "unknown",
            first(resolved, "hostname", "?"),
            int(first(resolved, "port", "22")),
            known_hosts,
        ).error()
    # The last one: a hop's comes before the master's own.
    denied = next(reversed(list(_DENIED.finditer(stderr))), None)
    if denied:
        if jump != "none" and _HOP_CLOSED.search(stderr, denied.end()):
            return hop_refused(denied.group("login") or jump, jump, via)
        user = first(resolved, "user", "") or getpass.getuser()
        agent = await sshagent.agent_keys(_agent_path(resolved))
        plan = login_plan(resolved, agent or [])
        return sshcerts.refusal(via, plan.offered, user) or login_refused(
            via,
            f"Permission denied ({denied.group('methods')})",
            plan.locked[0] if plan.locked else None,
            agent=agent is not None,
        )
    unresolved = _UNRESOLVED.search(stderr)
    if unresolved:
        return TransportUnreachableError(
            f"cannot resolve SSH server {unresolved.group(1)}: {unresolved.group(2)}"
        )
    return TransportUnreachableError(f"cannot reach SSH server {via}: {last.removeprefix('ssh: ')}")


def _unsafe_config(path: str) -> TetherError:
    try:
        problem = config_problem(os.stat(path), os.getuid())
    except OSError:
        problem = None
    return unsafe_config(path, problem)


def _host_and_port(host: str) -> tuple[str, int]:
    """'[h]:2222' -> ('h', 2222); 'h' -> ('h', 22): known_hosts' way of writing a host."""
    found = re.fullmatch(r"\[(.+)\]:(\d+)", host)
    return (found.group(1), int(found.group(2))) if found else (host, 22)


async def _only_authorities(host: str, known_hosts: str) -> bool:
    """Whether the only known_hosts lines for ``host`` are @cert-authority ones."""
    found = await output(["ssh-keygen", "-F", host, "-f", str(Path(known_hosts).expanduser())])
    markers = re.findall(r"^# Host .* found: line \d+ ?(.*)$", found, re.M)
    return bool(markers) and all(marker.strip() == "CA" for marker in markers)


async def _authority(hostname: str, port: int) -> str | None:
    """The fingerprint of the CA that signed the host certificate the server offers, if it
    offers one (asked of it directly, as ssh-keyscan -c does)."""
    scan = await output(["ssh-keyscan", "-c", "-T", "5", "-p", str(port), hostname])
    if not scan.strip():
        return None
    found = _SIGNING_CA.search(await output(["ssh-keygen", "-L", "-f", "-"], scan.encode()))
    return found.group(1) if found else None


async def _fingerprint(hostname: str, port: int) -> str | None:
    """The SHA256 fingerprint of the key the server offers, asked of it directly."""
    scan = await output(["ssh-keyscan", "-T", "5", "-p", str(port), hostname])
    listed = await output(["ssh-keygen", "-l", "-f", "-"], scan.encode())
    found = _FINGERPRINT.search(listed)
    return found.group(1) if found else None


def login_plan(
    resolved: dict[str, list[str]], agent: list[sshidentities.AgentKey]
) -> sshidentities.Plan:
    """What ssh had to offer (its identity and certificate files, and the agent's keys), to
    explain a refused login as the asyncssh engine does (sshidentities.py)."""
    listed = {
        kind: [p for p in (_expanded(v, resolved) for v in resolved.get(kind, [])) if p]
        for kind in ("identityfile", "certificatefile")
    }
    return sshidentities.plan(
        listed["identityfile"],
        listed["certificatefile"],
        agent,
        identities_only=first(resolved, "identitiesonly", "no") == "yes",
    )


def _agent_path(resolved: dict[str, list[str]]) -> str:
    """The agent ssh asks: IdentityAgent (expanded as ssh does), else $SSH_AUTH_SOCK."""
    named = first(resolved, "identityagent", "SSH_AUTH_SOCK")
    if named not in ("SSH_AUTH_SOCK", "none"):
        named = _expanded(named, resolved) or "none"
    return sshagent.agent_path(named)


_TOKEN = re.compile(r"%(.)|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expanded(path: str, resolved: dict[str, list[str]]) -> str | None:
    """A path of `ssh -G` (which leaves ~, %-tokens and ${VARIABLES} as written) as ssh opens
    it; None if it uses a token that tether does not know."""
    home = _home()
    host = first(resolved, "host", "")
    tokens = {
        "%": "%",
        "d": home,
        "u": getpass.getuser(),
        "i": str(os.getuid()),
        "h": first(resolved, "hostname", ""),
        "n": host,
        "p": first(resolved, "port", ""),
        "r": first(resolved, "user", ""),
        "k": first(resolved, "hostkeyalias", "") or host,
        "l": socket.gethostname(),
        "L": socket.gethostname().split(".")[0],
    }
    unknown = False

    def value(found: re.Match[str]) -> str:
        nonlocal unknown
        known = tokens.get(found.group(1)) if found.group(1) else os.environ.get(found.group(2))
        unknown = unknown or known is None
        return known or ""

    if path == "~" or path.startswith("~/"):
        path = home + path[1:]
    expanded = _TOKEN.sub(value, path)
    return None if unknown else str(Path(expanded).expanduser())


def _home() -> str:
    """The home directory ssh uses: the passwd entry's, whatever $HOME says."""
    try:
        return pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        return str(Path.home())
