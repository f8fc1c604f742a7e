"""A child's output read to a bound (``collected``), and a child ended with its process group
(``killed``). For a process whose output comes from a peer (the relay's signer, through ssh):
a hostile or broken peer's flood is neither kept in memory nor waited out.

The child leads a process group of its own (started with start_new_session), so that what runs
below it, a ProxyJump's ssh that holds its stderr too, ends with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal


class _Over(Exception):
    """A stream of the child went over its bound."""


async def collected(
    process: asyncio.subprocess.Process, out_limit: int, err_limit: int
) -> tuple[bytes, bytes] | None:
    """``process``'s stdout and stderr to their ends, once it has exited; None if either went
    over its bound (``out_limit``, ``err_limit`` bytes): then it is ``killed`` at once."""
    assert process.stdout is not None and process.stderr is not None

    async def capped(stream: asyncio.StreamReader, limit: int) -> bytes:
        data = b""
        while chunk := await stream.read(limit + 1 - len(data)):
            data += chunk
            if len(data) > limit:
                raise _Over
        return data

    over = False
    try:
        async with asyncio.TaskGroup() as group:  # one over its bound cancels the other
            out = group.create_task(capped(process.stdout, out_limit))
            err = group.create_task(capped(process.stderr, err_limit))
    except* _Over:
        over = True
    if over:
        await killed(process)
        return None
    await process.wait()
    return out.result(), err.result()


async def killed(process: asyncio.subprocess.Process) -> None:
    """Kill ``process``'s group and wait for its end. What its pipes still hold is dropped:
    asyncio ends a process's wait only once they are closed, and a reader with a full buffer
    reads no more by itself."""
    with contextlib.suppress(ProcessLookupError):  # all of it may have exited already
        os.killpg(process.pid, signal.SIGKILL)
    for stream in (process.stdout, process.stderr):
        while stream is not None and await stream.read(65536):
            pass
    await process.wait()
