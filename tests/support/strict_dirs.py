"""Temporary directories that sshd's StrictModes accepts a file in: every directory from the
file up to the root is owned by root or this user and writable by no one else. pytest's own
temporary directories live under /tmp, which is world-writable, so sshd would refuse an
AuthorizedPrincipalsFile there."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def strict_enough(path: Path) -> bool:
    """Whether ``path`` and each directory above it pass sshd's check."""
    for directory in [path, *path.parents]:
        try:
            st = os.stat(directory)
        except OSError:
            return False
        if st.st_uid not in (0, os.getuid()) or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return False
    return True


@contextmanager
def strict_tmp() -> Iterator[Path]:
    """A new private directory under the first base that passes (the user's runtime directory,
    /run/user/UID, the home directory), removed afterwards. No base passing fails the test."""
    bases = [os.environ.get("XDG_RUNTIME_DIR"), f"/run/user/{os.getuid()}", str(Path.home())]
    for base in bases:
        if base and strict_enough(Path(base)):
            break
    else:
        pytest.fail(f"no directory that sshd's StrictModes accepts among {bases}")
    path = Path(tempfile.mkdtemp(prefix=".tether-test-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
