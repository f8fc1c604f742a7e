"""A network namespace joined to this one by a veth pair, for servers whose link can go down.

Needs root. Each instance has its own namespace, interface names and /30 of 10.231.0.0/16, so
that concurrent test runs do not meet; all of it goes with the namespace on exit.
"""

from __future__ import annotations

import itertools
import os
import select
import shutil
import subprocess
import sys
from typing import Self

_COUNTER = itertools.count()
START_DEADLINE = 10.0
# Serves one port inside the namespace, as the test's EchoServer does here: every byte back,
# then EOF after the client's. It prints its port, and exits when its stdin closes.
_ECHO = """
import socket, sys, threading
server = socket.create_server(("127.0.0.1", 0), backlog=512)
def serve(conn):
    with conn:
        try:
            while data := conn.recv(262144):
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
def accept():
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
threading.Thread(target=accept, daemon=True).start()
print(server.getsockname()[1], flush=True)
sys.stdin.read()
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


class Netns:
    """Namespace ``name`` holds ``peer_address`` on its end of a veth pair; this namespace (or
    ``parent``, another Netns) holds ``local_address`` on the other. ``link_down``/``link_up``
    take the namespace's end down and up: to this side, the cable was pulled (carrier lost,
    packets go nowhere). A namespace behind a parent reaches only the parent's address."""

    def __init__(self, parent: Netns | None = None) -> None:
        self.parent = parent
        if shutil.which("ip") is None:
            raise RuntimeError("iproute2's ip is needed (apt-get install iproute2)")
        serial = next(_COUNTER)
        tag = f"{os.getpid() % 100000}x{serial}"
        self.name = f"tether{tag}"
        self.local_link = f"tl{tag}"  # at most 15 characters: an interface name's limit
        self.peer_link = f"tp{tag}"
        block = ((os.getpid() * 7 + serial * 4) % 65536) & ~3  # a /30: .0 to .3
        third, fourth = divmod(block, 256)
        self.local_address = f"10.231.{third}.{fourth + 1}"
        self.peer_address = f"10.231.{third}.{fourth + 2}"
        self._made = False

    @property
    def launcher(self) -> list[str]:
        """The argv prefix that runs a command inside the namespace (the same process)."""
        return ["ip", "netns", "exec", self.name]

    def __enter__(self) -> Self:
        _ip("netns", "add", self.name)
        self._made = True
        try:
            _ip(
                "link", "add", self.local_link, "type", "veth",
                "peer", "name", self.peer_link, "netns", self.name,
            )  # fmt: skip
            local: list[str] = []
            if self.parent is not None:
                _ip("link", "set", self.local_link, "netns", self.parent.name)
                local = ["-n", self.parent.name]
            _ip(*local, "addr", "add", f"{self.local_address}/30", "dev", self.local_link)
            _ip(*local, "link", "set", self.local_link, "up")
            _ip("-n", self.name, "addr", "add", f"{self.peer_address}/30", "dev", self.peer_link)
            _ip("-n", self.name, "link", "set", self.peer_link, "up")
            _ip("-n", self.name, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._made:
            self._made = False
            # The veth pair goes with the namespace that holds one of its ends.
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)

    def link_down(self) -> None:
        _ip("-n", self.name, "link", "set", self.peer_link, "down")

    def link_up(self) -> None:
        _ip("-n", self.name, "link", "set", self.peer_link, "up")


class NetnsEcho:
    """An echo server on 127.0.0.1 inside ``netns``: a target that sshd there reaches."""

    def __init__(self, netns: Netns) -> None:
        self.netns = netns
        self._proc: subprocess.Popen[str] | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self._proc = subprocess.Popen(
            [*self.netns.launcher, sys.executable, "-c", _ECHO],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        ready, _, _ = select.select([self._proc.stdout], [], [], START_DEADLINE)
        line = self._proc.stdout.readline() if ready else ""
        if not line.strip().isdigit():
            self.__exit__()
            raise RuntimeError("the echo server in the namespace did not start")
        self.port = int(line)
        return self

    def __exit__(self, *exc: object) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
