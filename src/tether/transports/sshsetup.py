"""What both SSH engines share: the checks made before the network (key files, ssh_config), and
how a failure is explained, in the same words by both, with the fix spelled for the host and
port really used."""

from __future__ import annotations

import grp
import logging
import os
import pwd
import shlex
from dataclasses import dataclass
from pathlib import Path

from tether import paths
from tether.errors import (
    AuthenticationError,
    ConfigError,
    HostKeyError,
    TargetFailure,
    TargetUnreachableError,
)
from tether.files import CONFIG_LIMIT, KEY_LIMIT, KNOWN_HOSTS_LIMIT, read_regular
from tether.spec import Endpoint, SshOptions
from tether.transports import sshcerts

log = logging.getLogger("tether")


def check_files(options: SshOptions, *, warn: bool = True) -> None:
    """A key, certificate, known_hosts or ssh_config that is named but missing, unreadable or
    not a file is a configuration error (exit 2), found before the network is touched. (ssh
    itself would take an unreadable known_hosts for an empty one.) ``warn``: of skipped lines
    (a check made twice warns once)."""
    named = [("identity_file", name, KEY_LIMIT) for name in options.identity_files]
    named += [("certificate_file", name, KEY_LIMIT) for name in options.certificate_files]
    if options.known_hosts:
        named.append(("known_hosts", options.known_hosts, KNOWN_HOSTS_LIMIT))
    if options.ssh_config:
        named.append(("ssh_config", options.ssh_config, CONFIG_LIMIT))
    for what, name, limit in named:
        try:
            data = read_regular(Path(name), limit=limit, what=what, error=ConfigError)
        except FileNotFoundError:
            raise ConfigError(f"{what}: file not found: {name}") from None
        if warn and what == "known_hosts" and (skipped := unreadable_lines(data)):
            log.warning("known_hosts: skipped %d unreadable line(s) in %s", skipped, name)
        if what == "certificate_file":
            check_certificate(data, name)
    check_config_permissions(Path(options.ssh_config or paths.ssh_config()).expanduser())


def check_certificate(data: bytes, name: str) -> None:
    """A certificate_file must hold an OpenSSH user certificate (ssh would skip anything else
    without a word, and the login fail for no reason shown)."""
    lines = data.strip().splitlines()
    certificate = sshcerts.from_line(lines[0]) if lines else None
    if certificate is None:
        raise ConfigError(f"certificate_file: not an OpenSSH certificate: {name}")
    if not certificate.user:
        raise ConfigError(f"certificate_file: {name} is a host certificate, not a user's")


def check_config_permissions(path: Path) -> None:
    """ssh refuses a user's ssh_config that someone else could change ("Bad owner or
    permissions"): so does tether, for both engines alike, before the network, as a
    configuration error (exit 2) that names the file and the fix. A missing file is no
    config at all, as for ssh."""
    try:
        found = os.stat(path)
    except OSError:
        return
    problem = config_problem(found, os.getuid())
    if problem is not None:
        raise unsafe_config(str(path), problem)


def config_problem(found: os.stat_result, uid: int) -> str | None:
    """What makes ssh refuse a config file, as OpenSSH checks it (Debian's, which lets a group
    write it when the owner alone is in that group): owned by neither ``uid`` nor root, or
    writable by another user. None if ssh takes it."""
    if found.st_uid not in (0, uid):
        return f"owned by uid {found.st_uid}, neither you nor root"
    if found.st_mode & 0o002:
        return f"writable by every user (mode {found.st_mode & 0o7777:04o})"
    if found.st_mode & 0o020 and not _private_group(found.st_gid, found.st_uid):
        return f"writable by group {_group_name(found.st_gid)} (mode {found.st_mode & 0o7777:04o})"
    return None


def unsafe_config(path: str, problem: str | None) -> ConfigError:
    """The error for an ssh_config that ssh refuses; ``problem`` says why, where it is known."""
    quoted = shlex.quote(path)
    if problem is None:
        fix = f"make it yours or root's, writable by you alone: chmod go-w {quoted}"
    elif problem.startswith("owned"):
        fix = "use a copy of your own, or have it owned by you or root"
    else:
        fix = f"chmod go-w {quoted}"
    why = f": {problem}" if problem else ""
    return ConfigError(f"ssh_config: bad owner or permissions on {path}{why}", hint=fix)


def _private_group(gid: int, owner: int) -> bool:
    """Whether the group has exactly one member, the file's owner (a user private group)."""
    try:
        group = grp.getgrgid(gid)
        name = pwd.getpwuid(owner).pw_name
    except KeyError:
        return False
    if any(member != name for member in group.gr_mem):
        return False
    primary = [user.pw_uid for user in pwd.getpwall() if user.pw_gid == gid]
    if any(user != owner for user in primary):
        return False
    return bool(primary or group.gr_mem)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


# How a resolver says that a name does not resolve (glibc's and musl's gai_strerror): sshd
# passes its words on when it cannot resolve a direct-tcpip channel's host.
UNRESOLVED = (
    "name or service not known",
    "no address associated with hostname",
    "temporary failure in name resolution",
    "non-recoverable failure in name resolution",
    "name does not resolve",
    "nodename nor servname provided",
)


def target_error(
    target: Endpoint, via: str, reason: str, kind: TargetFailure = "other"
) -> TargetUnreachableError:
    """A channel to ``target`` that the SSH server refused, for ``reason`` (its words). A
    name that the server could not resolve says so: it is looked up there, not here."""
    message = f"cannot connect to {target} through {via}"
    if any(words in reason.lower() for words in UNRESOLVED):
        return TargetUnreachableError(
            f"{message}: the SSH server cannot resolve {target.host}: {reason}",
            hint=f"check the name: the SSH server looks it up, so it must resolve there; "
            f"try getent hosts {shlex.quote(target.host)} on the server",
            kind="unreachable",
        )
    return TargetUnreachableError(f"{message}: {reason}", kind=kind)


NEVER_PROMPTS = "tether never prompts"


def login_refused(
    via: str, reason: str, locked: str | None = None, *, agent: bool = False
) -> AuthenticationError:
    """The server of ``via`` accepted no key. ``locked`` is an encrypted key that the login
    could have used, had ssh-agent held it (``agent``: whether one answered)."""
    if locked is None:
        return AuthenticationError(
            f"SSH authentication to {via} failed: {reason}",
            hint=f"check the user, identity_file and ssh-agent; {NEVER_PROMPTS}",
            options=("identity_file",),
        )
    add = f"ssh-add {shlex.quote(locked)}"
    load = f"load it into ssh-agent: {add}"
    if not agent:
        load = f'start ssh-agent and load it: eval "$(ssh-agent)" && {add}'
    return AuthenticationError(
        f"SSH authentication to {via} failed: the key {locked} is encrypted and not in "
        "ssh-agent, and no other key was accepted",
        hint=f"{load}; {NEVER_PROMPTS} for a passphrase",
    )


def hop_refused(hop: str, jump: str, via: str) -> AuthenticationError:
    """A ProxyJump hop (``hop``: user@host, as its login named them) accepted no key, so the
    server of ``via`` behind it was never reached."""
    error = AuthenticationError(
        f"SSH authentication to jump host {hop} (ProxyJump {jump}) failed: Permission denied, "
        f"so {via} was not reached",
        hint=f"check the User and IdentityFile that ssh_config gives the jump host, and "
        f"ssh-agent; {NEVER_PROMPTS}",
    )
    error.hop = hop
    return error


def unreadable_lines(data: bytes) -> int:
    """How many lines of a known_hosts file ssh skips: not UTF-8, or too few fields for an
    entry ([marker] hosts keytype key)."""
    skipped = 0
    for raw in data.splitlines():
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            skipped += 1
            continue
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) < (4 if line.startswith("@") else 3):
            skipped += 1
    return skipped


@dataclass(frozen=True)
class KeyProblem:
    """A host-key failure: which host (as known_hosts names it), what went wrong, what the
    server offers, and which known_hosts file was asked."""

    kind: str  # "unknown", "changed", "revoked" or "authority"
    hostname: str  # the real host name or address, after ssh_config
    port: int
    known_hosts: str
    fingerprint: str | None = None
    #: The fingerprint of the CA that signed the host certificate the server offers, if any.
    authority: str | None = None
    #: The ProxyJump (as ssh_config spells it) when the host is one of its hops.
    jump: str | None = None

    @property
    def host(self) -> str:
        """The host as known_hosts writes it: name, or [name]:port off port 22."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"

    def error(self) -> HostKeyError:
        error = self._error()
        if self.jump is not None:
            error.hop = self.host
        return error

    def _error(self) -> HostKeyError:
        offers = self.fingerprint or "unknown"
        where = self.known_hosts
        # A ProxyJump hop's key says so: the server of --via is another one.
        named = f"jump host {self.host}" if self.jump is not None else self.host
        if self.kind == "revoked":
            return HostKeyError(
                f"host key for {named} ({offers}) is marked @revoked in {where}",
                hint="do not connect until the server has a new key",
            )
        if self.kind == "changed":
            return HostKeyError(
                f"host key for {named} does not match {where} (server offers {offers}); "
                "this may be an attack",
                hint=f"if the change is expected, remove the old key: "
                f"ssh-keygen -R '{self.host}' -f {where}",
            )
        if self.kind == "authority":
            return HostKeyError(
                f"{where} trusts only certificate authorities for {named}, and the server "
                f"offers no host certificate signed by one (it offers {offers})",
                hint="give the server a host certificate, or add its key to known_hosts",
            )
        if self.authority is not None:
            # Pinning the bare key (ssh-keyscan) would outlive the certificate's rotation:
            # the server's authority is what to trust.
            return HostKeyError(
                f"host key for {named} is not in {where} (server offers {offers}, with a "
                f"host certificate signed by CA {self.authority})",
                hint=f'if that CA is yours, trust it: echo "@cert-authority {self.host} '
                f'$(cat CA.pub)" >> {where}, where CA.pub is its public key',
            )
        return HostKeyError(
            f"host key for {named} is not in {where} (server offers {offers})",
            hint=f"after checking the fingerprint, trust it: "
            f"ssh-keyscan -p {self.port} {self.hostname} >> {where}",
        )
