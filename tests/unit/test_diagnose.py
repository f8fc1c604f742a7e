"""The parts of a diagnosis that need no server: the step runner, and reading a traced ssh."""

from __future__ import annotations

import asyncio

import pytest

from tether.diagnose.openssh import Trace
from tether.diagnose.report import STEPS, Diagnosis, Failed, Runner, Step
from tether.errors import TargetUnreachableError

# What OpenSSH 9.2's master says at LogLevel DEBUG1 while it logs in (abridged, in order).
LOGIN = """\
debug1: Connecting to 127.0.0.1 [127.0.0.1] port 40321.
debug1: Connection established.
debug1: Remote protocol version 2.0, remote software version OpenSSH_9.2p1 Debian-2+deb12u10
debug1: kex: algorithm: sntrup761x25519-sha512@openssh.com
debug1: kex: host key algorithm: ssh-ed25519
debug1: Server host key: ssh-ed25519 SHA256:5Yb2vJm3Ykz0H0e8YVZQ1f6o2kM7p0XoGQ2pQ8yq1mA
debug1: Host '[127.0.0.1]:40321' is known and matches the ED25519 host key.
debug1: Found key in /tmp/sshd/known_hosts:1
debug1: Authentications that can continue: publickey
debug1: Offering public key: /tmp/sshd/wrong_ed25519 ED25519 SHA256:AAAA explicit
debug1: Authentications that can continue: publickey
debug1: Offering public key: /tmp/sshd/client_ed25519 ED25519 SHA256:BBBB explicit
debug1: Server accepts key: /tmp/sshd/client_ed25519 ED25519 SHA256:BBBB explicit
Authenticated to 127.0.0.1 ([127.0.0.1]:40321) using "publickey".
"""


async def test_a_traced_login_tells_the_host_key_and_the_key_that_worked() -> None:
    trace = Trace(asyncio.Event())
    for line in LOGIN.splitlines():
        trace.line(line)
    facts = trace.facts
    assert facts["kex"] == "sntrup761x25519-sha512@openssh.com"
    assert facts["algorithm"] == "ssh-ed25519"
    assert facts["fingerprint"] == "SHA256:5Yb2vJm3Ykz0H0e8YVZQ1f6o2kM7p0XoGQ2pQ8yq1mA"
    assert facts["known_hosts"] == {"file": "/tmp/sshd/known_hosts", "line": 1}
    assert facts["methods_offered"] == ["publickey"]
    assert facts["key"] == "/tmp/sshd/client_ed25519 ED25519 SHA256:BBBB explicit"
    assert facts["method"] == "publickey"
    assert len(trace.offered) == 2
    assert trace.verified.is_set()


async def test_the_host_key_is_not_verified_before_ssh_says_so() -> None:
    trace = Trace(asyncio.Event())
    for line in LOGIN.splitlines()[:6]:
        trace.line(line)
    assert not trace.verified.is_set()
    assert "known_hosts" not in trace.facts


async def test_the_first_failure_ends_it_with_its_code_and_a_hint() -> None:
    diagnosis = Diagnosis("db:5432", None, None)
    runner = Runner(diagnosis, timeout=5)

    async def passes(step: Step) -> None:
        step.detail = "fine"

    async def refuses(step: Step) -> None:
        raise TargetUnreachableError("cannot connect to db:5432: Connection refused")

    await runner.run("resolve", passes, doing="resolving")
    with pytest.raises(Failed):
        await runner.run("tcp", refuses, doing="connecting", hint="start the target")
    assert diagnosis.exit_code == 6 and diagnosis.failed == "tcp"
    assert diagnosis.error is not None and diagnosis.error.hint == "start the target"
    report = diagnosis.to_json()
    assert [s["status"] for s in report["steps"]] == ["ok", "fail"] + ["skipped"] * 5
    assert report["steps"][1]["detail"] == "cannot connect to db:5432: Connection refused"
    assert [s["name"] for s in report["steps"]] == list(STEPS)


async def test_a_step_past_the_deadline_is_a_readiness_timeout() -> None:
    diagnosis = Diagnosis("db:5432", None, None)
    runner = Runner(diagnosis, timeout=0.01)

    async def hangs(step: Step) -> None:
        await asyncio.Event().wait()

    with pytest.raises(Failed):
        await runner.run("banner", hangs, doing="waiting for the SSH banner")
    assert diagnosis.exit_code == 7
    assert diagnosis.error is not None
    assert diagnosis.error.message == "not done after 0.01s (still waiting for the SSH banner)"
