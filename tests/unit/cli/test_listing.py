"""`tether list`'s table: whatever a registry entry holds, one printable row per tunnel."""

from __future__ import annotations

from tether.cli.listing import HEADERS, render_list
from tests.support.records import hostile_record, no_raw_controls


def test_a_hostile_entry_is_one_row_of_visible_escapes() -> None:
    text = render_list([hostile_record(), hostile_record(id="00000001")], as_json=False)
    lines = text.split("\n")
    assert len(lines) == 3 and lines[0].split() == list(HEADERS)
    no_raw_controls(text)
    assert lines[1].startswith("0badc0de  db\\x1b[2J\\x1b[H\\rFORGED  ROW\\n\\x9b31m\\u2028\\x7f")


def test_the_json_list_escapes_controls() -> None:
    text = render_list([hostile_record()], as_json=True)
    no_raw_controls(text)
    assert "\\u001b[2J" in text
