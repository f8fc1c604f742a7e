"""A signer's feed to one relay: the gateway's state goes down before the answer to a signing
request, so the relay never holds a certificate issued under a grant it has not heard of."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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


@asynccontextmanager
async def serving(
    tmp_path: Path,
) -> AsyncIterator[tuple[layout.Gateway, asyncio.StreamReader, Written]]:
    """A gateway with site lab, relay r1 and user alice (no grant), and r1's feed serving it,
    its first state sent; the feed ends (exit 0) with the block. Its periodic look at the
    files never comes again: only a signing makes one."""
    gateway = layout.init(tmp_path / "gw")
    enrol.add_site(gateway, "lab", [Endpoint("127.0.0.1", 2222)])
    relaybundle.add_relay(gateway, "r1", [Endpoint("127.0.0.1", 2200)])
    keygen.generate(tmp_path / "alice", "alice")
    policy.add_user(gateway.policy, "alice", (tmp_path / "alice.pub").read_text())
    reader = asyncio.StreamReader()
    written = Written()
    task = asyncio.ensure_future(
        Feed(gateway, "r1", reader, cast(asyncio.WriteTransport, written)).serve()
    )
    try:
        await wait_until(lambda: written.kinds() == ["state"], "the state at once")
        yield gateway, reader, written
    finally:
        reader.feed_eof()
        assert await asyncio.wait_for(task, 10) == 0


def ask(reader: asyncio.StreamReader, ident: int) -> None:
    """The relay asks for alice's certificate for lab/echo."""
    request = {"sign": ident, "user": "alice", "site": "lab", "target": "echo"}
    reader.feed_data(json.dumps(request).encode() + b"\n")


async def test_a_grant_reaches_the_relay_before_the_certificate_issued_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed, "CHECK", 3600.0)
    async with serving(tmp_path) as (gateway, reader, written):
        assert not granted(written.messages[0], "alice")
        policy.grant(gateway.policy, "alice", "lab", "echo", None)
        ask(reader, 1)
        await wait_until(lambda: "signed" in written.kinds(), "the certificate")
        assert written.kinds() == ["state", "state", "signed"], written.messages
        assert granted(written.messages[1], "alice")
        # Nothing changed since: a second signing sends no state again.
        ask(reader, 2)
        await wait_until(lambda: written.kinds().count("signed") == 2, "the second certificate")
        assert written.kinds() == ["state", "state", "signed", "signed"]


async def test_a_state_that_cannot_be_read_does_not_hold_the_certificate_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed, "CHECK", 3600.0)
    async with serving(tmp_path) as (gateway, reader, written):
        policy.grant(gateway.policy, "alice", "lab", "echo", None)
        gateway.revoked.unlink()  # an operator's slip: the state cannot be read whole
        ask(reader, 1)
        await wait_until(lambda: "signed" in written.kinds(), "the certificate")
        assert written.kinds() == ["state", "signed"]
