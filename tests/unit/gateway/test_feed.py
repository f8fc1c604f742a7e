"""A signer's feed to one relay: the gateway's state goes down before the answer to a signing
request, so the relay never holds a certificate issued under a grant it has not heard of."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import cast

import pytest

from tests.support.waiting import wait_until
from tether.gateway import enrol, feed, keygen, layout, policy, relaybundle
from tether.gateway.feed import Feed
from tether.spec import Endpoint


class Written:
    """The feed's end toward the relay: every message it sent, in order."""

    def __init__(self) -> None:
        self.messages: list[dict[str, object]] = []

    def write(self, data: bytes) -> None:
        self.messages.extend(json.loads(line) for line in data.splitlines())

    def kinds(self) -> list[str]:
        return ["state" if "policy" in m else "signed" if "signed" in m else "other"
                for m in self.messages]  # fmt: skip


def granted(message: dict[str, object], user: str) -> bool:
    """Whether a state message's policy grants ``user`` anything."""
    raw = str(message["policy"]).encode()
    return any(g.user == user for g in policy.parse(raw, source="test").grants)


async def test_a_grant_reaches_the_relay_before_the_certificate_issued_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The periodic look at the files never comes in this test: only a signing makes one.
    monkeypatch.setattr(feed, "CHECK", 3600.0)
    gateway = layout.init(tmp_path / "gw")
    enrol.add_site(gateway, "lab", [Endpoint("127.0.0.1", 2222)])
    relaybundle.add_relay(gateway, "r1", [Endpoint("127.0.0.1", 2200)])
    keygen.generate(tmp_path / "alice", "alice")
    policy.add_user(gateway.policy, "alice", (tmp_path / "alice.pub").read_text())
    reader = asyncio.StreamReader()
    written = Written()
    serving = asyncio.ensure_future(
        Feed(gateway, "r1", reader, cast(asyncio.WriteTransport, written)).serve()
    )
    try:
        await wait_until(lambda: written.kinds() == ["state"], "the state at once")
        assert not granted(written.messages[0], "alice")
        policy.grant(gateway.policy, "alice", "lab", "echo", None)
        request = {"sign": 1, "user": "alice", "site": "lab", "target": "echo"}
        reader.feed_data(json.dumps(request).encode() + b"\n")
        await wait_until(lambda: "signed" in written.kinds(), "the certificate")
        assert written.kinds() == ["state", "state", "signed"], written.messages
        assert granted(written.messages[1], "alice")
        # Nothing changed since: a second signing sends no state again.
        reader.feed_data(json.dumps({**request, "sign": 2}).encode() + b"\n")
        await wait_until(lambda: written.kinds().count("signed") == 2, "the second certificate")
        assert written.kinds() == ["state", "state", "signed", "signed"]
    finally:
        reader.feed_eof()
        assert await asyncio.wait_for(serving, 10) == 0
