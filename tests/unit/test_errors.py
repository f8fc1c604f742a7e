"""The exception tree's helpers for messages: values quoted on one printable line."""

from __future__ import annotations

import pytest

from tether.errors import shown, visible


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("plain, é and 日本", "plain, é and 日本"),
        ("a\x1b[2Jb", "a\\x1b[2Jb"),
        ("a\nb\rc\td", "a\\nb\\rc\\td"),
        ("csi\x9b", "csi\\x9b"),
        ("del\x7f", "del\\x7f"),
        ("ls\u2028ps\u2029", "ls\\u2028ps\\u2029"),
        ("bidi\u202e", "bidi\\u202e"),
    ],
)
def test_visible(text: str, escaped: str) -> None:
    assert visible(text) == escaped


def test_shown_quotes_on_one_printable_line() -> None:
    assert shown("a\x1b[2J\x9b\u2028") == '"a\\u001b[2J\\x9b\\u2028"'
    assert shown('say "hi"') == '"say \\"hi\\""'
