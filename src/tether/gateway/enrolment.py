"""Reading an enrolment file on the site (`tether gateway agent`): checked whole, every error
naming the file and the key."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.errors import ConfigError, UsageError, shown, visible
from tether.gateway import bundles
from tether.gateway.bundles import (
    account,
    as_text,
    ca_keys,
    certificate,
    private_key,
    read_toml,
    text,
)
from tether.gateway.names import parse_name
from tether.spec import Endpoint


@dataclass(frozen=True)
class Enrolment:
    site: str
    relays: tuple[Endpoint, ...]
    relay_account: str  # the account the relays run as: the agent logs in as it
    endpoint_port: int
    host_cas: tuple[str, ...]  # what the relays' host certificates are checked against
    user_cas: tuple[str, ...]  # whose certificates the site's sshd takes
    agent_key: str
    agent_certificate: str
    host_key: str
    host_certificate: str

    @classmethod
    def load(cls, path: Path) -> Enrolment:
        return bundles.load(path, "enrolment file", "not an enrolment", cls._checked)

    @classmethod
    def _checked(cls, data: dict[str, Any]) -> Enrolment:
        # Format 1 held one key per CA; 2 a list (two during a CA rollover).
        if data.get("format") not in (1, 2):
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
            site=parse_name(text(data, "site"), what="site"),
            relays=tuple(Endpoint.parse(as_text(r, "relays"), what="relays") for r in relays),
            relay_account=account(text(data, "relay_account"), "relay_account"),
            endpoint_port=port,
            host_cas=ca_keys(data, "host_ca"),
            user_cas=ca_keys(data, "user_ca"),
            agent_key=private_key(data, "agent_key"),
            agent_certificate=certificate(data, "agent_certificate"),
            host_key=private_key(data, "host_key"),
            host_certificate=certificate(data, "host_certificate"),
        )


def read_targets(path: Path) -> dict[str, Endpoint]:
    """An agent's targets from a TOML file: a ``[targets]`` table of NAME = "HOST:PORT" and
    nothing else, each error naming the file and the key."""
    data = read_toml(path, "targets file", "not TOML")
    table = data.get("targets")
    if set(data) != {"targets"} or not isinstance(table, dict):
        raise ConfigError(f"{path}: expected one [targets] table, and nothing else")
    targets: dict[str, Endpoint] = {}
    for name, where in table.items():
        try:
            parse_name(name, what="target")
            if not isinstance(where, str):
                raise UsageError('expected "HOST:PORT"')
            targets[name] = Endpoint.parse(where, what="address")
        except UsageError as exc:
            raise ConfigError(f"{path}: targets.{visible(name)}: {exc.message}") from None
    return targets
