"""The audit log's rotation: writers move it aside at a size, an operator may rename it, and
readers see every line once, in order, across the segments."""

from __future__ import annotations

import fcntl
import json
import logging
import multiprocessing
import os
import threading
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import pytest

from tests.support.waiting import wait_until_sync
from tether.gateway import audit

LIMIT = 4096
DEADLINE = 60.0


def note(path: Path, n: int, who: str = "t", *, rotate_at: int = LIMIT) -> None:
    audit.append(path, {"event": "note", "who": who, "n": n}, rotate_at=rotate_at)


def raw_lines(*files: Path) -> list[tuple[str, int]]:
    """(who, n) of every line in ``files``, read as they are on disk."""
    found = []
    for file in files:
        for raw in file.read_bytes().splitlines():
            line = json.loads(raw)
            found.append((line["who"], line["n"]))
    return found


def numbers(lines: Iterable[audit.Line]) -> list[object]:
    return [line["n"] for line in lines]


def pairs(lines: Iterable[audit.Line]) -> list[tuple[str, int]]:
    return [(str(line["who"]), cast(int, line["n"])) for line in lines]


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def writer(path: Path, who: str, count: int, rotate_at: int, start: Any) -> None:
    """A process writing ``count`` lines, once every writer is ready."""
    start.wait(DEADLINE)
    for n in range(count):
        note(path, n, who, rotate_at=rotate_at)


def run_writers(
    path: Path, count: int, rotate_at: int, whos: tuple[str, ...], during: Any = None
) -> None:
    """``whos`` writers of ``count`` lines each, as real processes started together;
    ``during(alive)`` runs while they write."""
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(len(whos) + 1)
    processes = [
        context.Process(target=writer, args=(path, who, count, rotate_at, start)) for who in whos
    ]
    for process in processes:
        process.start()
    try:
        start.wait(DEADLINE)
        if during is not None:
            during(lambda: any(p.is_alive() for p in processes))
        for process in processes:
            process.join(DEADLINE)
            assert process.exitcode == 0
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join(DEADLINE)


def assert_each_once(found: list[tuple[str, int]], count: int, whos: tuple[str, ...]) -> None:
    """Every writer's lines, each exactly once, and each writer's in the order it wrote them."""
    assert len(found) == count * len(whos)
    assert not [line for line, times in Counter(found).items() if times > 1]
    for who in whos:
        assert [n for w, n in found if w == who] == list(range(count))


def test_rotation_at_a_size_keeps_every_line_once_and_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "audit.jsonl"
    for n in range(1000):
        note(log, n)
    segments = audit.segments(log)
    assert len(segments) >= 9
    for segment in segments:
        assert LIMIT <= segment.stat().st_size < LIMIT + 100  # a segment ends at its line
        assert segment.stat().st_mode & 0o777 == 0o600
    assert raw_lines(*segments, log) == [("t", n) for n in range(1000)]
    monkeypatch.setattr(audit, "_CHUNK", 100)  # lines across reads, too
    assert numbers(audit.history(log)) == list(range(1000))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [s.name for s in segments] + ["audit.jsonl"]
    )


def test_two_writing_processes_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    whos = ("a", "b")
    run_writers(log, 2000, LIMIT, whos)
    segments = audit.segments(log)
    assert len(segments) > 20
    # The last line may have filled the file and moved it aside, leaving no current file.
    files = [*segments, *([log] if log.exists() else [])]
    for file in files:
        assert file.stat().st_mode & 0o777 == 0o600, file
    assert_each_once(raw_lines(*files), 2000, whos)
    assert_each_once(pairs(audit.history(log)), 2000, whos)


def test_writers_that_all_rotate_at_once_lose_nothing(tmp_path: Path) -> None:
    """A limit below one line: every line moves the file aside, and writers race to move the
    same file all the time. One of them moves it; the others find it moved."""
    log = tmp_path / "audit.jsonl"
    whos = ("a", "b", "c")
    run_writers(log, 200, 1, whos)
    segments = audit.segments(log)
    # No name taken and left empty, and no file moved twice (a second move would have taken
    # the next writer's new file, its line then in a segment of its own all the same).
    assert all(segment.stat().st_size > 0 for segment in segments)
    assert_each_once(raw_lines(*segments, *([log] if log.exists() else [])), 200, whos)


def test_of_two_writers_moving_the_same_file_one_does(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    for n in range(100):
        note(log, n, rotate_at=10**9)
    first = os.open(log, os.O_WRONLY | os.O_APPEND)
    second = os.open(log, os.O_WRONLY | os.O_APPEND)
    fcntl.flock(first, fcntl.LOCK_EX)  # the first is moving it: the second waits
    racer = threading.Thread(target=audit._rotate, args=(log, second))
    racer.start()
    try:
        audit._rotate(log, first)
        note(log, 100, rotate_at=10**9)  # the new file, small: not to be moved
    finally:
        os.close(first)
    racer.join(DEADLINE)
    os.close(second)
    (segment,) = audit.segments(log)
    assert raw_lines(segment) == [("t", n) for n in range(100)]
    assert raw_lines(log) == [("t", 100)]


def test_an_operators_rename_while_processes_write_loses_nothing(tmp_path: Path) -> None:
    """logrotate without copytruncate: the file is renamed under the writers, which create the
    next one (0600) at their next line."""
    log = tmp_path / "audit.jsonl"
    whos = ("a", "b")
    renamed: list[Path] = []

    def rotate_by_hand(alive: Any) -> None:
        while alive():
            wait_until_sync(lambda: size(log) > 2000 or not alive(), "lines to rename", DEADLINE)
            if log.exists():
                renamed.append(log.rename(tmp_path / f"audit.jsonl.{len(renamed) + 1}"))

    run_writers(log, 3000, 10**9, whos, during=rotate_by_hand)
    assert renamed
    files = [*renamed, *([log] if log.exists() else [])]
    for file in files:
        assert file.stat().st_mode & 0o777 == 0o600
    assert_each_once(raw_lines(*files), 3000, whos)


def test_segments_are_read_in_the_order_of_their_names(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    # Created out of order; and files that are not segments of this log.
    names = [
        ("audit-20261206T190512.500000Z.jsonl", 2),
        ("audit-20261205T235959.999999Z.jsonl", 1),
        ("audit-20261206T190512.499999Z.jsonl", 1.5),
        ("audit.jsonl.1", 99),
        ("audit-20261206T190512.123456Z.jsonl.gz", 98),
        ("audit-today.jsonl", 97),
        ("other-20261206T190512.123456Z.jsonl", 96),
    ]
    for name, n in names:
        (tmp_path / name).write_text(json.dumps({"event": "note", "n": n}) + "\n")
    note(log, 3)
    assert numbers(audit.history(log)) == [1, 1.5, 2, 3]


def test_a_new_segment_comes_after_every_other_even_if_the_clock_went_back(
    tmp_path: Path,
) -> None:
    log = tmp_path / "audit.jsonl"
    future = tmp_path / "audit-29991231T235959.999999Z.jsonl"
    future.write_text(json.dumps({"event": "note", "n": 0}) + "\n")
    future.chmod(0o600)
    bogus = tmp_path / "audit-20261399T000000.000000Z.jsonl"  # a hand-made name of no time
    bogus.write_text(json.dumps({"event": "note", "n": -1}) + "\n")
    for n in range(1, 3):
        note(log, n, rotate_at=1)
    assert [p.name for p in audit.segments(log)] == [
        bogus.name,
        future.name,
        "audit-30000101T000000.000000Z.jsonl",
        "audit-30000101T000000.000001Z.jsonl",
    ]
    assert numbers(audit.history(log)) == [-1, 0, 1, 2]


def test_a_rotation_that_fails_keeps_the_line_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "audit.jsonl"

    def refuse(source: object, target: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "rename", refuse)
    with caplog.at_level(logging.WARNING, logger="tether"):
        note(log, 0, rotate_at=1)
    assert "audit.jsonl: cannot rotate the audit log: Permission denied" in caplog.text
    assert [p.name for p in tmp_path.iterdir()] == ["audit.jsonl"]  # its name given back
    monkeypatch.undo()
    note(log, 1, rotate_at=1)  # the next line moves it
    (segment,) = audit.segments(log)
    assert raw_lines(segment) == [("t", 0), ("t", 1)]


def test_the_follower_follows_rotations_between_calls(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    with audit.Follower(log) as follower:
        assert list(follower.lines()) == []  # no log yet
        for n in range(30):
            note(log, n, rotate_at=1024)
        assert numbers(follower.lines()) == list(range(30))
        for n in range(30, 300):  # many rotations between two calls
            note(log, n, rotate_at=1024)
        assert numbers(follower.lines()) == list(range(30, 300))
        assert list(follower.lines()) == []
        log.rename(tmp_path / "audit.jsonl.1")  # the operator's, between lines
        note(log, 300)
        assert numbers(follower.lines()) == [300]
        assert list(follower.lines()) == []


def test_the_follower_sees_every_line_of_processes_writing_as_it_reads(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    whos = ("a", "b")
    seen: list[tuple[str, int]] = []
    with audit.Follower(log) as follower:

        def follow(alive: Any) -> None:
            while alive():
                seen.extend(pairs(follower.lines()))

        run_writers(log, 2000, LIMIT, whos, during=follow)
        seen.extend(pairs(follower.lines()))
    assert len(audit.segments(log)) > 20
    assert_each_once(seen, 2000, whos)


def test_a_line_written_after_an_operators_rename_is_read_at_the_next_call(
    tmp_path: Path,
) -> None:
    log = tmp_path / "audit.jsonl"
    note(log, 0)
    late = os.open(log, os.O_WRONLY | os.O_APPEND)  # a writer that opened it just before
    try:
        with audit.Follower(log) as follower:
            assert numbers(follower.lines()) == [0]
            log.rename(tmp_path / "audit.jsonl.1")
            note(log, 2)
            assert numbers(follower.lines()) == [2]
            os.write(late, json.dumps({"who": "t", "n": 1}).encode() + b"\n")
            note(log, 3)
            assert numbers(follower.lines()) == [1, 3]  # the late line first
            assert list(follower.lines()) == []
    finally:
        os.close(late)


def test_the_follower_reads_whole_lines_and_survives_a_copytruncate(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    note(log, 0)
    with audit.Follower(log) as follower:
        assert numbers(follower.lines()) == [0]
        with log.open("ab") as handle:
            handle.write(b'not json\n{"n": 1, "who"')
            handle.flush()
            assert list(follower.lines()) == []  # half a line waits for its end
            handle.write(b': "t"}\n')
        assert numbers(follower.lines()) == [1]
        log.write_bytes(b"")  # emptied in place
        note(log, 2)
        assert numbers(follower.lines()) == [2]


def test_a_name_taken_for_a_rotation_is_read_once_it_is_filled(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    taken = tmp_path / "audit-20261206T190512.123456Z.jsonl"
    taken.touch(mode=0o600)
    other = tmp_path / "moving"
    other.write_text(json.dumps({"n": 0}) + "\n")
    with audit.Follower(log) as follower:
        assert list(follower.lines()) == []
        other.rename(taken)
        assert numbers(follower.lines()) == [0]
        assert list(follower.lines()) == []
