"""The words for a tunnel's state, for the mode that hosts it, and for a path with no SSH server:
the engine, the modes, the control protocol and the listings all speak them, so they live here,
importing nothing of tether."""

from __future__ import annotations

from typing import Literal, get_args

#: A tunnel's phases, in the order it goes through them (closing and lost may come at any time).
State = Literal[
    "new",
    "binding",
    "connecting",
    "authenticating",
    "probing",
    "ready",
    "reconnecting",
    "closing",
    "closed",
    "lost",
]
#: How a tunnel's process holds it: one per command-line mode, and the Python API's.
Mode = Literal["foreground", "background", "run", "shell", "api"]
STATES: tuple[State, ...] = get_args(State)
MODES: tuple[Mode, ...] = get_args(Mode)
#: The `via` of a tunnel that goes straight to its target; a profile may write it to undo the
#: `via` of [defaults].
DIRECT = "direct"
