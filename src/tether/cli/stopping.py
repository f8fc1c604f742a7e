"""What `tether stop` does; free of click, so that its plain forms (names and the two flags)
start as fast as `tether list`: cleanup steps and scripts call it, often in a loop."""

from __future__ import annotations

from tether.cli.render import echo, report_stopped
from tether.client import STOP_TIMEOUT, select_entries, stop_tunnels
from tether.registry import Registry

# The flags the plain form takes; anything else that looks like an option (--timeout, --help,
# a typo) goes to click, which parses it or refuses it with its usual error.
PLAIN_FLAGS = ("--all", "--missing-ok")


def plain_stop(args: list[str]) -> tuple[list[str], bool, bool] | None:
    """The selectors, --all and --missing-ok of `tether stop ARGS`, or None if ARGS need the
    parser."""
    selectors = [arg for arg in args if arg not in PLAIN_FLAGS]
    if any(not arg or arg.startswith("-") for arg in selectors):
        return None
    return selectors, "--all" in args, "--missing-ok" in args


def stop_selected(
    selectors: list[str], *, every: bool, missing_ok: bool, timeout: float = STOP_TIMEOUT
) -> None:
    """Stop the tunnels that ``selectors`` name (every one with ``every`` and none named), and
    say which stopped; StopFailedError names those that did not."""
    registry = Registry.default()
    entries = select_entries(registry, selectors, every=every, missing_ok=missing_ok)
    report_stopped(stop_tunnels(registry, entries, timeout=timeout))
    if every and not selectors:
        _end_shared_masters()
    if not entries and selectors:
        named = ", ".join(repr(s) for s in selectors)
        echo(f"tether: no running tunnel matches {named}; nothing to stop", err=True)
    elif not entries:
        echo("No tunnels running", err=True)


def _end_shared_masters() -> None:
    """`stop --all` leaves nothing running: not even a shared SSH master in its linger."""
    from tether import masters

    ended = masters.end_all(masters.place())
    if ended:
        echo(f"Ended {ended} idle shared SSH master{'s' if ended > 1 else ''}", err=True)
