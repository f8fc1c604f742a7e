"""The command line: parse, call a mode, render. The only place errors become exit codes.

The click application is in ``app``. ``main`` answers the plain forms of `tether list` without
it: they run in scripts' loops, and click alone costs more start-up time than the whole answer.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

# `tether list` in the forms that need no parser: arguments -> as JSON.
PLAIN_LIST = {("list",): False, ("ls",): False, ("list", "--json"): True, ("ls", "--json"): True}
PROG = "tether"
# Set by the script of `tether completion`: the shell asks click for the words that may follow.
COMPLETE_VAR = "_TETHER_COMPLETE"


class _StderrHandler(logging.Handler):
    """Writes to whatever sys.stderr is when a record comes (a background tunnel's log file
    replaces it after start-up)."""

    def emit(self, record: logging.LogRecord) -> None:
        stream = sys.stderr
        if stream is None:  # fd 2 was closed when tether started: nowhere to say it
            return
        try:
            stream.write(self.format(record) + "\n")
            stream.flush()
        except (OSError, ValueError):
            pass  # stderr is closed or broken: there is nowhere left to say it


class _Formatter(logging.Formatter):
    """`tether: warning: ...`, like the error lines; other libraries' records name their source."""

    def format(self, record: logging.LogRecord) -> str:
        from tether.errors import visible

        source = "" if record.name.split(".")[0] == "tether" else f"{record.name}: "
        message = record.getMessage()
        option = getattr(record, "option", None)
        if isinstance(option, str) and isinstance(record.args, tuple) and record.args:
            # The option is the record's last argument: shown as the flag that set it.
            from tether.cli.render import flag_of

            message = record.msg % (*record.args[:-1], flag_of(option))
        # One line, whatever a value in it holds: only the traceback below may add lines.
        line = visible(f"tether: {record.levelname.lower()}: {source}{message}")
        if record.exc_info and logging.getLogger().getEffectiveLevel() <= logging.DEBUG:
            line += "\n" + self.formatException(record.exc_info)  # tracebacks: --debug only
        return line


def configure_logging(*, debug: bool) -> None:
    """tether's one-line records on stderr; everything, with tracebacks, under --debug."""
    handler = _StderrHandler()
    handler.setFormatter(_Formatter())
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, handlers=[handler])
    # asyncssh logs every channel at INFO; without --debug only tether's own one-liners show.
    logging.getLogger("asyncssh").setLevel(logging.DEBUG if debug else logging.CRITICAL)
    # Python warnings are for a library's developers (cryptography 51 warns about DSA on every
    # import of asyncssh), not for the user of a command, whose stderr carries one line per
    # error: they go to the log, shown under --debug only. -W or PYTHONWARNINGS still rule.
    if not sys.warnoptions:
        warnings.simplefilter("default")
        logging.captureWarnings(True)
        logging.getLogger("py.warnings").setLevel(logging.DEBUG if debug else logging.CRITICAL)


def main() -> None:
    """Console-script entry point."""
    _guard_standard_fds()
    if os.environ.get(COMPLETE_VAR):
        sys.exit(complete())
    as_json = PLAIN_LIST.get(tuple(sys.argv[1:]))
    if as_json is not None:
        from tether.cli.listing import show_tunnels_now

        configure_logging(debug=False)
        sys.exit(show_tunnels_now(as_json=as_json))
    from tether.cli.app import cli

    cli(prog_name=PROG, complete_var=COMPLETE_VAR)


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
