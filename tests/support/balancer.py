"""haproxy in TCP mode in front of a gateway's relays, configured as the README's "Behind a load
balancer" says, run in the foreground for one test and read through its stats socket."""

from __future__ import annotations

import csv
import ctypes
import ipaddress
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.waiting import wait_until_sync
from tether.spec import Endpoint

PR_SET_PDEATHSIG = 1
# A name haproxy accepts for a server and that needs no quoting: the relays' own names.
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")

# The README's configuration (a test holds them to the same directives), but for the checks'
# pace (a relay out within 2 s, not 4), logs to stderr, and the socket the tests read the
# relays' states from. Every value is checked before it goes in.
_CONFIG = """\
global
    stats socket {stats} mode 600 level user

defaults
    mode tcp
    log stderr format raw daemon
    option tcplog
    option tcpka
    timeout connect 5s
    timeout client 1m
    timeout server 1m
    retries 3
    option redispatch 1

frontend gateway
    bind {listen}
    default_backend relays

backend relays
    balance leastconn
    option tcp-check
    tcp-check expect string SSH-
    default-server check inter {inter} fall 2 rise 2
{servers}
"""


def require_haproxy() -> str:
    """haproxy's path; a test that needs it fails (never skips) without it, saying how."""
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
    if found is None:
        pytest.fail("haproxy is not installed: run `make test-deps` (as root it installs it)")
    return found


def _address(endpoint: Endpoint) -> str:
    """HOST:PORT for haproxy, from an IP address only (no name to resolve at its start)."""
    host = ipaddress.ip_address(endpoint.host)  # raises on anything else
    if not 1 <= endpoint.port <= 65535:
        raise ValueError(f"port out of range: {endpoint.port}")
    return f"[{host}]:{endpoint.port}" if host.version == 6 else f"{host}:{endpoint.port}"


def config(listen: Endpoint, relays: Mapping[str, Endpoint], stats: Path, inter: str = "1s") -> str:
    """The haproxy configuration: ``listen`` in front of ``relays`` (name -> address)."""
    if not relays:
        raise ValueError("no relay to balance")
    if not re.fullmatch(r"[0-9]+(ms|s)", inter):
        raise ValueError(f"not a check interval: {inter!r}")
    if not re.fullmatch(r"/[A-Za-z0-9._/+-]+", str(stats)):
        raise ValueError(f"not a path haproxy reads unquoted: {stats}")
    servers = []
    for name, address in relays.items():
        if not _NAME.fullmatch(name):
            raise ValueError(f"not a server name: {name!r}")
        servers.append(f"    server {name} {_address(address)}")
    return _CONFIG.format(
        stats=stats, listen=_address(listen), inter=inter, servers="\n".join(servers)
    )


README = Path(__file__).parents[2] / "README.md"
# What differs between the README's configuration and the tests': where haproxy listens and
# logs, the relays it names, and its stats socket (the tests'; Debian's global section has one).
_LOCAL = ("global", "stats", "log", "bind", "server")


def readme_config() -> str:
    """The configuration the README's "Behind a load balancer" shows."""
    text = README.read_text()
    section = text[text.index("### Behind a load balancer") :]
    start = section.index("```\n") + 4
    return section[start : section.index("```", start)]


def directives(text: str) -> list[str]:
    """A configuration's lines but for what is local to one balancer (``_LOCAL``), with the
    checks' pace left out."""
    kept = []
    for line in text.splitlines():
        words = line.split()
        if words and words[0] not in _LOCAL:
            kept.append(re.sub(r"\binter \S+", "inter -", " ".join(words)))
    return kept


def _die_with_parent() -> None:
    """In the child: SIGKILL when the test's process dies, however it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")


@dataclass
class Balancer:
    listen: Endpoint
    stats: Path
    log: Path
    proc: subprocess.Popen[bytes]

    def _servers(self) -> list[dict[str, str]]:
        """The relays' rows of haproxy's `show stat` (CSV, one line a proxy or server)."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.stats))
            sock.sendall(b"show stat\n")
            out = b""
            while chunk := sock.recv(65536):
                out += chunk
        rows = csv.DictReader(out.decode().removeprefix("# ").splitlines())
        return [
            row
            for row in rows
            if row["pxname"] == "relays" and row["svname"] not in ("FRONTEND", "BACKEND")
        ]

    def states(self) -> dict[str, str]:
        """Each relay's state as haproxy's checks see it (UP, DOWN, "UP 1/2"...)."""
        return {row["svname"]: row["status"] for row in self._servers()}

    def checked(self) -> dict[str, str]:
        """Each relay's last check result (L7OK: its sshd answered SSH-...)."""
        return {row["svname"]: row["check_status"] for row in self._servers()}


@contextmanager
def balancing(work: Path, listen: Endpoint, relays: Mapping[str, Endpoint]) -> Iterator[Balancer]:
    """haproxy in the foreground on ``listen`` in front of ``relays``, until the block ends;
    ready once its checks have found every relay's sshd answering. It dies with the test."""
    haproxy = require_haproxy()
    path = work / "haproxy.cfg"
    stats = work / "haproxy.sock"
    path.write_text(config(listen, relays, stats))
    checked = subprocess.run(
        [haproxy, "-c", "-f", str(path)], capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    log = work / "haproxy.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [haproxy, "-f", str(path), "-db"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            preexec_fn=_die_with_parent,
        )
    try:
        balancer = Balancer(listen, stats, log, proc)

        def ready() -> bool:
            assert proc.poll() is None, log.read_text()
            if not stats.exists():
                return False
            return set(balancer.checked().values()) == {"L7OK"}

        wait_until_sync(ready, "haproxy to find every relay answering")
        yield balancer
    finally:
        proc.kill()
        proc.wait()
