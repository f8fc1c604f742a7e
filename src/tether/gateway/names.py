"""The names a gateway is made of (users, sites, targets) and the certificate principals built
from them. A name reaches sshd configs, principals files and certificates, so it is a short
plain word or it is refused: nothing in it can start a line, an option or a pattern."""

from __future__ import annotations

import re

from tether.errors import UsageError, shown

MAX_NAME = 32
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*\Z")
# The principal that a relay's host certificate carries, whatever address clients reach it by:
# tether's generated client config names the relay with this HostKeyAlias, so a host
# certificate is checked against the gateway's host CA without trusting any DNS name.
RELAY_PRINCIPAL = "tether-relay"
# The same for a signer, which only relays reach: a relay's host certificate never passes for a
# signer's, nor the other way.
SIGNER_PRINCIPAL = "tether-signer"
# An account name, as sshd_config's AllowUsers and ssh_config's User take it (no space, quote,
# '%' or '@'): what a site's agent says its sshd logs clients in as.
ACCOUNT = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._-]{0,63}\Z")


def parse_name(text: str, *, what: str) -> str:
    """A user, site or target name: 1 to 32 of a-z, 0-9, '_' and '-', starting with a letter or
    a digit."""
    if len(text) > MAX_NAME or not _NAME.match(text):
        raise UsageError(
            f"{what}: not a name: {shown(text)}",
            hint=f"use 1 to {MAX_NAME} of a-z, 0-9, '_' and '-', starting with a letter or digit",
        )
    return text


def parse_target_path(text: str, *, what: str = "target") -> tuple[str, str]:
    """``SITE/TARGET`` as its two names."""
    site, slash, target = text.partition("/")
    if not slash:
        raise UsageError(f"{what}: not SITE/TARGET: {shown(text)}")
    return parse_name(site, what=f"{what} site"), parse_name(target, what=f"{what} name")


def target_principal(site: str, target: str) -> str:
    """The principal of a client certificate that opens one target."""
    return f"target:{site}/{target}"


def via_principal(site: str) -> str:
    """The principal of a client certificate that may open its site's endpoint on a relay."""
    return f"via:{site}"


def site_principal(site: str) -> str:
    """The principal of a site's agent certificate, which may listen on its site's endpoint."""
    return f"site:{site}"


def relay_principal(relay: str) -> str:
    """The principal of a relay's login certificate, which a signer takes (and nothing else
    does: relays and sites have no line for it)."""
    return f"relay:{relay}"


def site_host_alias(site: str) -> str:
    """The name a site's sshd is known by, as its host certificate's principal and the
    HostKeyAlias of a client's inner session: a host certificate of one site never passes for
    another's, nor for a relay's."""
    return f"{site}.site.tether"
