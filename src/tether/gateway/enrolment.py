"""Reading an enrolment file on the site (`tether gateway agent`): checked whole, every error
naming the file and the key."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.errors import ConfigError, UsageError, shown, visible
from tether.files import KEY_LIMIT, read_regular
from tether.gateway.names import ACCOUNT, parse_name
from tether.gateway.policy import parse_public_key
from tether.spec import Endpoint

PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----"
CERTIFICATE_TYPES = ("ssh-ed25519-cert-v01@openssh.com",)


@dataclass(frozen=True)
class Enrolment:
    site: str
    relays: tuple[Endpoint, ...]
    relay_account: str  # the account the relays run as: the agent logs in as it
    endpoint_port: int
    host_ca: str
    user_ca: str
    agent_key: str
    agent_certificate: str
    host_key: str
    host_certificate: str

    @classmethod
    def load(cls, path: Path) -> Enrolment:
        data = _read_toml(path, "enrolment file", "not an enrolment")
        try:
            return cls._checked(data)
        except UsageError as exc:
            raise ConfigError(f"{path}: {exc.message}") from None

    @classmethod
    def _checked(cls, data: dict[str, Any]) -> Enrolment:
        if data.get("format") != 1:
            raise UsageError(
                f"format: not an enrolment this tether reads: {shown(data.get('format'))}"
            )
        relays = data.get("relays")
        if not isinstance(relays, list) or not relays:
            raise UsageError("relays: missing, or not a list")
        port = data.get("endpoint_port")
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise UsageError(f"endpoint_port: not a port: {shown(port)}")
        return cls(
            site=parse_name(_text(data, "site"), what="site"),
            relays=tuple(Endpoint.parse(_as_text(r, "relays"), what="relays") for r in relays),
            relay_account=_account(_text(data, "relay_account")),
            endpoint_port=port,
            host_ca=parse_public_key(_text(data, "host_ca"), what="host_ca"),
            user_ca=parse_public_key(_text(data, "user_ca"), what="user_ca"),
            agent_key=_private_key(data, "agent_key"),
            agent_certificate=_certificate(data, "agent_certificate"),
            host_key=_private_key(data, "host_key"),
            host_certificate=_certificate(data, "host_certificate"),
        )


def _read_toml(path: Path, what: str, malformed: str) -> dict[str, Any]:
    """The TOML document at ``path`` (a regular file of bounded size), or a ConfigError naming
    the file: ``what`` is missing, or ``malformed`` and why."""
    try:
        raw = read_regular(path, limit=KEY_LIMIT, what=what, error=ConfigError)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {what}") from None
    try:
        return tomllib.loads(raw.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {malformed}: {exc}") from None


def _account(text: str) -> str:
    if not ACCOUNT.match(text):
        raise UsageError(f"relay_account: not an account name: {shown(text)}")
    return text


def _as_text(value: object, key: str) -> str:
    if not isinstance(value, str):
        raise UsageError(f"{key}: not a string")
    return value


def _text(data: dict[str, Any], key: str) -> str:
    return _as_text(data.get(key), key)


def _private_key(data: dict[str, Any], key: str) -> str:
    text = _text(data, key)
    if not text.startswith(PRIVATE_KEY):
        raise UsageError(f"{key}: not an OpenSSH private key")
    return text if text.endswith("\n") else text + "\n"


def _certificate(data: dict[str, Any], key: str) -> str:
    fields = _text(data, key).split()
    if len(fields) != 2 or fields[0] not in CERTIFICATE_TYPES or not fields[1].isascii():
        raise UsageError(f"{key}: not an OpenSSH certificate")
    return f"{fields[0]} {fields[1]}"


def read_targets(path: Path) -> dict[str, Endpoint]:
    """An agent's targets from a TOML file: a ``[targets]`` table of NAME = "HOST:PORT" and
    nothing else, each error naming the file and the key."""
    data = _read_toml(path, "targets file", "not TOML")
    table = data.get("targets")
    if set(data) != {"targets"} or not isinstance(table, dict):
        raise ConfigError(f"{path}: expected one [targets] table, and nothing else")
    targets: dict[str, Endpoint] = {}
    for name, where in table.items():
        try:
            parse_name(name, what="target")
            if not isinstance(where, str):
                raise UsageError("expected \"HOST:PORT\"")
            targets[name] = Endpoint.parse(where, what="address")
        except UsageError as exc:
            raise ConfigError(f"{path}: targets.{visible(name)}: {exc.message}") from None
    return targets
