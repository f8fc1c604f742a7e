"""A gateway's policy (policy.toml): its users, named with their SSH public key; its sites; and
the grants that let a user reach one target of a site, until a time or until revoked. Written
by `tether gateway` commands, and readable and editable by hand: every read checks it whole, and
an error names the file and the key, as a profile's does.
"""

from __future__ import annotations

import base64
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import tomlkit

from tether.errors import ConfigError, UsageError, shown
from tether.files import CONFIG_LIMIT, read_regular, write_private
from tether.gateway.names import parse_name, parse_target_path

EMPTY_POLICY = """\
# The gateway's policy: who may reach which target. `tether gateway` commands edit it; it may be
# edited by hand too, and every read checks it whole.
#
# [users.alice]
# key = "ssh-ed25519 AAAA... alice@laptop"
#
# [sites.lab]                       # written by `tether gateway site add`
# port = 42001                      # its endpoint on the relays' loopback
# serial = 2                        # its agent certificate's
#
# [relays.r1]                      # written by `tether gateway relays add`
# serial = 3                        # its login certificate's
#
# [[grants]]
# user = "alice"
# target = "lab/db"                 # SITE/TARGET
# until = 2030-01-01T00:00:00Z      # optional: without it, until revoked
"""
KEY_TYPES = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)


@dataclass(frozen=True)
class User:
    name: str
    key: str  # "TYPE BASE64", the comment dropped: it reaches authorized files


@dataclass(frozen=True)
class Site:
    name: str
    port: int  # its endpoint on each relay's loopback, where its agent listens
    serial: int  # its agent certificate's, to revoke it by


@dataclass(frozen=True)
class Relay:
    name: str
    serial: int  # its login certificate's (to the signers), to revoke it by


@dataclass(frozen=True)
class Grant:
    user: str
    site: str
    target: str
    until: datetime | None

    def live(self, now: datetime) -> bool:
        return self.until is None or now < self.until


@dataclass(frozen=True)
class Policy:
    users: dict[str, User]
    sites: dict[str, Site]
    grants: tuple[Grant, ...]
    relays: dict[str, Relay] = field(default_factory=dict)


def parse_public_key(text: str, *, what: str) -> str:
    """An OpenSSH public key line as "TYPE BASE64" (its comment dropped), checked: a known type,
    and base64 that holds that same type."""
    text = text.strip()  # a .pub file ends with a line break; one inside is refused
    fields = text.split()
    if len(fields) < 2 or fields[0] not in KEY_TYPES or not text.isprintable():
        raise UsageError(f"{what}: not an SSH public key: {shown(text)}")
    kind, blob = fields[0], fields[1]
    try:
        raw = base64.b64decode(blob, validate=True)
    except ValueError:
        raise UsageError(f"{what}: not an SSH public key (bad base64)") from None
    named = kind.encode()
    if raw[:4] != len(named).to_bytes(4, "big") or raw[4 : 4 + len(named)] != named:
        raise UsageError(f"{what}: not an SSH public key (its type does not match)")
    return f"{kind} {blob}"


def load(path: Path) -> Policy:
    """The policy at ``path``, checked whole (ConfigError naming the file and the key)."""
    try:
        raw = read_regular(path, limit=CONFIG_LIMIT, what="policy", error=ConfigError)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file", hint="is this a gateway directory?") from None
    return parse(raw, source=str(path))


def parse(raw: bytes, *, source: str) -> Policy:
    """A policy's bytes (a file's, or as a signer sent them to a relay), checked whole; errors
    name ``source`` and the key."""
    try:
        data = tomllib.loads(raw.decode())
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: not UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    try:
        return _checked(data)
    except UsageError as exc:
        raise ConfigError(f"{source}: {exc.message}", hint=exc.hint) from None


def _checked(data: dict[str, Any]) -> Policy:
    unknown = sorted(set(data) - {"users", "sites", "grants", "relays"})
    if unknown:
        raise UsageError(f"{unknown[0]}: unknown key (users, sites, relays and grants are known)")
    users = {}
    for name, table in _table(data.get("users", {}), "users").items():
        where = f"users.{parse_name(name, what='users: a user')}"
        entry = _table(table, where)
        _only(entry, where, {"key"})
        key = entry.get("key")
        if not isinstance(key, str):
            raise UsageError(f"{where}.key: missing, or not a string")
        users[name] = User(name, parse_public_key(key, what=f"{where}.key"))
    sites = {}
    for name, table in _table(data.get("sites", {}), "sites").items():
        where = f"sites.{parse_name(name, what='sites: a site')}"
        entry = _table(table, where)
        _only(entry, where, {"port", "serial"})
        port = entry.get("port")
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise UsageError(f"{where}.port: not a port (1-65535): {shown(port)}")
        sites[name] = Site(name, port, _serial(entry, where))
    relays = {}
    for name, table in _table(data.get("relays", {}), "relays").items():
        where = f"relays.{parse_name(name, what='relays: a relay')}"
        entry = _table(table, where)
        _only(entry, where, {"serial"})
        relays[name] = Relay(name, _serial(entry, where))
    grants = []
    listed = data.get("grants", [])
    if not isinstance(listed, list):
        raise UsageError("grants: not an array of tables ([[grants]])")
    for index, item in enumerate(listed):
        where = f"grants[{index}]"
        entry = _table(item, where)
        _only(entry, where, {"user", "target", "until"})
        user, target = entry.get("user"), entry.get("target")
        if not isinstance(user, str) or user not in users:
            raise UsageError(f"{where}.user: not a user of [users]: {shown(user)}")
        if not isinstance(target, str):
            raise UsageError(f"{where}.target: missing, or not a string")
        site, name = parse_target_path(target, what=f"{where}.target")
        if site not in sites:
            raise UsageError(f"{where}.target: no site {shown(site)} in [sites]")
        grants.append(Grant(user, site, name, _until(entry.get("until"), f"{where}.until")))
    return Policy(users, sites, tuple(grants), relays)


def _serial(entry: dict[str, Any], where: str) -> int:
    serial = entry.get("serial", 0)
    if not isinstance(serial, int) or isinstance(serial, bool) or serial < 0:
        raise UsageError(f"{where}.serial: not a serial: {shown(serial)}")
    return serial


def _table(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UsageError(f"{where}: not a table")
    return value


def _only(entry: dict[str, Any], where: str, known: set[str]) -> None:
    unknown = sorted(set(entry) - known)
    if unknown:
        raise UsageError(f"{where}.{unknown[0]}: unknown key")


def _until(value: object, where: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise UsageError(f"{where}: not a date and time with its zone (2030-01-01T00:00:00Z)")
    return value.astimezone(UTC)


def add_site(path: Path, site: str, *, port: int, serial: int) -> None:
    """Add ``site`` to the policy at ``path`` (its relay endpoint port, its agent certificate's
    serial), keeping what a person wrote there; a site that is there already is refused."""
    document = _edit(path)
    sites = document.setdefault("sites", tomlkit.table(is_super_table=True))
    if site in sites:
        raise UsageError(f"site {site}: enrolled already", hint="remove it first")
    ports = {table.get("port") for table in sites.values() if isinstance(table, dict)}
    if port in ports:
        raise UsageError(f"site {site}: endpoint port {port} is another site's")
    table = tomlkit.table()
    table.add("port", port)
    table.add("serial", serial)
    sites[site] = table
    _save(path, document)


def remove_site(path: Path, site: str) -> int:
    """Remove ``site`` and its grants; the serial of its agent certificate, to revoke."""
    document = _edit(path)
    serial = _remove_table(document, "site", site).get("serial")
    _keep_grants(document, lambda g: not str(g.get("target", "")).startswith(f"{site}/"))
    _save(path, document)
    return int(serial) if isinstance(serial, int) else 0


def add_relay(path: Path, relay: str, *, serial: int) -> None:
    """Add ``relay`` (its login certificate's serial) to the policy at ``path``: the signers
    let it in from now on."""
    document = _edit(path)
    relays = document.setdefault("relays", tomlkit.table(is_super_table=True))
    if relay in relays:
        raise UsageError(f"relay {relay}: added already", hint="remove it first")
    table = tomlkit.table()
    table.add("serial", serial)
    relays[relay] = table
    _save(path, document)


def remove_relay(path: Path, relay: str) -> int:
    """Remove ``relay``; the serial of its login certificate, to revoke."""
    document = _edit(path)
    serial = _remove_table(document, "relay", relay).get("serial")
    _save(path, document)
    return int(serial) if isinstance(serial, int) else 0


def add_user(path: Path, user: str, key: str) -> None:
    """Name ``user`` with the public key line ``key`` (checked; its comment dropped)."""
    parse_name(user, what="user")
    line = parse_public_key(key, what=f"user {user}: key")
    document = _edit(path)
    users = document.setdefault("users", tomlkit.table(is_super_table=True))
    if user in users:
        raise UsageError(f"user {user}: exists already", hint="remove the user first")
    table = tomlkit.table()
    table.add("key", line)
    users[user] = table
    _save(path, document)


def remove_user(path: Path, user: str) -> None:
    """Remove ``user`` and every grant of theirs."""
    document = _edit(path)
    _remove_table(document, "user", user)
    _keep_grants(document, lambda grant: grant.get("user") != user)
    _save(path, document)


def grant(path: Path, user: str, site: str, target: str, until: datetime | None) -> None:
    """Let ``user`` reach ``site``/``target`` until ``until`` (None: until revoked); a grant of
    the same target is replaced."""
    document = _edit(path)
    if user not in document.get("users", {}):
        raise UsageError(f"user {user}: no such user", hint="add the user first")
    if site not in document.get("sites", {}):
        raise UsageError(f"site {site}: not enrolled")
    wanted = f"{parse_name(site, what='site')}/{parse_name(target, what='target')}"
    _keep_grants(document, lambda g: (g.get("user"), g.get("target")) != (user, wanted))
    table = tomlkit.table()
    table.add("user", user)
    table.add("target", wanted)
    if until is not None:
        table.add("until", until.astimezone(UTC).replace(microsecond=0))
    document.setdefault("grants", tomlkit.aot()).append(table)
    _save(path, document)


def revoke(path: Path, user: str, site: str, target: str) -> None:
    """End ``user``'s grant of ``site``/``target``."""
    document = _edit(path)
    wanted = f"{site}/{target}"
    before = len(document.get("grants", []))
    _keep_grants(document, lambda g: (g.get("user"), g.get("target")) != (user, wanted))
    if len(document.get("grants", [])) == before:
        raise UsageError(f"user {user} has no grant of {wanted}")
    _save(path, document)


# The named tables of a policy: [sites.NAME], [relays.NAME], [users.NAME].
_Kind = Literal["site", "relay", "user"]
# What removing a name that is not there says, by kind.
_NOT_THERE: dict[_Kind, str] = {
    "site": "not enrolled",
    "relay": "no such relay",
    "user": "no such user",
}


def _remove_table(document: tomlkit.TOMLDocument, kind: _Kind, name: str) -> Any:
    """Take ``name``'s table out of the document's ``[kind+s]`` and return it; a name that is
    not there is refused."""
    tables = document.get(f"{kind}s", {})
    if name not in tables:
        raise UsageError(f"{kind} {name}: {_NOT_THERE[kind]}")
    table = tables[name]
    del tables[name]
    return table


def _keep_grants(document: tomlkit.TOMLDocument, keep: Callable[[Any], bool]) -> None:
    grants = document.get("grants")
    if grants is None:
        return
    kept = [g for g in grants if keep(g)]
    if not kept:
        # An empty array of tables is written as `grants = []`, an inline array that a later
        # grant's table could not be appended to: no grants, no key.
        del document["grants"]
    elif len(kept) != len(grants):
        document["grants"] = tomlkit.aot()
        for item in kept:
            document["grants"].append(item)


def _edit(path: Path) -> tomlkit.TOMLDocument:
    """The policy as an editable document, after checking it whole (load)."""
    load(path)
    text = read_regular(path, limit=CONFIG_LIMIT, what="policy", error=ConfigError).decode()
    return tomlkit.parse(text)


def _save(path: Path, document: tomlkit.TOMLDocument) -> None:
    text = tomlkit.dumps(document)
    try:
        _checked(tomllib.loads(text))  # what is written reads back as a valid policy
    except UsageError as exc:
        raise ConfigError(f"{path}: {exc.message}") from None
    write_private(path, text)
