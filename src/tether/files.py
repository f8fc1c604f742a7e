"""The files tether reads and writes: regular files only, bounded reads, private directories,
atomic writes (0600 unless said otherwise). A FIFO, a device or /dev/zero named by mistake is
refused, not read."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from tether.errors import TetherError, describe

# Bounds on what is read: a config, a key or a known_hosts file is far smaller than these.
CONFIG_LIMIT = 1024 * 1024
KEY_LIMIT = 1024 * 1024
KNOWN_HOSTS_LIMIT = 64 * 1024 * 1024


def read_regular(path: Path, *, limit: int, what: str, error: type[TetherError]) -> bytes:
    """The bytes of the regular file at ``path`` (symlinks followed), at most ``limit`` of them.

    FileNotFoundError passes through for callers to whom a missing file means something; every
    other failure is ``error`` naming ``what`` and the path.
    """
    try:
        try:
            st = os.stat(path)
        except NotADirectoryError:  # a path through a file cannot exist
            raise FileNotFoundError(path) from None
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{what}: {path} is not a regular file")
        # O_NONBLOCK: if the path became a FIFO since the stat, opening it must not hang.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise error(f"{what}: cannot read {path}: {describe(exc)}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise error(f"{what}: {path} is not a regular file")
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, min(1 << 20, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise error(f"{what}: {path} is larger than {limit // 1024} KiB")
        return b"".join(chunks)
    except OSError as exc:
        raise error(f"{what}: cannot read {path}: {describe(exc)}") from None
    finally:
        os.close(fd)


def ensure_private_directory(path: Path, *, what: str, fix: str, error: type[TetherError]) -> Path:
    """Create ``path`` (0700, with missing parents) and refuse one that others could tamper with:
    a symlink, another user's, group- or world-writable, or under a directory that another user
    could swap (the check OpenSSH makes for ControlPath directories)."""
    try:
        try:
            path.mkdir(mode=0o700, parents=True)
        except FileExistsError:
            pass
        else:
            os.chmod(path, 0o700)  # ours, new: exactly 0700, whatever the caller's umask took off
        st = os.lstat(path)
    except OSError as exc:
        raise error(f"cannot create {what} {path}: {describe(exc)}", hint=fix) from None
    if stat.S_ISLNK(st.st_mode):
        raise error(f"{what} {path} is a symlink", hint=fix)
    if not stat.S_ISDIR(st.st_mode):
        raise error(f"{what} {path} is not a directory", hint=fix)
    if st.st_uid != os.getuid():
        raise error(f"{what} {path} is owned by uid {st.st_uid}, not you", hint=fix)
    if st.st_mode & 0o022:
        raise error(
            f"{what} {path} is group- or world-writable (mode {stat.S_IMODE(st.st_mode):04o})",
            hint=f"chmod 700 {path}",
        )
    _check_ancestors(path, what=what, fix=fix, error=error)
    return path


def _check_ancestors(path: Path, *, what: str, fix: str, error: type[TetherError]) -> None:
    """Every directory above ``path`` belongs to root or to us, and is writable by nobody else
    unless sticky (as /tmp is): otherwise another user could rename ours away and put theirs."""
    for parent in path.absolute().parents:
        try:
            st = os.stat(parent)
        except OSError as exc:
            raise error(f"cannot check {parent} above the {what}: {describe(exc)}") from None
        if st.st_uid not in (0, os.getuid()):
            raise error(f"{what} {path} is inside {parent}, which uid {st.st_uid} owns", hint=fix)
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            raise error(
                f"{what} {path} is inside {parent}, which others can write to "
                f"(mode {stat.S_IMODE(st.st_mode):04o}, not sticky)",
                hint=fix,
            )


def write_private_files(directory: Path, files: Mapping[str, str]) -> None:
    """Make ``directory`` (one that exists too: exactly 0700, whatever the umask or an earlier
    run left) and write each of ``files``, name to text, into it with ``write_private``."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(directory, 0o700)
    os.chmod(directory, 0o700)
    for name, text in files.items():
        write_private(directory / name, text)


def write_private(path: Path, text: str | bytes) -> None:
    """Write ``text`` to ``path`` atomically, mode 0600 (see ``write_atomic``)."""
    write_atomic(path, text, 0o600)


def write_atomic(path: Path, text: str | bytes, mode: int, *, replace: bool = True) -> None:
    """Write ``text`` (or bytes) to ``path`` atomically, with exactly ``mode`` whatever the
    umask.

    The temporary file is created exclusively and never through a symlink, and the final rename
    replaces a directory entry without following it. Without ``replace``, a file already at
    ``path`` stays as it is (FileExistsError): the temporary file is linked there, which fails
    on any entry, a symlink's too, where a check before the rename would race.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)  # a leftover of a crashed run with our pid
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(text.encode() if isinstance(text, str) else text)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path, follow_symlinks=False)
            tmp.unlink()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
