"""When a graceful stop drains: one table, per mode and per way of ending, that every mode reads.

Draining means: stop accepting, give open connections up to the spec's ``drain`` seconds to
finish, then close what is left (see Tunnel.close). Each mode names how its tunnel ended and asks
``drain_for``; none decides on its own.
"""

from __future__ import annotations

from typing import Literal, get_args

from tether.states import MODES, Mode
from tether.spec import TunnelSpec

#: How a tunnel comes to an end.
#: stop: a `tether stop` (the control socket); signal: SIGTERM, SIGINT or SIGHUP to tether's
#: process (or, in the background, its starter going away); ttl, idle: a lifetime bound;
#: command: run mode's command exited by itself; closed: the owner ended it (the shell's
#: session ended, the Python program's block was left); lost: the transport is gone for good.
Ending = Literal["stop", "signal", "ttl", "idle", "command", "closed", "lost"]
ENDINGS: tuple[Ending, ...] = get_args(Ending)

#: Whether each mode drains on each ending; an ending a mode never meets is left out. A
#: graceful stop (a request, a signal, a lifetime bound) drains in every mode that can get one,
#: and so does a shell session's end, which stops tunnels others may be using (but in the API
#: a lifetime bound ends the program's block, see below). A run command that exits, and a
#: program's block that is left, were the tunnel's users: what is left has nobody waiting.
#: A lost transport has no stream left to finish. Signals go to a shell's prompt and to a
#: program, never to their tunnels.
DRAINS: dict[Mode, dict[Ending, bool]] = {
    "foreground": {"stop": True, "signal": True, "ttl": True, "idle": True, "lost": False},
    "background": {"stop": True, "signal": True, "ttl": True, "idle": True, "lost": False},
    "run": {
        "stop": True,
        "signal": True,
        "ttl": True,
        "idle": True,
        "command": False,
        "lost": False,
    },
    "shell": {"stop": True, "ttl": True, "idle": True, "closed": True, "lost": False},
    # A lifetime bound ends the program's block at once (it is cancelled), as leaving it does.
    "api": {"stop": True, "ttl": False, "idle": False, "closed": False, "lost": False},
}
assert set(DRAINS) == set(MODES)


def drain_for(spec: TunnelSpec, mode: Mode, ending: Ending) -> float:
    """Seconds the tunnel of ``spec`` gives its open connections, in ``mode``, on ``ending``."""
    return spec.drain if DRAINS[mode].get(ending, False) else 0.0


def bound_ending(reason: str) -> Ending:
    """The ending a tunnel's own ``wait_ended`` reports: a lifetime bound, or closed."""
    return "ttl" if reason == "ttl" else "idle" if reason == "idle" else "closed"
