"""The program's name, the variable of its shell completion, and its log records on stderr, one
line each (`tether: warning: ...`): what the entry point and the click application both need,
apart from either."""

from __future__ import annotations

import logging
import sys
import warnings

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
