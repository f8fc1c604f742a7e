"""Waiting for a file lock in a thread: taken when its holder lets go, bounded by a deadline or a
cancellation, and never left held by a wait that was given up."""

from __future__ import annotations

import asyncio
import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.waiting import wait_until, wait_until_sync
from tether.locks import LockWait, try_lock

# Holds a POSIX lock on argv[1] until its stdin closes (POSIX locks never conflict within one
# process, so the holder must be another).
HOLDER = (
    "import fcntl, sys\n"
    "fd = open(sys.argv[1], 'r+')\n"
    "fcntl.lockf(fd, fcntl.LOCK_EX)\n"
    "print('held', flush=True)\n"
    "sys.stdin.read()\n"
)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    path = tmp_path / "lock"
    path.write_text("")
    return path


@pytest.fixture
def held_elsewhere(path: Path) -> Iterator[subprocess.Popen[str]]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    yield holder
    holder.kill()
    holder.wait()


def closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


async def test_taken_once_the_holder_lets_go(path: Path) -> None:
    holder = os.open(path, os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)
    fd = os.open(path, os.O_RDWR)
    assert not try_lock(fd, "flock")
    waiting = asyncio.ensure_future(LockWait(fd, "flock").wait_async())
    await asyncio.sleep(0)
    assert not waiting.done()
    os.close(holder)
    await asyncio.wait_for(waiting, 10)
    other = os.open(path, os.O_RDWR)
    assert not try_lock(other, "flock")  # ours now
    os.close(fd)
    assert try_lock(other, "flock")
    os.close(other)


async def test_a_cancelled_wait_lets_go_of_a_lock_it_takes_later(path: Path) -> None:
    holder = os.open(path, os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)
    fd = os.open(path, os.O_RDWR)
    wait = LockWait(fd, "flock")
    waiting = asyncio.ensure_future(wait.wait_async())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    os.close(holder)  # the thread takes it now, and must let go of it at once
    await wait_until(wait.done.is_set, "the waiting thread's end")
    assert closed(fd)
    other = os.open(path, os.O_RDWR)
    assert try_lock(other, "flock")
    os.close(other)


def test_a_deadline_gives_the_wait_up(path: Path, held_elsewhere: subprocess.Popen[str]) -> None:
    fd = os.open(path, os.O_RDWR)
    assert not try_lock(fd, "lockf")
    wait = LockWait(fd, "lockf")
    assert wait.wait(0.2) is False
    assert held_elsewhere.stdin is not None
    held_elsewhere.stdin.close()  # the holder exits: the thread takes the lock, then lets go
    wait_until_sync(wait.done.is_set, "the waiting thread's end")
    assert closed(fd)
    other = os.open(path, os.O_RDWR)
    assert try_lock(other, "lockf")
    os.close(other)


def test_a_wait_that_gets_the_lock_in_time(
    path: Path, held_elsewhere: subprocess.Popen[str]
) -> None:
    fd = os.open(path, os.O_RDWR)
    wait = LockWait(fd, "lockf")
    assert held_elsewhere.stdin is not None
    held_elsewhere.stdin.close()
    assert wait.wait(10) is True
    assert not closed(fd)
    os.close(fd)
