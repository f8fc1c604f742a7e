"""A diagnosis as data: its steps, each timed on its own, and the first failure, which ends it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from tether.errors import ReadinessTimeoutError, TetherError

#: The version of the JSON object; it changes only when a key is removed or changes meaning.
SCHEMA = 1
#: The steps, in the order they run.
STEPS = ("resolve", "tcp", "banner", "host_key", "auth", "channel", "probe")
Status = Literal["ok", "fail", "skipped"]


@dataclass
class Step:
    """One step: whether it passed, how long it took, and what it found (``facts``)."""

    name: str
    status: Status = "skipped"
    ms: float | None = None
    detail: str = ""
    facts: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "ok": self.status == "ok",
            "ms": None if self.ms is None else round(self.ms, 1),
            "detail": self.detail,
            "facts": self.facts,
        }


@dataclass
class Diagnosis:
    """What `tether diagnose` found: every step (those not run are "skipped"), the effective
    ssh_config where an engine reports one, and the error that ended it, if any."""

    target: str
    via: str | None
    engine: str | None
    steps: dict[str, Step] = field(default_factory=lambda: {n: Step(n) for n in STEPS})
    ssh_config: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    error: TetherError | None = None
    failed: str | None = None  # the step that failed

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def exit_code(self) -> int:
        return 0 if self.error is None else self.error.exit_code

    def to_json(self) -> dict[str, Any]:
        error = self.error
        return {
            "schema": SCHEMA,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "target": self.target,
            "via": self.via,
            "engine": self.engine,
            "failed_step": self.failed,
            "error": None if error is None else error.message,
            "hint": None if error is None else error.hint,
            "steps": [step.to_json() for step in self.steps.values()],
            "ssh_config": self.ssh_config,
            "notes": self.notes,
        }


class Failed(Exception):
    """A step failed; the diagnosis holds the error, and nothing more runs."""


class NotReached(Exception):
    """A step that could not happen, because what comes before it on the way failed in a
    later step's terms (a jump host's login, before the server's host key could be shown):
    it is skipped, saying why, and the next step runs."""


class Runner:
    """Runs steps in order, each timed and bounded by the diagnosis's one deadline (the
    tunnel's ``timeout``), recording the first failure with its exit code."""

    def __init__(self, diagnosis: Diagnosis, timeout: float) -> None:
        self.diagnosis = diagnosis
        self.timeout = timeout
        self.deadline = asyncio.get_running_loop().time() + timeout

    def skip(self, name: str, why: str) -> None:
        self.diagnosis.steps[name].detail = why

    async def run(
        self,
        name: str,
        action: Callable[[Step], Awaitable[None]],
        *,
        doing: str,
        hint: str | None = None,
    ) -> None:
        """Run ``action`` as step ``name``; on failure record it and raise Failed.

        ``doing`` names what the step waits for, in the timeout's message; ``hint`` is the next
        step to take when the error carries none of its own.
        """
        step = self.diagnosis.steps[name]
        started: float | None = time.monotonic()
        try:
            async with asyncio.timeout_at(self.deadline):
                await action(step)
        except NotReached as exc:
            step.detail = str(exc)
            started = None  # skipped: not run, and not timed
            return
        except TimeoutError:
            error: TetherError = ReadinessTimeoutError(
                f"not done after {self.timeout:g}s (still {doing})",
                hint="check that the server answers, or raise timeout",
                options=("timeout",),
            )
        except TetherError as exc:
            error = exc
        else:
            step.status = "ok"
            return
        finally:
            if started is not None:
                step.ms = (time.monotonic() - started) * 1000
        if error.hint is None and hint is not None:
            error.hint = hint
        step.status = "fail"
        step.detail = f"{error.message}; {step.detail}" if step.detail else error.message
        self.diagnosis.error = error
        self.diagnosis.failed = name
        raise Failed(name)
