"""A master's private directory: private, locked while in use, swept once its owner is gone,
and never anything else swept."""

from __future__ import annotations

import fcntl
import os
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tether.transports import workdir
from tether.transports.workdir import PREFIX, Workdir, sweep


@pytest.fixture
def tmp(own_tempdir: Path) -> Path:
    return own_tempdir


def age(path: Path, seconds: float = workdir.SETTLE + 5) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_private_and_locked_until_removed(tmp: Path) -> None:
    work = Workdir()
    assert work.path.parent == tmp
    assert stat.S_IMODE(work.path.stat().st_mode) == 0o700
    fd = os.open(work.path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)
    age(work.path)
    sweep(tmp)  # locked: alive, whatever its age
    assert work.path.exists()
    work.remove()
    assert not work.path.exists()


def test_0700_whatever_the_umask(tmp: Path) -> None:
    previous = os.umask(0o177)  # the host application's, say: ssh must still enter the directory
    try:
        work = Workdir()
    finally:
        os.umask(previous)
    try:
        assert stat.S_IMODE(work.path.stat().st_mode) == 0o700
    finally:
        work.remove()


def test_a_dead_owners_directory_is_swept(tmp: Path) -> None:
    # A process that makes one and dies without removing it, as SIGKILL would leave it.
    code = (
        "import tempfile, sys; tempfile.tempdir = sys.argv[1]\n"
        "from tether.transports.workdir import Workdir\n"
        "w = Workdir(); (w.path / 'config').write_text('x'); print(w.path)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp)], capture_output=True, text=True, check=True
    )
    left = Path(done.stdout.strip())
    assert left.is_dir()
    sweep(tmp)
    assert left.exists(), "a young directory may be one still starting"
    age(left)
    Workdir().remove()  # every new master's start sweeps
    assert not left.exists()


def test_nothing_but_old_unlocked_directories_of_ours_is_swept(tmp: Path) -> None:
    other = tmp / "not-tethers"
    other.mkdir()
    a_file = tmp / f"{PREFIX}file"
    a_file.write_text("")
    target = tmp / "elsewhere"
    target.mkdir()
    link = tmp / f"{PREFIX}link"
    link.symlink_to(target)
    for path in (other, target):
        age(path)
    sweep(tmp)
    assert other.exists() and a_file.exists() and link.is_symlink() and target.exists()
    for path in (a_file, link):
        path.unlink()
    for path in (other, target):
        path.rmdir()


def test_a_long_tmpdir_falls_back_to_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ssh could not bind its control socket under a long $TMPDIR."""
    deep = tmp_path / ("d" * 90)
    deep.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    monkeypatch.setattr(workdir, "FALLBACK_PARENT", str(tmp_path))
    work = Workdir()
    try:
        assert work.path.parent == tmp_path
        assert list(deep.iterdir()) == []
    finally:
        work.remove()
