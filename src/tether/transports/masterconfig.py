"""The OpenSSH master's config file, written for each connection of a tunnel.

It sets tether's options under `Host *` before it includes the user's own config (and the
system's, which `-F` would otherwise drop): for ssh the first value wins, and unlike `-o`, a
config file reaches ProxyJump hops too. So host keys are always checked, nothing prompts, and a
user's ControlMaster, ControlPersist or LocalForward lines cannot make this ssh (or a hop) share,
outlive or bind anything. Every value from a user is quoted or escaped as ssh reads it back, or
refused.
"""

from __future__ import annotations

import functools
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

from tether import paths
from tether.errors import ConfigError
from tether.spec import SshOptions, Via

MIN_VERSION = (7, 6)  # stdio forwarding through the mux socket

CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
)


@functools.cache
def openssh_version() -> tuple[int, int] | None:
    """The (major, minor) version of the ssh on PATH, or None if there is none."""
    ssh = shutil.which("ssh")
    if ssh is None:
        return None
    try:
        done = subprocess.run(
            [ssh, "-V"], capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"OpenSSH_(\d+)\.(\d+)", done.stderr + done.stdout)
    return (int(found.group(1)), int(found.group(2))) if found else None


def available() -> bool:
    """Whether the ssh on PATH can be the OpenSSH engine's master."""
    version = openssh_version()
    return version is not None and version >= MIN_VERSION


def master_argv(
    config: Path,
    control: Path,
    whom: list[str],
    *,
    linger: float | None = None,
    log_file: Path | None = None,
    traced: bool = False,
) -> list[str]:
    """A master's command line, with its generated ``config`` and ``control`` socket, logging
    in to ``whom`` (``destination``'s words, last). With ``linger`` and ``log_file``, a shared
    master's, which stays that long after its last client and writes its words to
    ``log_file`` (-E: its stderr goes once it forks); ``traced``, one that logs at DEBUG1
    (tether diagnose)."""
    # -F is read as it is; -S is token- and variable-expanded as ControlPath is.
    argv = [shutil.which("ssh") or "ssh", "-F", str(config), "-M"]
    argv += ["-S", tokens_escaped(str(control), "TMPDIR")]
    argv += ["-N", "-T"]
    # On the command line, these are the main connection's alone: not a hop's.
    level = "DEBUG1" if traced else "INFO"
    # ssh takes whole seconds, and 0 would mean for ever.
    persist = "no" if linger is None else f"{max(1, math.ceil(linger))}s"
    argv += ["-o", f"ControlPersist={persist}", "-o", f"LogLevel={level}"]
    if log_file is not None:
        argv += ["-E", str(log_file)]  # taken as it is: no tokens, no variables
    return [*argv, *whom]


def destination(via: Via) -> list[str]:
    """The last words of an ssh command line: whom the master logs in to."""
    words = ["-p", str(via.port)] if via.port_given else []
    if via.user:
        words += ["-l", via.user]
    return [*words, "--", via.host]


def parse_resolved(text: str) -> dict[str, list[str]]:
    """What `ssh -G` printed, as each setting's values in order (identityfile is often
    repeated, and its order matters)."""
    resolved: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        resolved.setdefault(key, []).append(value)
    return resolved


def _seconds(value: float) -> int:
    """ssh takes whole seconds; a fraction rounds up, so that 0.5 is never 0 (off)."""
    return math.ceil(value)


# From 8.7, ssh reads a config line as shell-like words: a backslash escapes a quote or another
# backslash. Before, both are literal, and a quoted value cannot hold a quote.
ESCAPES_FROM = (8, 7)
_GLOB = re.compile(r"([\\*?\[\]])")


def quoted(value: str, what: str) -> str:
    """``value`` as one double-quoted word of a config line, read back by ssh as it is."""
    if not value.isprintable():  # a line break would end the line; no control char belongs
        raise ConfigError(f"{what}: cannot pass {value!r} to ssh: it holds a control character")
    if _newer_than(ESCAPES_FROM):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if '"' in value:
        raise ConfigError(f"{what}: cannot pass {value!r} to ssh: it holds a quote")
    return f'"{value}"'


def _newer_than(version: tuple[int, int]) -> bool:
    """Whether the ssh on PATH is ``version`` or later (an unknown one counts as new)."""
    found = openssh_version()
    return found is None or found >= version


def tokens_escaped(value: str, what: str = "path") -> str:
    """A path as ssh reads it where it expands %-tokens and ${VARIABLES} (IdentityFile,
    CertificateFile, UserKnownHostsFile, ControlPath and -S): "%" is written "%%"; "${" has no
    escape."""
    if "${" in value:
        raise ConfigError(
            f"{what}: cannot pass {value!r} to ssh: it holds '${{', which ssh would expand "
            "as an environment variable",
            hint="rename the file or the directory, or use --engine asyncssh",
        )
    return value.replace("%", "%%")


def _glob_escaped(value: str) -> str:
    """A path as ssh's Include reads it: a glob(3) pattern, so *, ?, [, ] and the backslash
    itself are escaped with a backslash. (OpenSSH 9.2 expands neither %-tokens nor variables
    in Include.)"""
    return _GLOB.sub(r"\\\1", value)


# Every ssh_config(5) directive (OpenSSH 9.2) was reviewed for what it does to the master's
# process or session shape: whether it can fork, bind, run a command, open a session, prompt or
# outlive the tunnel. PINNED are set first under `Host *` (so for every hop too); the rest are
# the user's, for these reasons:
# - they choose where and how to connect or log in, and run nothing that outlives the login:
#   Hostname, Port, User, ProxyJump, ProxyCommand (ssh ends it with the connection),
#   ProxyUseFdpass (the proxy hands over its socket and exits), Match exec, KnownHostsCommand
#   (runs and exits once per host key lookup: a user's way of listing host keys), Canonical*,
#   AddressFamily, BindAddress, BindInterface, ConnectionAttempts, IdentityAgent, IdentityFile,
#   IdentitiesOnly, CertificateFile, PKCS11Provider, SecurityKeyProvider, the GSSAPI* and
#   Hostbased* settings, EnableSSHKeysign, PreferredAuthentications, PubkeyAuthentication,
#   NumberOfPasswordPrompts and KbdInteractiveDevices (no prompt: BatchMode), the algorithm
#   lists, RequiredRSASize, RekeyLimit, Compression, IPQoS, TCPKeepAlive;
# - host-key checking that StrictHostKeyChecking yes makes strict: UserKnownHostsFile,
#   GlobalKnownHostsFile, HostKeyAlias, CheckHostIP, HashKnownHosts, RevokedHostKeys,
#   VerifyHostKeyDNS, NoHostAuthenticationForLocalhost, FingerprintHash;
# - they act on a session or a forward only, and there is neither (-N, ClearAllForwardings):
#   SendEnv, SetEnv, TunnelDevice, ForwardX11Timeout, XAuthLocation, PermitRemoteOpen,
#   StreamLocalBindMask, StreamLocalBindUnlink;
# - logging: LogLevel (on the command line), LogVerbose, SyslogFacility; IgnoreUnknown, Include.
PINNED = (
    "BatchMode yes",  # nothing prompts
    "StrictHostKeyChecking yes",
    "UpdateHostKeys no",
    "PasswordAuthentication no",
    "KbdInteractiveAuthentication no",
    "AddKeysToAgent no",  # "ask" prompts, and the user's agent is not tether's to change
    "VisualHostKey no",  # its picture would be the last words of a failed start
    # No process but the master: it neither forks into the background (its parent would exit
    # as if it failed) nor runs a command here or there.
    "PermitLocalCommand no",
    "LocalCommand none",
    "RemoteCommand none",
    # No session (-N -T for the main connection; a hop's `ssh -W` is a stdio forward): no
    # terminal, escape character, agent, X11 or tun device.
    "RequestTTY no",
    "EscapeChar none",
    "ForwardAgent no",
    "ForwardX11 no",
    "ForwardX11Trusted no",
    "Tunnel no",
    # Binds nothing: no LocalForward, RemoteForward or DynamicForward of the user's.
    "ClearAllForwardings yes",
    "GatewayPorts no",
    "ExitOnForwardFailure yes",
    # The main connection's -M and -S come first; every hop neither shares nor persists.
    "ControlMaster no",
    "ControlPath none",
    "ControlPersist no",
)
# What OpenSSH 8.7 named (-f, -N and -n as settings); an older ssh would refuse the words.
PINNED_SINCE_8_7 = (
    "ForkAfterAuthentication no",
    "SessionType none",
    # A hop's stdio forward reads its stdin: it must not be /dev/null.
    "StdinNull no",
)


def session_words() -> list[str]:
    """`-o` words that give back the session PINNED takes away (SessionType none, from 8.7),
    for a command run on a gateway's relay with a config of tether's (the signer)."""
    return ["-o", "SessionType=default"] if _newer_than((8, 7)) else []


def _pinned(options: SshOptions) -> list[str]:
    """What tether sets for every host, whatever else is said: the Host * block's first lines."""
    lines = [
        "Host *",
        *(f"  {setting}" for setting in PINNED),
        *(f"  {setting}" for setting in PINNED_SINCE_8_7 if _newer_than((8, 7))),
        f"  ServerAliveInterval {_seconds(options.keepalive_interval)}",
        f"  ServerAliveCountMax {options.keepalive_count_max}",
    ]
    if options.connect_timeout:
        lines.append(f"  ConnectTimeout {_seconds(options.connect_timeout)}")
    return lines


def _write(path: Path, lines: list[str]) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines))
    return path


def write_gateway_config(
    path: Path,
    options: SshOptions,
    hosts: dict[str, dict[str, str]],
    *,
    identities: list[str],
    known_hosts: str,
) -> Path:
    """A config for a tunnel through a gateway (transports/gateway.py): each of ``hosts`` (a
    Host pattern, and its settings, each value a checked name, a number, or given as it is to
    ``quoted``), then tether's settings for all, with these ``identities`` only and the
    gateway's trust in ``known_hosts``. Nothing of the user's ssh_config: a gateway's hops are
    tether's own."""
    lines = ["# Written by tether for one tunnel through a gateway."]
    for pattern, settings in hosts.items():
        lines.append(f"Host {pattern}")
        lines += [f"  {name} {value}" for name, value in settings.items()]
    lines += _pinned(options)
    lines.append("  IdentitiesOnly yes")
    for identity in identities:
        escaped = tokens_escaped(identity, "identity_file")
        lines.append(f"  IdentityFile {quoted(escaped, 'identity_file')}")
    escaped = tokens_escaped(known_hosts, "known_hosts")
    lines.append(f"  UserKnownHostsFile {quoted(escaped, 'known_hosts')}")
    lines += ["  GlobalKnownHostsFile /dev/null", "  CheckHostIP no"]
    lines += [f"  Ciphers {','.join(CIPHERS)}", ""]
    return _write(path, lines)


def write_config(path: Path, options: SshOptions) -> Path:
    """The master's config: tether's settings first, then the user's and the system's."""
    lines = [
        "# Written by tether for one tunnel. For ssh the first value of a setting wins.",
        *_pinned(options),
    ]
    # Each path means exactly the file check_files checked, or is refused (exit 2).
    for identity in options.identity_files:
        escaped = tokens_escaped(identity, "identity_file")
        lines.append(f"  IdentityFile {quoted(escaped, 'identity_file')}")
    for certificate in options.certificate_files:
        escaped = tokens_escaped(certificate, "certificate_file")
        lines.append(f"  CertificateFile {quoted(escaped, 'certificate_file')}")
    if options.known_hosts:
        escaped = tokens_escaped(options.known_hosts, "known_hosts")
        lines.append(f"  UserKnownHostsFile {quoted(escaped, 'known_hosts')}")
    user_config = _glob_escaped(options.ssh_config or paths.ssh_config())
    lines += ["Match all", f"Include {quoted(user_config, 'ssh_config')}"]
    lines.append("Include /etc/ssh/ssh_config")
    # Last, so only a default: ssh_config's own Ciphers wins. AES-GCM first, as in the asyncssh
    # engine (AES instructions make it the fastest; ssh's own order puts ChaCha20 first).
    lines += ["Host *", f"  Ciphers {','.join(CIPHERS)}", ""]
    return _write(path, lines)
