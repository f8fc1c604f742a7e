"""Standing in for systemd: a notify socket that records who said what, a launcher that
passes listening sockets as fds 3.. the way socket activation does, and systemd's own check of
the unit files tether makes."""

from __future__ import annotations

import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import pytest

DEADLINE = 30.0
UCRED = struct.Struct("iII")  # struct ucred: pid, uid, gid

# Runs as the process that becomes tether: moves the given descriptors to 3.., says they are
# for this pid (which exec keeps), and execs the rest of its argv. systemd does the same.
ACTIVATE = """
import fcntl, os, sys
fds = [int(fd) for fd in sys.argv[1].split(",")]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]
for fd in fds:
    os.close(fd)
for index, fd in enumerate(high):
    os.dup2(fd, 3 + index)
    os.close(fd)
os.environ["LISTEN_FDS"] = str(len(fds))
os.environ["LISTEN_PID"] = str(os.getpid())
if sys.argv[2]:
    os.environ["LISTEN_FDNAMES"] = sys.argv[2]
os.execv(sys.argv[3], sys.argv[3:])
"""


def activation_launcher(socks: Sequence[socket.socket], names: str = "") -> list[str]:
    """A `TetherRunner.spawn` launcher passing ``socks`` as fds 3.. (pass_fds: their fds)."""
    return [sys.executable, "-c", ACTIVATE, ",".join(str(s.fileno()) for s in socks), names]


@dataclass(frozen=True)
class Notification:
    """One sd_notify datagram and the pid the kernel vouches sent it."""

    text: str
    pid: int


class NotifySocket:
    """An AF_UNIX datagram socket bound where $NOTIFY_SOCKET will point, as systemd's is.

    The kernel attaches each sender's credentials (SO_PASSCRED), so a test can check that
    only tether's main process speaks, as NotifyAccess=main requires.
    """

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(address)
        #: The value for $NOTIFY_SOCKET: the path, or @name for the abstract namespace.
        self.env = "@" + address[1:] if address.startswith("\0") else address
        self.received: list[Notification] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def _receive(self) -> Notification:
        data, ancillary, _, _ = self.sock.recvmsg(65536, socket.CMSG_SPACE(UCRED.size))
        pid = 0
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = UCRED.unpack(payload[: UCRED.size])[0]
        note = Notification(data.decode(), pid)
        self.received.append(note)
        return note

    def next(self, deadline: float = DEADLINE) -> Notification:
        ready, _, _ = select.select([self.sock], [], [], deadline)
        if not ready:
            raise AssertionError(f"no notification within {deadline}s; got {self.received}")
        return self._receive()

    def until(
        self, predicate: Callable[[Notification], bool], what: str, deadline: float = DEADLINE
    ) -> list[Notification]:
        """Every notification up to and including the first that satisfies ``predicate``."""
        end = time.monotonic() + deadline
        got: list[Notification] = []
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}; got {got}")
            got.append(self.next(left))
            if predicate(got[-1]):
                return got

    def until_text(self, text: str, deadline: float = DEADLINE) -> list[Notification]:
        return self.until(lambda n: n.text == text, repr(text), deadline)

    def pending(self) -> list[Notification]:
        """What has arrived and not been read, without waiting."""
        got = []
        while select.select([self.sock], [], [], 0)[0]:
            got.append(self._receive())
        return got


def abstract_name() -> str:
    """A fresh name in the abstract namespace (a leading NUL), unique to this test run."""
    return f"\0tether-test-{os.getpid()}-{os.urandom(4).hex()}"


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail(
            "systemd-analyze not found; install it with: sudo apt-get install systemd "
            "(make test does it as root)"
        )
    return path


def verify(files: list[Path], *, user: bool, tmp_path: Path) -> None:
    """`systemd-analyze [--user] verify` says nothing and exits 0.

    No manager runs here (systemd is not pid 1): verify loads the files into a private one. A
    user manager needs a runtime directory of its own, which a fresh 0700 one provides.
    """
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path / "home"), "LANG": "C"}
    if user:
        runtime = tmp_path / "xdg-runtime"
        runtime.mkdir(mode=0o700, exist_ok=True)
        env["XDG_RUNTIME_DIR"] = str(runtime)
    done = subprocess.run(
        [systemd_analyze(), *(["--user"] if user else []), "verify", *map(str, files)],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", ""), "\n".join(
        path.read_text() for path in files
    )
