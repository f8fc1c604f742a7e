"""A tunnel's public record: the one JSON object `start --json`, `list --json` and the Python
API give for a tunnel, whoever started it. Its keys are versioned by ``SCHEMA``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from tether.protocol import JSONObject, Status
from tether.entry import PRIVATE_FIELDS, Entry
from tether.values import host_port, socks_reach

#: The record's version. It grows when a key is removed or changes meaning; new keys keep it.
SCHEMA = 1


def record_keys() -> list[str]:
    """Every key of a record, in the order it is printed."""
    entry = [f.name for f in fields(Entry) if f.name not in PRIVATE_FIELDS]
    return ["schema", *entry, *(f.name for f in fields(Status))]


class EntryView:
    """Where a tunnel listens and what it reaches, from its registry entry."""

    entry: Entry

    @property
    def id(self) -> str:
        return self.entry.id

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def pid(self) -> int:
        return self.entry.pid

    @property
    def host(self) -> str:
        """The local address to connect to (the first bound)."""
        return self.entry.local_host

    @property
    def port(self) -> int:
        return self.entry.local_port

    @property
    def address(self) -> str:
        """``host:port`` to connect to, with an IPv6 host in brackets."""
        return host_port(self.host, self.port)

    @property
    def target(self) -> str:
        """``host:port``, or what a SOCKS tunnel reaches: "socks5 (any)", "socks5 (RULE +N)"."""
        if self.entry.socks:
            return socks_reach(self.entry.allow)
        if self.entry.kind == "relay":
            return f"relay {self.entry.target_host}"
        if self.entry.kind == "signer":
            return f"gateway {self.entry.target_host}"
        if self.entry.kind == "agent":
            return f"site {self.entry.target_host}"
        return host_port(self.entry.target_host, self.entry.target_port)


@dataclass(frozen=True)
class TunnelInfo(EntryView):
    """A registry entry joined with the live status its process reports."""

    entry: Entry
    status: Status

    @property
    def state(self) -> str:
        return self.status.state

    def to_json(self) -> JSONObject:
        """The documented record (README, "The JSON record")."""
        return {"schema": SCHEMA, **self.entry.public(), **self.status.to_json()}

    def to_message(self) -> JSONObject:
        """The whole of it, private fields included, for the pipe between a background child and
        its parent."""
        return {"entry": asdict(self.entry), "status": self.status.to_json()}

    @classmethod
    def from_message(cls, data: object) -> TunnelInfo:
        """Parse ``to_message``'s form; ValueError if it is not one."""
        if not isinstance(data, dict) or not isinstance(data.get("status"), dict):
            raise ValueError("not a tunnel record")
        try:
            return cls(Entry.from_json(data.get("entry")), Status.from_json(data["status"]))
        except TypeError as exc:
            raise ValueError(f"not a tunnel record: {exc}") from None
