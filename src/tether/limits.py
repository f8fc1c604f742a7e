"""The descriptor limit of the processes tether spawns that carry many connections at once."""

from __future__ import annotations

import contextlib
import resource


def raise_nofile(pid: int) -> None:
    """Raise the soft RLIMIT_NOFILE of ``pid`` (a child just spawned) to its hard limit.

    An ssh or sshd holds a socket per channel: an agent's link, and the relay's sshd process
    that serves it, hold one for each client session of the site, past the soft limit of 1024
    that most systems start with, where they would refuse the next session. Only the child is
    raised: tether's own limits stay as its caller set them. Raising a soft limit up to the
    hard one needs no privilege; a child that has exited already keeps what it had."""
    with contextlib.suppress(OSError):
        _soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (hard, hard))
