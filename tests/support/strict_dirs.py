"""Temporary directories that sshd's StrictModes accepts a file in: every directory from the
file up to the root is owned by root or this user and writable by no one else. pytest's own
temporary directories live under /tmp, which is world-writable, so sshd would refuse an
AuthorizedPrincipalsFile there."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tether.gateway.sshd import strict_base


@contextmanager
def strict_tmp() -> Iterator[Path]:
    """A new private directory under the first base that passes (the user's runtime directory,
    /run/user/UID, the home directory), removed afterwards. No base passing fails the test."""
    base = strict_base()
    if base is None:
        pytest.fail("no directory that sshd's StrictModes accepts: XDG_RUNTIME_DIR, /run/user, ~")
    path = Path(tempfile.mkdtemp(prefix=".tether-test-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
