"""A tunnel as the registry records it: its identity (what it is), where it listens, and whose
process holds it. Read back from files any process of the user could have written, so every
field is checked; never holds a secret."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Self

from tether.procs import ProcessRef
from tether.protocol import JSONObject
from tether.states import MODES, Mode

if TYPE_CHECKING:  # `tether list` reads entries, and loads no spec
    from tether.spec import TunnelSpec

# Entry fields that identify the owner's process and lock for tether's own checks; never shown.
PRIVATE_FIELDS = ("proc_start", "lock_id")
SOCKS_TARGET = ("*", 0)  # what a SOCKS tunnel registers as its target
# What an entry's process runs: a tunnel, or a gateway's relay, signer or agent (their
# target_host is the relay's name, the gateway's directory, or the agent's site).
KINDS = ("tunnel", "relay", "agent", "signer")


@dataclass(frozen=True)
class TunnelIdentity:
    """What a tunnel is: its name, target (SOCKS_TARGET for a SOCKS tunnel), allowlist and
    transport. The hosted tunnel registers it; `--reuse` looks for an entry that has it."""

    name: str
    target_host: str
    target_port: int
    socks: bool
    allow: tuple[str, ...]
    via: str | None
    engine: str | None  # the SSH engine; None for direct, or (asked for) any

    @classmethod
    def of(cls, spec: TunnelSpec, engine: str | None) -> Self:
        """The identity of ``spec``'s tunnel, run with ``engine`` (for a spec that lets the
        engine be chosen, None means whichever)."""
        target = (spec.target.host, spec.target.port) if spec.target else SOCKS_TARGET
        return cls(
            name=spec.name,
            target_host=target[0],
            target_port=target[1],
            socks=spec.socks,
            allow=tuple(str(rule) for rule in spec.allow),
            via=str(spec.via) if spec.via else None,
            engine=engine if spec.via else None,
        )

    def covers(self, other: TunnelIdentity) -> bool:
        """Whether a tunnel that is ``other`` is this one (an engine of None takes any)."""
        same_engine = self.engine is None or self.engine == other.engine
        return same_engine and replace(self, engine=None) == replace(other, engine=None)


def added_fields() -> dict[str, object]:
    """Entry fields added since the first release, with the value an older entry means."""
    return {"socks": False, "allow": [], "kind": "tunnel"}


@dataclass(frozen=True)
class Entry:
    """What the registry knows of one running tunnel. Never holds a secret."""

    id: str
    name: str
    pid: int
    proc_start: int
    lock_id: str  # "device:inode" of the owner's lock file, so a swapped file is noticed
    mode: Mode
    local_host: str
    local_port: int
    local_addresses: list[str]
    target_host: str  # "*" for a SOCKS tunnel: its clients name their targets
    target_port: int  # 0 for a SOCKS tunnel
    socks: bool
    allow: list[str]  # a SOCKS tunnel's allowlist, canonical; empty: any target
    via: str | None
    engine: str | None
    started: str
    log_file: str | None
    control: str
    kind: str = "tunnel"

    @classmethod
    def from_json(cls, data: object) -> Entry:
        names = {f.name for f in fields(cls)}
        if isinstance(data, Mapping):
            # Written by a tether from before SOCKS tunnels, still running: a fixed target.
            data = {**added_fields(), **data}
        if not isinstance(data, Mapping) or set(data) != names:
            raise ValueError("its fields do not match")
        entry = cls(**data)
        if not isinstance(entry.socks, bool):
            raise ValueError("socks is not a boolean")
        if not isinstance(entry.allow, list) or not all(isinstance(a, str) for a in entry.allow):
            raise ValueError("allow is not a list of strings")
        for name in ("pid", "proc_start", "local_port", "target_port"):
            value = getattr(entry, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name} is not an integer")
        for name in ("id", "name", "mode", "local_host", "lock_id", "control", "started"):
            if not isinstance(getattr(entry, name), str):
                raise ValueError(f"{name} is not a string")
        if entry.mode not in MODES:
            raise ValueError(f"unknown mode {entry.mode!r}")
        if entry.kind not in KINDS:
            raise ValueError(f"unknown kind {entry.kind!r}")
        if not isinstance(entry.local_addresses, list) or not all(
            isinstance(a, str) for a in entry.local_addresses
        ):
            raise ValueError("local_addresses is not a list of strings")
        return entry

    @property
    def process(self) -> ProcessRef:
        return ProcessRef(self.pid, self.proc_start)

    def public(self) -> JSONObject:
        """The fields worth showing: not the process and lock identities used for checks."""
        record = asdict(self)
        for name in PRIVATE_FIELDS:
            del record[name]
        return record

    @property
    def identity(self) -> TunnelIdentity:
        return TunnelIdentity(
            name=self.name,
            target_host=self.target_host,
            target_port=self.target_port,
            socks=self.socks,
            allow=tuple(self.allow),
            via=self.via,
            engine=self.engine,
        )
