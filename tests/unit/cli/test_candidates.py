"""Shell completion's words: a registry entry cannot add words or escapes to the answer."""

from __future__ import annotations

from tether.cli.candidates import _items
from tests.support.records import hostile_record


def test_a_name_that_is_no_word_is_not_offered() -> None:
    entry = hostile_record().entry
    items = _items([entry], "")
    assert [item.value for item in items] == [entry.id]  # the name has a newline: not a word
    assert all(item.help is not None and item.help.isprintable() for item in items)
