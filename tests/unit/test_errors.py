"""The exception tree's helpers for messages: values quoted on one printable line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether import errors
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


def every_error() -> list[type[errors.TetherError]]:
    found: list[type[errors.TetherError]] = []
    todo: list[type[errors.TetherError]] = [errors.TetherError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo += cls.__subclasses__()
    return [cls for cls in found if cls.__module__ == "tether.errors"]


def test_every_error_is_in_both_exit_code_tables() -> None:
    """The tree's docstring and the README's table name every class, with its code."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    table = readme[readme.index("### Exit codes") :]
    docstring = errors.__doc__ or ""
    for cls in every_error():
        rows = [line for line in docstring.splitlines() if f" {cls.__name__} " in f"{line} "]
        assert rows and rows[0].split()[0] in (str(cls.exit_code), "128+N", "N"), cls.__name__
        named = f"`{cls.__name__}`"
        readme_rows = [row for row in table.splitlines() if row.startswith("|") and named in row]
        if not readme_rows:  # said in the words under the table (ChildFailed, ControlError)
            assert named in table.split("\n## ")[0], f"{cls.__name__} is not in the README"
            continue
        code = readme_rows[0].split("|")[1].strip()
        assert code in (str(cls.exit_code), "128+N"), (cls.__name__, code)
