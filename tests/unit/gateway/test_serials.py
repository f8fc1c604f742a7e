"""Certificate serials: never the same one twice, even from processes at once."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from tether.errors import ConfigError
from tether.gateway.serials import next_serial


def take(path: Path, count: int) -> list[int]:
    return [next_serial(path) for _ in range(count)]


def test_concurrent_takers_get_distinct_serials(tmp_path: Path) -> None:
    counter = tmp_path / "serial"
    counter.write_text("1\n")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        taken = [n for batch in pool.starmap(take, [(counter, 50)] * 4) for n in batch]
    assert sorted(taken) == list(range(2, 202))
    assert counter.read_text() == "201\n"


@pytest.mark.parametrize("content", ["", "x\n", "-1\n"])
def test_a_broken_counter_is_refused(tmp_path: Path, content: str) -> None:
    counter = tmp_path / "serial"
    counter.write_text(content)
    with pytest.raises(ConfigError, match="not a serial counter"):
        next_serial(counter)
    assert counter.read_text() == content
