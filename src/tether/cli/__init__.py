"""The command line: parse, call a mode, render. The only place errors become exit codes.

The click application is in ``app``; the program's name and its log lines, in ``console``.
``main`` answers the plain forms of `tether list`, `tether stop` and `tether start` without
click: they run in scripts' loops and cleanup steps, and click alone costs more start-up time
than the whole answer of a list (and a tenth of a start's, before its SSH login can begin).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import partial

from tether.cli.console import COMPLETE_VAR, PROG, configure_logging

# `tether list` in the forms that need no parser: arguments -> as JSON.
PLAIN_LIST = {("list",): False, ("ls",): False, ("list", "--json"): True, ("ls", "--json"): True}


def main() -> None:
    """Console-script entry point."""
    _guard_standard_fds()
    if os.environ.get(COMPLETE_VAR):
        sys.exit(complete())
    as_json = PLAIN_LIST.get(tuple(sys.argv[1:]))
    if as_json is not None:
        from tether.cli.listing import show_tunnels

        sys.exit(_plainly(partial(show_tunnels, as_json=as_json)))
    if sys.argv[1:2] == ["stop"]:
        from tether.cli.stopping import plain_stop, stop_selected

        plain = plain_stop(sys.argv[2:])
        if plain is not None:
            selectors, every, missing_ok = plain
            stop = partial(stop_selected, selectors, every=every, missing_ok=missing_ok)
            sys.exit(_plainly(stop))
    if sys.argv[1:2] == ["start"]:
        from tether.cli.plainstart import plain_start, start_plainly

        parsed = plain_start(sys.argv[2:])
        if parsed is not None:
            sys.exit(_plainly(partial(start_plainly, *parsed)))
    from tether.cli.app import cli

    cli(prog_name=PROG, complete_var=COMPLETE_VAR)


def _plainly(answer: Callable[[], None]) -> int:
    """Run a plain form's ``answer`` without the click application: the same output, one-line
    errors and exit codes as its parsed form."""
    from tether.cli.render import show_error

    configure_logging(debug=False)
    try:
        answer()
    except (KeyboardInterrupt, Exception) as exc:
        return show_error(exc, debug=False)
    return 0


def complete() -> int:
    """Answer a shell's completion request (click's protocol, COMPLETE_VAR and COMP_WORDS).

    Whatever goes wrong, the answer is no words and no message: a TAB must never print a
    traceback into the command line being typed.
    """
    from tether.cli.app import cli

    try:
        cli.main(prog_name=PROG, complete_var=COMPLETE_VAR)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else 1
    except KeyboardInterrupt:
        return 130
    except Exception:
        return 1
    return 0


def _guard_standard_fds() -> None:
    """Put /dev/null on a closed stdin, stdout or stderr.

    Otherwise the next file tether opens (a socket, a log) would become fd 0, 1 or 2, and a
    child or a print() would read or write it. sys.stdout stays None when fd 1 was closed, so
    printing a result still fails with a clear error instead of vanishing.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


if __name__ == "__main__":  # pragma: no cover
    main()
