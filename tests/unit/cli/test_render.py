"""The command line's pure renderers: sizes, durations, tables, flags in hints, error lines."""

from __future__ import annotations

import sys

import pytest

from tether.cli.render import (
    Spinner,
    echo,
    human_bytes,
    human_duration,
    print_ready,
    show_error,
    table,
    with_flags,
)
from tether.errors import OutputError, ReadinessTimeoutError, UsageError
from tests.support.records import ESCAPES, hostile_record, no_raw_controls


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


def test_table_cells_show_control_characters_escaped() -> None:
    text = table(["A", "B"], [[f"x{ESCAPES}", "y"]])
    assert len(text.split("\n")) == 2
    no_raw_controls(text)
    assert "\\x1b[2J" in text and "\\n" in text and "\\u2028" in text


@pytest.mark.parametrize("reused", [False, True])
def test_the_banner_is_one_printable_line(capsys: pytest.CaptureFixture[str], reused: bool) -> None:
    print_ready(hostile_record(), as_json=False, reused=reused)
    err = capsys.readouterr().err
    assert err.endswith("\n") and err[:-1].isprintable(), repr(err)
    assert "db\\x1b[2J" in err and "ssh://ops@bastion\\x1b[2J" in err


def test_the_json_record_escapes_controls_too(capsys: pytest.CaptureFixture[str]) -> None:
    print_ready(hostile_record(), as_json=True)
    out = capsys.readouterr().out
    assert out.endswith("\n") and out[:-1].isprintable() and out.count("\n") == 1


def test_an_error_line_stays_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    show_error(UsageError(f"cannot reach {ESCAPES}", hint=f"try {ESCAPES}"), debug=False)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err[:-1].isprintable(), repr(err)


def test_the_spinner_shows_a_label_neither_as_escapes_nor_as_markup() -> None:
    spinner = Spinner(f"[bold red]db{ESCAPES}")
    spinner.phase("connecting")
    text = spinner.text()
    assert text.isprintable()
    shown = spinner.__rich__().plain  # rich's own text: no markup is read in it
    assert shown == text
    assert shown.startswith("[bold red]db\\x1b[2J") and shown.endswith(": connecting")


def test_the_spinner_counts_the_seconds_against_the_timeout() -> None:
    now = [100.0]
    spinner = Spinner("db", 30, clock=lambda: now[0])
    assert spinner.text() == "db: starting (0s of 30s)"
    spinner.phase("authenticating")
    now[0] += 3.7
    assert spinner.text() == "db: authenticating (3s of 30s)"
    assert Spinner("db", 0.5, clock=lambda: 0.0).text() == "db: starting (0s of 0.5s)"
