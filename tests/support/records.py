"""Registry entries for tests: one this test process holds, and records as a hostile or older
process could leave them in the registry (any strings)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tether.entry import Entry, TunnelIdentity
from tether.protocol import Status
from tether.states import Mode
from tether.record import TunnelInfo
from tether.registry import Registration, Registry

ESCAPES = "\x1b[2J\x1b[H\rFORGED  ROW\n\x9b31m\u2028\x7f"


def hostile_record(**changes: object) -> TunnelInfo:
    """A record as a registry entry written by another process could make it: any strings."""
    fields: dict[str, Any] = {
        "id": "0badc0de",
        "name": f"db{ESCAPES}",
        "pid": 4242,
        "proc_start": 0,
        "lock_id": "0:0",
        "mode": "foreground",
        "local_host": f"127.0.0.1{ESCAPES}",
        "local_port": 15432,
        "local_addresses": ["127.0.0.1"],
        "target_host": f"db{ESCAPES}",
        "target_port": 5432,
        "socks": False,
        "allow": [],
        "via": f"ssh://ops@bastion{ESCAPES}",
        "engine": f"openssh{ESCAPES}",
        "started": "x",
        "log_file": None,
        "control": "x.sock",
        **changes,
    }
    return TunnelInfo(Entry(**fields), Status.from_json({"state": "ready", "last_error": ESCAPES}))


def no_raw_controls(text: str) -> None:
    assert all(c.isprintable() or c == "\n" for c in text), repr(text)


def register(
    registry: Registry,
    *,
    mode: Mode = "foreground",
    addresses: Sequence[str] = ("127.0.0.1",),
    local_port: int = 15432,
    log_file: str | None = None,
    **identity: Any,
) -> Registration:
    """An entry that this test process holds (and so `tether list` takes for a live tunnel): a
    plain tunnel "db" to db:5432, unless ``identity`` says otherwise."""
    fields: dict[str, Any] = {
        "name": "db",
        "target_host": "db",
        "target_port": 5432,
        "socks": False,
        "allow": (),
        "via": None,
        "engine": None,
        **identity,
    }
    return registry.register(
        TunnelIdentity(**fields),
        mode=mode,
        addresses=list(addresses),
        local_port=local_port,
        log_file=log_file,
    )
