"""A child's output read to a bound, and a child ended with its process group (childoutput.py):
real processes, as the relay's signer's ssh is one."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.waiting import wait_until
from tether.procs import ProcessRef, descendants
from tether.transports.childoutput import collected, killed
from tether.transports.gateway import MAX_ANSWER

LIMIT = MAX_ANSWER  # the bound the gateway reads the signer's answer to


async def spawned(script: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        "sh", "-c", script,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # as the signer's ssh is (collected and killed need it)
    )  # fmt: skip


async def test_the_signers_output_is_read_whole_within_its_bound() -> None:
    process = await spawned(f"head -c {LIMIT} /dev/zero; echo refused >&2; exit 5")
    assert await collected(process, LIMIT, LIMIT) == (bytes(LIMIT), b"refused\n")
    assert process.returncode == 5


@pytest.mark.parametrize("flood", ["yes", "yes >&2"])
async def test_a_flood_from_the_signer_ends_it_at_once(flood: str) -> None:
    """Over the bound on either stream, and never ending by itself: the process is killed, not
    waited out, and nothing past the bound is kept."""
    process = await spawned(f"{flood}; sleep 300")
    assert await asyncio.wait_for(collected(process, LIMIT, LIMIT), 30) is None
    assert process.returncode is not None and process.returncode < 0


async def test_a_signer_given_up_on_ends_with_what_runs_below_it() -> None:
    """Cancelled (the relay's time ran out), the signer's ssh is killed with its group: a
    ProxyJump's ssh below it, which holds its stderr too, does not keep the wait going."""
    process = await spawned("sleep 300 & sleep 300")
    await wait_until(lambda: len(descendants(process.pid)) == 2, "both sleeps")
    below = descendants(process.pid)
    await asyncio.wait_for(killed(process), 30)
    assert process.returncode is not None and process.returncode < 0
    # Their pipes are closed, but the kernel closes a dying process's files a moment before
    # it turns it into a zombie: wait for that moment, with a deadline far short of the sleeps'.
    await wait_until(lambda: all(ProcessRef.of(pid) is None for pid in below), "both sleeps gone")
