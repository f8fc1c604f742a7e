"""The sessions a gateway sshd serves, as its log and the kernel tell them: which certificate
(key id and serial) each connection logged in with, and which process holds it, so that the
reaper can end a session whose access has ended (OpenSSH does not end a session when its
certificate expires).

sshd at LogLevel VERBOSE says, for each login with a certificate:

    Accepted publickey for USER from HOST port PORT ssh2: ED25519-CERT SHA256:... ID KEYID
    (serial N) CA ED25519 SHA256:...

and the connection's process is the sshd below the listener that holds a TCP socket whose peer
is HOST:PORT (/proc/net/tcp and /proc/PID/fd, as `ss -p` finds it).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tether.procs import descendants

_ACCEPTED = re.compile(
    r"Accepted publickey for \S+ from (?P<host>\S+) port (?P<port>\d+) ssh2: \S+-CERT \S+ "
    r"ID (?P<key_id>\S+) \(serial (?P<serial>\d+)\)"
)
_ESTABLISHED = "01"


@dataclass(frozen=True)
class Login:
    """A connection that logged in with a certificate."""

    key_id: str
    serial: int
    host: str
    port: int


def accepted(line: str) -> Login | None:
    """The login an sshd log line reports, if it is one."""
    found = _ACCEPTED.search(line)
    if found is None:
        return None
    return Login(found["key_id"], int(found["serial"]), found["host"], int(found["port"]))


_GONE = re.compile(
    r"(?:Disconnected from user \S+|Connection closed by|Received disconnect from) "
    r"(?P<host>\S+) port (?P<port>\d+)"
)


def ended(line: str) -> tuple[str, int] | None:
    """The peer whose connection an sshd log line says has ended, if it says so."""
    found = _GONE.search(line)
    return None if found is None else (found["host"], int(found["port"]))


def holder(root: int, host: str, port: int) -> int | None:
    """The process below ``root`` (a listening sshd) that holds the TCP connection whose peer is
    ``host``:``port``; None if there is none (it has ended)."""
    inodes = _peer_inodes(host, port)
    if not inodes:
        return None
    for pid in descendants(root):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:[") and int(target[8:-1]) in inodes:
                    return pid
        except (OSError, ValueError):
            continue
    return None


SS_TIMEOUT = 5.0


async def traffic(port: int) -> dict[tuple[str, int], tuple[int, int]] | None:
    """Bytes so far on each established connection to local ``port``, by peer: (received from
    the peer, sent to it and acknowledged), as the kernel counts them (`ss -ti`, iproute2).
    None where ss is missing or fails: the counts are for the audit log, never for access."""
    ss = shutil.which("ss")
    if ss is None:
        return None
    try:
        process = await asyncio.create_subprocess_exec(
            ss, "-tinH", "state", "established", f"( sport = :{port} )",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
    except OSError:
        return None
    try:
        out, _ = await asyncio.wait_for(process.communicate(), SS_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        return None
    if process.returncode != 0:
        return None
    return parse_ss(out.decode(errors="replace"))


def parse_ss(text: str) -> dict[tuple[str, int], tuple[int, int]]:
    """`ss -tinH` output as (received, acked) bytes by peer: a connection's line, then its
    indented TCP_INFO line. A relay with thousands of sessions reads a megabyte of it at each
    count, so it is split and searched as plain strings (a regular expression searched along
    each long TCP_INFO line cost most of a relay's idle CPU)."""
    counts: dict[tuple[str, int], tuple[int, int]] = {}
    peer: tuple[str, int] | None = None
    for line in text.splitlines():
        if not line[:1].isspace():
            fields = line.split()
            peer = _address(fields[-1]) if len(fields) >= 2 and _address(fields[-2]) else None
        elif peer is not None:
            counts[peer] = (_counter(line, " bytes_received:"), _counter(line, " bytes_acked:"))
            peer = None
    return counts


def _address(text: str) -> tuple[str, int] | None:
    """``HOST:PORT`` as ss writes an end (``[::1]:22``, ``[::ffff:10.0.0.7]:22``), or None."""
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdigit():
        return None
    return host.strip("[]").removeprefix("::ffff:"), int(port)


def _counter(line: str, name: str) -> int:
    """The number after ``name`` in a TCP_INFO line; 0 if it has none."""
    start = line.find(name)
    if start < 0:
        return 0
    start += len(name)
    end = start
    while end < len(line) and line[end].isdigit():
        end += 1
    return int(line[start:end]) if end > start else 0


def leftovers(port: int) -> list[int]:
    """The sshd processes of this user that hold a connection to local ``port``: sessions a
    relay's sshd left when its relay was killed (they outlive their listener, and no reaper of
    a new relay knows them)."""
    inodes: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        inodes |= _inodes(Path(table), lambda local, _remote: local.endswith(f":{port:04X}"))
    if not inodes:
        return []
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid != os.getuid():
                continue
            if not Path(f"/proc/{name}/comm").read_text().startswith("sshd"):
                continue
            for fd in os.listdir(f"/proc/{name}/fd"):
                target = os.readlink(f"/proc/{name}/fd/{fd}")
                if target.startswith("socket:[") and int(target[8:-1]) in inodes:
                    found.append(int(name))
                    break
        except (OSError, ValueError):
            continue
    return found


def _peer_inodes(host: str, port: int) -> set[int]:
    """The socket inodes of established TCP connections whose remote end is host:port."""
    address = ipaddress.ip_address(host)
    table = Path("/proc/net/tcp6" if address.version == 6 else "/proc/net/tcp")
    wanted = f"{_kernel_hex(address)}:{port:04X}"
    return _inodes(table, lambda _local, remote: remote == wanted)


def _inodes(table: Path, wanted: Callable[[str, str], bool]) -> set[int]:
    """The socket inodes of the established connections in ``table`` whose local and remote
    ends (as the kernel writes them) are ``wanted``."""
    found: set[int] = set()
    try:
        lines = table.read_text().splitlines()[1:]
    except OSError:
        return found
    for line in lines:
        fields = line.split()
        if len(fields) > 9 and fields[3] == _ESTABLISHED and wanted(fields[1], fields[2]):
            found.add(int(fields[9]))
    return found


def _kernel_hex(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """An address as /proc/net/tcp writes it: each 32-bit word in the host's byte order."""
    packed = address.packed
    step = 1 if sys.byteorder == "big" else -1
    words = [packed[i : i + 4][::step] for i in range(0, len(packed), 4)]
    return b"".join(words).hex().upper()
