"""A tunnel's public record: one set of keys, versioned, and its private form for the pipe."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.support.records import register
from tether.protocol import Status
from tether.record import SCHEMA, TunnelInfo, record_keys
from tether.registry import Registry


def test_the_record_has_exactly_the_documented_keys_and_no_lock_identity(tmp_path: Path) -> None:
    registration = register(
        Registry(tmp_path / "run"),
        mode="api",
        addresses=["127.0.0.1", "::1"],
        target_host="2001:db8::1",
        via="ssh://ops@bastion",
        engine="openssh",
    )
    try:
        info = TunnelInfo(registration.entry, Status(state="ready", uptime=0.0))
        record = info.to_json()
        assert list(record) == record_keys()
        assert record["schema"] == SCHEMA == 1
        assert "proc_start" not in record and "lock_id" not in record
        assert (info.host, info.port, info.target) == ("127.0.0.1", 15432, "[2001:db8::1]:5432")
        json.dumps(record)  # every value is JSON
        message = json.loads(json.dumps(info.to_message()))
        assert TunnelInfo.from_message(message) == info
    finally:
        registration.remove()


@pytest.mark.parametrize(
    "bad",
    [None, {}, {"entry": {}, "status": {}}, {"entry": None, "status": {"state": "ready"}}, []],
)
def test_anything_else_is_not_a_record(bad: object) -> None:
    with pytest.raises(ValueError):
        TunnelInfo.from_message(bad)


def test_the_readme_documents_every_key_in_order() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("### The JSON record\n", 1)[1]
    table = section.split("\n\n")[1]
    documented = [
        key
        for line in table.splitlines()
        if line.startswith("| `")
        for key in re.findall(r"`([a-z_]+)`", line.split(" | ")[0])
    ]
    assert documented == record_keys()


def test_a_socks_tunnels_record_and_target(tmp_path: Path) -> None:
    registration = register(
        Registry(tmp_path / "run"),
        local_port=1080,
        name="socks",
        target_host="*",
        target_port=0,
        socks=True,
        allow=("db.internal:5432", "10.0.0.0/8:*"),
    )
    try:
        info = TunnelInfo(registration.entry, Status(state="ready"))
        record = info.to_json()
        assert (record["socks"], record["allow"]) == (True, ["db.internal:5432", "10.0.0.0/8:*"])
        assert (record["target_host"], record["target_port"]) == ("*", 0)
        assert info.target == "socks5 (db.internal:5432 +1)"
        entries = Registry(tmp_path / "run").entries()
        assert entries == [registration.entry]
    finally:
        registration.remove()


def test_an_entry_from_before_socks_tunnels_is_still_read(tmp_path: Path) -> None:
    """A tunnel started by an older tether and still running: no socks or allow field."""
    registry = Registry(tmp_path / "run")
    registration = register(registry, mode="background")
    try:
        path = registry.paths(registration.entry.id)["json"]
        old = json.loads(path.read_text())
        del old["socks"], old["allow"]
        path.write_text(json.dumps(old))
        (entry,) = registry.entries()
        assert entry == registration.entry and not entry.socks and entry.allow == []
    finally:
        registration.remove()
