"""The command line's pure renderers: sizes, durations, tables, flags in hints, error lines."""

from __future__ import annotations

import sys

import pytest

from tether.cli.render import echo, human_bytes, human_duration, show_error, table, with_flags
from tether.errors import OutputError, ReadinessTimeoutError, UsageError


@pytest.mark.parametrize(
    ("count", "shown"),
    [
        (None, "-"),
        (0, "0B"),
        (1023, "1023B"),
        (1024, "1.0KiB"),
        (5 * 2**20, "5.0MiB"),
        (2**40, "1024.0GiB"),
    ],
)
def test_human_bytes(count: int | None, shown: str) -> None:
    assert human_bytes(count) == shown


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, "-"), (0, "0s"), (59.9, "59s"), (61, "1m01s"), (7260, "2h01m"), (90000, "1d01h")],
)
def test_human_duration(seconds: float | None, shown: str) -> None:
    assert human_duration(seconds) == shown


def test_table_aligns_and_trims() -> None:
    assert table(["A", "BB"], [["xxx", "y"], ["z", ""]]) == "A    BB\nxxx  y\nz"


def test_option_keys_become_flags_as_whole_words_only() -> None:
    text = "raise timeout, or the connect_timeout; timeouts stay"
    assert (
        with_flags(text, ("timeout",)) == "raise --timeout, or the connect_timeout; timeouts stay"
    )
    assert with_flags("pick another port", ("port",)) == "pick another --port"
    assert with_flags("or pass all", ("all",)) == "or pass --all"
    assert with_flags("give target_host", ("target_host",)) == "give --target-host"


def test_an_error_line_shows_flags_and_the_code(capsys: pytest.CaptureFixture[str]) -> None:
    error = ReadinessTimeoutError("not ready", hint="or raise timeout", options=("timeout",))
    assert show_error(error, debug=False) == 7
    assert capsys.readouterr().err == "tether: error: not ready (or raise --timeout)\n"
    assert str(error) == "not ready (or raise timeout)"  # what a Python caller sees
    assert show_error(KeyError("boom"), debug=False) == 1
    assert "internal error: 'boom' (run with --debug" in capsys.readouterr().err


def test_a_closed_stdout_is_an_output_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", None)
    with pytest.raises(OutputError, match="cannot write to stdout: Bad file descriptor"):
        echo("x")
    assert isinstance(UsageError("x"), UsageError)
