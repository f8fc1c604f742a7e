"""The sshd configurations tether generates for a gateway: the relay's and a site's, and the
principals files that say what each certificate may do.

Both are Debian's stock sshd run by tether as an ordinary user (root is not needed: it logs in
only the user it runs as), trusting certificates of the gateway's user CA and nothing else. Who
may do what is said by the principal a certificate carries, on lines that start with `restrict`:

- on the relay, ``site:SITE`` (an agent) may only listen (`ssh -R`) on its site's endpoint on the
  relay's loopback, ``127.0.0.1:PORT``, and ``via:SITE`` (a client) may only open that endpoint,
  where its session goes on, end to end, to the site's own sshd;
- on a site's sshd, ``target:SITE/NAME`` (a client) may only open that target's HOST:PORT.

No account gets a shell, a pty, agent, X11, tun or stream-local forwarding. Every value written
here is a path tether chose (quoted, and refused if it holds a quote or a control character),
a checked name, a checked host or a number.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from tether.errors import UsageError, shown
from tether.gateway.names import parse_name, target_principal
from tether.spec import Endpoint
from tether.values import parse_host

# How long a silent peer keeps its session (an agent frozen with SIGSTOP keeps its -R port and
# blocks its own replacement until the relay gives up on it). sshd probes a peer it has not
# heard from, and drops it at the probe that finds CLIENT_ALIVE_COUNT_MAX unanswered before it:
# by sshd_config(5), probes CLIENT_ALIVE_INTERVAL apart (15 to 20 s here). Debian 12's sshd
# (OpenSSH 9.2) probes every other interval, as `sshd -ddd` shows: 40 s after the peer's last
# word, SILENT_PEER_DROPPED. A client's traffic through the silent peer's forwarding (a
# tunnel's own keepalives) wakes sshd between probes and puts them off further.
CLIENT_ALIVE_INTERVAL = 5
CLIENT_ALIVE_COUNT_MAX = 3
SILENT_PEER_DROPPED = 2 * CLIENT_ALIVE_INTERVAL * (CLIENT_ALIVE_COUNT_MAX + 1)
NOWHERE = "nowhere.invalid:1"
# Logins in progress (unauthenticated: each an sshd process until it logs in or LoginGraceTime
# ends it): from START on, this percentage of new ones is refused, rising to every one at FULL.
# A relay restarted under thousands of tunnels, and the site sshd behind it, get all of them back
# at once: FULL is what a relay can log in within the grace time (a few hundred a second), and
# those refused try again after their backoff. Not per source: a balancer, or a NAT, is one.
STARTUPS_START = 200
STARTUPS_RATE = 30
STARTUPS_FULL = 1000
LOGIN_GRACE = 20
# Every line starts so: nothing allowed but what the line adds, and a session (which none of
# these needs) runs only /bin/false.
NO_SHELL = 'restrict,command="/bin/false"'


def quoted(path: Path, what: str) -> str:
    """A path as one double-quoted sshd_config argument."""
    text = str(path)
    if '"' in text or not text.isprintable():
        raise UsageError(f"{what}: cannot go into an sshd config: {shown(text)}")
    return f'"{text}"'


def sshd_config(
    *,
    listen: Endpoint,
    user: str,
    host_key: Path,
    host_certificate: Path,
    user_ca: Path,
    principals: Path,
    revoked: Path | None = None,
    authorized_keys: Path | None = None,
    forwarding: bool = True,
) -> str:
    """A gateway sshd's config (a relay's or a site's): one listen address, one account,
    certificates of one CA only."""
    if not user or user[0] == "-" or not all(c.isalnum() or c in "._-" for c in user):
        raise UsageError(f"user: cannot go into an sshd config: {shown(user)}")
    host = f"[{listen.host}]" if ":" in listen.host else listen.host
    lines = [
        "# Written by tether for a gateway's sshd, at each start. Not to be edited.",
        f"ListenAddress {host}:{listen.port}",
        f"HostKey {quoted(host_key, 'host key')}",
        f"HostCertificate {quoted(host_certificate, 'host certificate')}",
        "PidFile none",
        "UsePAM no",
        f"AllowUsers {user}",
        "AuthenticationMethods publickey",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "HostbasedAuthentication no",
        "GSSAPIAuthentication no",
        f"TrustedUserCAKeys {quoted(user_ca, 'user CA')}",
        # Users' own keys log in to the relay only to have a certificate signed (signer_keys).
        "AuthorizedKeysFile "
        + (quoted(authorized_keys, "authorized keys") if authorized_keys else "none"),
        "ExposeAuthInfo no",
        f"AuthorizedPrincipalsFile {quoted(principals, 'principals file')}",
        *([f"RevokedKeys {quoted(revoked, 'revocation list')}"] if revoked else []),
        # What the principals' options allow, and nothing else.
        f"AllowTcpForwarding {'yes' if forwarding else 'no'}",
        "AllowStreamLocalForwarding no",
        "AllowAgentForwarding no",
        "X11Forwarding no",
        "PermitTunnel no",
        "PermitTTY no",
        "GatewayPorts no",
        "PermitUserRC no",
        "PermitUserEnvironment no",
        "PrintMotd no",
        # A silent peer is dropped, and a flood of half-open logins does not starve the rest.
        f"ClientAliveInterval {CLIENT_ALIVE_INTERVAL}",
        f"ClientAliveCountMax {CLIENT_ALIVE_COUNT_MAX}",
        f"LoginGraceTime {LOGIN_GRACE}",
        "MaxAuthTries 3",
        f"MaxStartups {STARTUPS_START}:{STARTUPS_RATE}:{STARTUPS_FULL}",
        # MaxSessions (sshd's default, 10) counts a connection's sessions (a command, a shell),
        # not its forwarded channels: the thousands an agent's link carries are not bound by it.
        # VERBOSE logs each accepted certificate's key id and serial: the audit joins on them.
        "LogLevel VERBOSE",
        "",
    ]
    return "\n".join(lines)


def relay_principals(sites: Mapping[str, int], announce: list[str]) -> str:
    """The lines that scope each principal: per site, its agent's listen and its clients' open
    of the site's endpoint on the relay's loopback (``sites``: site -> port). An agent's session
    runs ``announce`` + its site (`tether gateway announce DIR SITE`) and nothing else."""
    lines = ["# Written by tether for a gateway relay. Not to be edited."]
    for site, port in sorted(sites.items()):
        parse_name(site, what="site")
        if not 1 <= port <= 65535:
            raise UsageError(f"site {site}: port out of range: {port}")
        endpoint = f"127.0.0.1:{port}"
        # `port-forwarding` allows opening as well as listening, and permitopen has no word for
        # nothing: an agent may open only a name that can never resolve (RFC 6761's .invalid).
        agent = f'permitlisten="{endpoint}",permitopen="{NOWHERE}"'
        lines.append(f"{forced(announce, site)},port-forwarding,{agent} site:{site}")
        lines.append(f'{NO_SHELL},port-forwarding,permitopen="{endpoint}" via:{site}')
    return "\n".join([*lines, ""])


def site_principals(site: str, targets: Mapping[str, Endpoint]) -> str:
    """The lines that scope a client on a site's sshd: ``target:SITE/NAME`` may open that
    target only (``targets``: name -> where it is), and listen nowhere."""
    parse_name(site, what="site")
    lines = ["# Written by tether for a gateway site. Not to be edited."]
    for name, target in sorted(targets.items()):
        parse_name(name, what="target")
        host = parse_host(target.host, what=f"target {name}")
        shown_host = f"[{host}]" if ":" in host else host
        opens = f'permitopen="{shown_host}:{target.port}",permitlisten="{NOWHERE}"'
        lines.append(f"{NO_SHELL},port-forwarding,{opens} {target_principal(site, name)}")
    return "\n".join([*lines, ""])


def signer_keys(users: Mapping[str, str], command: list[str]) -> str:
    """The relay's authorized_keys: each user's own key may run ``command`` + the user's name
    (signclient.py SOCKET USER: a certificate for that key, from the relay), and nothing else."""
    lines = ["# Written by tether for a gateway relay. Not to be edited."]
    for user, key in sorted(users.items()):
        parse_name(user, what="user")
        lines.append(f"{forced(command, user)} {key}")
    return "\n".join([*lines, ""])


def forced(command: list[str], name: str) -> str:
    """``restrict`` and a forced ``command`` + ``name`` (a checked name), each word quoted for
    the shell sshd runs it with; a word that could break out of the quotes is refused."""
    for word in command:
        if not word or not all(c.isprintable() and c not in "\"\\'$`" for c in word):
            raise UsageError(f"cannot put {shown(word)} into an authorized_keys command")
    words = " ".join(f"'{word}'" for word in [*command, name])
    return f'restrict,command="{words}"'
