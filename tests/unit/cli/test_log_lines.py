"""Log records on stderr: one line each, and a traceback only under --debug."""

from __future__ import annotations

import logging
import sys

import pytest

from tether.cli.console import _Formatter


def record_with_traceback(name: str) -> logging.LogRecord:
    try:
        raise OSError(107, "Transport endpoint is not connected")
    except OSError:
        exc_info = sys.exc_info()
    return logging.LogRecord(name, logging.ERROR, __file__, 1, "it failed", None, exc_info)


@pytest.mark.parametrize(("level", "traceback"), [(logging.WARNING, False), (logging.DEBUG, True)])
def test_a_traceback_only_with_debug(
    monkeypatch: pytest.MonkeyPatch, level: int, traceback: bool
) -> None:
    monkeypatch.setattr(logging.getLogger(), "level", level)
    text = _Formatter().format(record_with_traceback("asyncio"))
    assert text.splitlines()[0] == "tether: error: asyncio: it failed"
    assert ("Traceback (most recent call last)" in text) is traceback
    assert (len(text.splitlines()) > 1) is traceback


def test_a_value_in_a_record_stays_on_its_line() -> None:
    record = logging.LogRecord(
        "tether", logging.WARNING, __file__, 1, "%s: lost: %s", ("db\x1b[2J", "a\nb\u2028c"), None
    )
    assert _Formatter().format(record) == "tether: warning: db\\x1b[2J: lost: a\\nb\\u2028c"


WARN_THEN_EXIT = (
    "import sys, warnings\n"
    "from tether.cli.console import configure_logging\n"
    "configure_logging(debug=sys.argv[1] == 'debug')\n"
    "warnings.warn('DSA is deprecated', UserWarning)\n"
)


@pytest.mark.parametrize(("mode", "shown"), [("quiet", False), ("debug", True)])
def test_a_library_warning_reaches_stderr_only_under_debug(mode: str, shown: bool) -> None:
    # cryptography 51 warns on every import of asyncssh: a command's stderr holds one line per
    # error, so such warnings go to the log, which shows them under --debug only.
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", WARN_THEN_EXIT, mode],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    if shown:
        assert done.stderr.startswith("tether: warning: py.warnings: "), done.stderr
        assert "DSA is deprecated" in done.stderr
    else:
        assert done.stderr == ""
