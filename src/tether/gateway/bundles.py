"""The files that carry a gateway's secrets to one member: a site's enrolment (enrol.py) and a
relay's bundle (relaybundle.py). Each is one private TOML file, written here and read back
checked whole, every error naming the file and the key."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tether.errors import ConfigError, UsageError, shown
from tether.files import KEY_LIMIT, read_regular, write_private
from tether.gateway.names import ACCOUNT
from tether.gateway.policy import parse_public_key

PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----"
MAX_CAS = 4  # a CA's keys trusted at once: two during a rollover, a few to spare
CERTIFICATE_TYPES = ("ssh-ed25519-cert-v01@openssh.com",)

T = TypeVar("T")


def write(path: Path, header: list[str], fields: dict[str, object]) -> None:
    """``fields`` as TOML (0600), under ``header`` comment lines: JSON's strings, arrays and
    integers are TOML's too (no value here holds a character JSON would write as an escape TOML
    lacks)."""
    lines = [f"# {line}" for line in header]
    lines += [f"{key} = {json.dumps(value)}" for key, value in fields.items()]
    write_private(path, "\n".join([*lines, ""]))


def read_toml(path: Path, what: str, malformed: str) -> dict[str, Any]:
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


def load(path: Path, what: str, malformed: str, check: Callable[[dict[str, Any]], T]) -> T:
    """What ``check`` makes of the TOML file at ``path``: a ConfigError naming the file if it
    is missing, not TOML (``malformed``, see read_toml) or refused by ``check`` (whose
    UsageError names the key)."""
    data = read_toml(path, what, malformed)
    try:
        return check(data)
    except UsageError as exc:
        raise ConfigError(f"{path}: {exc.message}") from None


def as_text(value: object, key: str) -> str:
    if not isinstance(value, str):
        raise UsageError(f"{key}: not a string")
    return value


def text(data: dict[str, Any], key: str) -> str:
    return as_text(data.get(key), key)


def private_key(data: dict[str, Any], key: str) -> str:
    found = text(data, key)
    if not found.startswith(PRIVATE_KEY):
        raise UsageError(f"{key}: not an OpenSSH private key")
    return found if found.endswith("\n") else found + "\n"


def certificate(data: dict[str, Any], key: str) -> str:
    fields = text(data, key).split()
    if len(fields) != 2 or fields[0] not in CERTIFICATE_TYPES or not fields[1].isascii():
        raise UsageError(f"{key}: not an OpenSSH certificate")
    return f"{fields[0]} {fields[1]}"


def account(name: str, key: str) -> str:
    """An account name (``key`` names it in an error)."""
    if not ACCOUNT.match(name):
        raise UsageError(f"{key}: not an account name: {shown(name)}")
    return name


def ca_keys(data: dict[str, Any], key: str) -> tuple[str, ...]:
    """A CA's public keys: a list of lines (during a rollover, two), or the one line of a file
    written before CA rollovers."""
    found = data.get(key)
    lines = [found] if isinstance(found, str) else found
    if not isinstance(lines, list) or not 0 < len(lines) <= MAX_CAS:
        raise UsageError(f"{key}: expected a public key, or a list of 1 to {MAX_CAS}")
    return tuple(parse_public_key(as_text(line, key), what=key) for line in lines)
