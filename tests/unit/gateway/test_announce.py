"""What an agent tells a relay of its site (announce.py): checked whole, kept privately."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tether.errors import UsageError
from tether.gateway.announce import Announcement, load, record
from tether.spec import Endpoint


def test_an_announcement_round_trips(tmp_path: Path) -> None:
    said = Announcement("svc", {"db": Endpoint("10.0.0.5", 5432), "v6": Endpoint("::1", 80)})
    assert Announcement.parse(said.encode()) == said
    assert load(tmp_path, "lab") is None
    record(tmp_path, "lab", said)
    assert load(tmp_path, "lab") == said
    assert stat.S_IMODE((tmp_path / "sites").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "sites" / "lab.json").stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "data",
    [
        "not json",
        "[]",
        {"account": "svc"},
        {"account": "svc", "targets": {}, "extra": 1},
        {"account": "svc\nAllowUsers root", "targets": {"db": "h:1"}},
        {"account": "-oProxyCommand=x", "targets": {"db": "h:1"}},
        {"account": "a b", "targets": {"db": "h:1"}},
        {"account": "svc", "targets": {}},
        {"account": "svc", "targets": {"DB": "h:1"}},
        {"account": "svc", "targets": {"db": "h"}},
        {"account": "svc", "targets": {"db": 'h",permitopen="*:*:1'}},
        {"account": "svc", "targets": {"db": 5432}},
        {"account": "svc", "targets": {"../x": "h:1"}},
    ],
)
def test_a_hostile_announcement_is_refused(data: object) -> None:
    text = data if isinstance(data, str) else json.dumps(data)
    with pytest.raises(UsageError):
        Announcement.parse(text)


def test_a_site_name_cannot_leave_the_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        record(tmp_path, "../../etc", Announcement("svc", {"db": Endpoint("h", 1)}))
