"""Atomic writes: the mode asked for, whatever the umask, and nothing left on the way."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tether.errors import TetherError
from tether.files import (
    ensure_private_directory,
    write_atomic,
    write_private,
    write_private_files,
)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_the_mode_asked_for_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        write_atomic(tmp_path / "unit", "[Unit]\n", 0o644)
        write_private(tmp_path / "entry", "{}")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "unit").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "entry").stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry", "unit"]


def test_replaces_what_was_there(tmp_path: Path) -> None:
    target = tmp_path / "unit"
    target.write_text("old")
    target.chmod(0o600)
    write_atomic(target, "new", 0o644)
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


@pytest.mark.parametrize("umask", [0o022, 0o177])
def test_a_new_private_directory_is_0700_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)  # 0177: what the host application, not tether, may have set
    try:
        made = ensure_private_directory(
            tmp_path / "new", what="test directory", fix="", error=TetherError
        )
    finally:
        os.umask(previous)
    assert stat.S_IMODE(made.stat().st_mode) == 0o700


def test_private_files_make_or_tighten_their_directory(tmp_path: Path) -> None:
    state = tmp_path / "state"
    write_private_files(state, {"key": "secret\n"})
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    state.chmod(0o755)  # an earlier run's, or another tool's
    write_private_files(state, {"key": "new\n", "key-cert.pub": "cert\n"})
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert (state / "key").read_text() == "new\n"
    for name in ("key", "key-cert.pub"):
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600
