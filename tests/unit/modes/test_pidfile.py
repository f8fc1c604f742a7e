"""Pid files never destroy what is at their path: only a stale pid file is taken over, and only
the file tether created, still holding its pid, is removed."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tether.errors import UsageError
from tether.modes.pidfile import PidFile, ReadyFiles, check_pid_file


@pytest.fixture
def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture
def live_pid() -> Iterator[int]:
    proc = subprocess.Popen(["sleep", "300"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_created_exclusively_and_removed(tmp_path: Path) -> None:
    path = tmp_path / "t.pid"
    written = PidFile.create(path)
    assert path.read_text() == f"{os.getpid()}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    written.remove()
    assert not path.exists()


def test_stale_pid_file_is_taken_over(tmp_path: Path, dead_pid: int) -> None:
    path = tmp_path / "t.pid"
    path.write_text(f"{dead_pid}\n")
    check_pid_file(path)
    written = PidFile.create(path)
    assert path.read_text() == f"{os.getpid()}\n"
    written.remove()
    assert not path.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("important data\n", "was not written by tether"),
        ("", "was not written by tether"),
        ("12 34\n", "was not written by tether"),
        ("²\n", "was not written by tether"),
        ('{"pid": 1}\n', "was not written by tether"),  # JSON, but not tether's records
        ('{"schema": 1, "pid": 1}\n{"schema": 1, "pid": 2}\n', "was not written by tether"),
        ('{"schema": 1, "pid": true}\n', "was not written by tether"),
    ],
)
def test_a_file_that_is_not_a_pid_file_is_left_alone(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "data.txt"
    path.write_text(content)
    for attempt in (lambda: check_pid_file(path), lambda: PidFile.create(path)):
        with pytest.raises(UsageError, match=message) as info:
            attempt()
        assert str(path) in str(info.value)
    assert path.read_text() == content


def test_a_running_process_keeps_its_pid_file(tmp_path: Path, live_pid: int) -> None:
    path = tmp_path / "t.pid"
    path.write_text(f"{live_pid}\n")
    with pytest.raises(UsageError, match=f"names process {live_pid}, which is still running"):
        PidFile.create(path)
    assert path.read_text() == f"{live_pid}\n"


def special_files(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    yield "a FIFO", fifo
    directory = tmp_path / "dir"
    directory.mkdir()
    yield "a directory", directory
    sock_path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
    yield "a socket", sock_path
    target = tmp_path / "target"
    target.write_text("precious\n")
    link = tmp_path / "link"
    link.symlink_to(target)
    yield "a symlink to a file", link
    stale_target = tmp_path / "stale-target"
    stale_target.write_text("1\n")
    stale_link = tmp_path / "stale-link"
    stale_link.symlink_to(stale_target)
    yield "a symlink to a stale-looking pid file", stale_link
    if os.geteuid() == 0:
        # A copy of /dev/null's node in our own directory: as root, this is what
        # `--pid-file /dev/null` would have destroyed.
        device = tmp_path / "null"
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        yield "a device", device


def test_special_files_are_never_touched(tmp_path: Path) -> None:
    kinds = []
    for kind, path in special_files(tmp_path):
        kinds.append(kind)
        before = os.lstat(path)
        for attempt in (check_pid_file, PidFile.create):
            with pytest.raises(UsageError) as info:
                attempt(path)
            assert str(path) in str(info.value), kind
        after = os.lstat(path)
        assert (after.st_ino, after.st_mode, after.st_mtime_ns) == (
            before.st_ino,
            before.st_mode,
            before.st_mtime_ns,
        ), kind
    assert (tmp_path / "target").read_text() == "precious\n"
    assert len(kinds) >= 5


def test_removal_spares_a_replaced_file(tmp_path: Path) -> None:
    path = tmp_path / "t.pid"
    written = PidFile.create(path)
    other = tmp_path / "other"
    other.write_text(f"{os.getpid()}\n")  # same content, another file (created while ours
    os.replace(other, path)  # still exists, so it cannot reuse our inode)
    written.remove()
    assert path.exists()


def test_removal_spares_a_rewritten_file(tmp_path: Path) -> None:
    path = tmp_path / "t.pid"
    written = PidFile.create(path)
    with open(path, "w") as handle:  # same inode, someone else's pid now
        handle.write("1\n")
    written.remove()
    assert path.read_text() == "1\n"


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="directory does not exist"):
        check_pid_file(tmp_path / "no" / "t.pid")


def test_json_file_of_records_taken_over_only_when_its_writer_is_gone(
    tmp_path: Path, dead_pid: int, live_pid: int
) -> None:
    path = tmp_path / "tunnel.json"
    line = '{"schema": 1, "id": "x", "pid": %d}\n'
    path.write_text(line % live_pid)
    with pytest.raises(UsageError, match=f"JSON file {path} names process {live_pid}"):
        check_pid_file(path, "JSON file")
    path.write_text((line % dead_pid) * 2)
    written = PidFile.create(path, text=line % os.getpid(), what="JSON file")
    assert path.read_text() == line % os.getpid()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    written.remove()
    assert not path.exists()


def test_ready_files_leave_neither_when_the_second_cannot_be_written(
    tmp_path: Path, live_pid: int
) -> None:
    pid_file, json_file = tmp_path / "t.pid", tmp_path / "t.json"
    json_file.write_text(f"{live_pid}\n")  # refused: its process runs
    with pytest.raises(UsageError, match="still running"):
        ReadyFiles(pid_file, json_file).create([])
    assert not pid_file.exists()
    assert json_file.read_text() == f"{live_pid}\n"
