"""Whether another process's TCP peer has spoken yet, as the kernel counts the bytes received.

The OpenSSH master is a process of its own, so tether cannot see its handshake; the kernel can.
As `ss -ti` does, this asks sock_diag (NETLINK_SOCK_DIAG, with INET_DIAG_INFO) for the TCP_INFO
of the process's sockets, which /proc/PID/fd names by inode, and reads tcpi_bytes_received.
"""

from __future__ import annotations

import errno
import os
import socket
import struct

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
INET_DIAG_INFO = 2
# A client's connection while it connects and once connected: TCP_ESTABLISHED, TCP_SYN_SENT.
DUMPED_STATES = 1 << 1 | 1 << 2
ALL_STATES = 0xFFFFFFFF
WAIT = 0.1  # the kernel answers at once; this only bounds a surprise
BUFFER = 65536  # more than a dump's batch (the kernel caps them at 32 KiB)

_HEADER = struct.Struct("=IHHII")  # struct nlmsghdr
_REQUEST = struct.Struct("=BBBBI48s")  # struct inet_diag_req_v2, its sockid as raw bytes
_MESSAGE = struct.Struct("=BBBB48sIIIII")  # struct inet_diag_msg
_ATTRIBUTE = struct.Struct("=HH")  # struct rtattr
_BYTES_RECEIVED = struct.Struct("=Q"), 128  # in struct tcp_info (linux/tcp.h, since 4.1)


class Unavailable(Exception):
    """The kernel cannot tell us here (no sock_diag, no procfs access, an old tcp_info)."""


class PeerWatch:
    """Watches process ``pid`` for the first byte its TCP peer sends it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._sock: socket.socket | None = None
        self._seq = 0
        # The connection once found: its inode, family and inet_diag_sockid (with the cookie
        # that makes a lookup find this very socket and no later one on the same ports).
        self._found: tuple[int, int, bytes] | None = None

    def heard(self) -> bool | None:
        """True once the process's TCP connection has received a byte; False while not, or
        while the process has no TCP connection (behind a ProxyCommand: pipes); None if the
        kernel cannot tell here."""
        try:
            inodes = self._socket_inodes()
            if self._found is not None and self._found[0] in inodes:
                _, family, sockid = self._found
                for _, _, received in self._ask(family, sockid, dump=False):
                    return _spoken(received)
            self._found = None  # closed: ssh tries the server's next address with a new one
            if not inodes:
                return False
            for family in (socket.AF_INET, socket.AF_INET6):
                for inode, sockid, received in self._ask(family, bytes(48), dump=True):
                    if inode in inodes:
                        self._found = (inode, family, sockid)
                        return _spoken(received)
            return False
        except (Unavailable, OSError, ValueError, struct.error):
            self.close()
            return None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _socket_inodes(self) -> set[int]:
        """The inodes of the process's sockets; none once it has exited."""
        directory = f"/proc/{self.pid}/fd"
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return set()  # it exited: its exit, not this, reports the outcome
        except OSError as exc:
            raise Unavailable(str(exc)) from None
        inodes = set()
        for name in names:
            try:
                target = os.readlink(f"{directory}/{name}")
            except OSError:
                continue  # closed meanwhile
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
        return inodes

    def _ask(
        self, family: int, sockid: bytes, *, dump: bool
    ) -> list[tuple[int, bytes, int | None]]:
        """(inode, sockid, bytes received) of the TCP sockets of ``family`` (dump), or of the
        socket ``sockid`` names (none if it is gone)."""
        if self._sock is None:
            self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)
            self._sock.settimeout(WAIT)
        self._seq += 1
        states = DUMPED_STATES if dump else ALL_STATES
        body = _REQUEST.pack(
            family, socket.IPPROTO_TCP, 1 << (INET_DIAG_INFO - 1), 0, states, sockid
        )
        flags = NLM_F_REQUEST | (NLM_F_DUMP if dump else 0)
        self._sock.send(
            _HEADER.pack(_HEADER.size + len(body), SOCK_DIAG_BY_FAMILY, flags, self._seq, 0)
            + body
        )
        found: list[tuple[int, bytes, int | None]] = []
        while True:
            data = self._sock.recv(BUFFER)
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, kind, _, seq, _ = _HEADER.unpack_from(data, offset)
                if length < _HEADER.size:
                    raise Unavailable("a malformed netlink message")
                payload = data[offset + _HEADER.size : offset + length]
                offset += (length + 3) & ~3
                if seq != self._seq:
                    continue  # an answer to an earlier question
                if kind == NLMSG_DONE:
                    return found
                if kind == NLMSG_ERROR:
                    code = -int.from_bytes(payload[:4], "little", signed=True)
                    if code == 0:
                        continue  # an acknowledgement
                    if code == errno.ENOENT and not dump:
                        return found  # the socket is gone
                    raise OSError(code, os.strerror(code))
                if kind == SOCK_DIAG_BY_FAMILY:
                    found.append(_parse(payload))
            if not dump and found:
                return found


def _spoken(received: int | None) -> bool:
    if received is None:
        raise Unavailable("no bytes_received in the connection's TCP_INFO")
    return received > 0


def _parse(payload: bytes) -> tuple[int, bytes, int | None]:
    """The inode, sockid and bytes received (None if not told) of one inet_diag_msg."""
    fields = _MESSAGE.unpack_from(payload)
    sockid, inode = fields[4], fields[9]
    offset = _MESSAGE.size
    while offset + _ATTRIBUTE.size <= len(payload):
        length, kind = _ATTRIBUTE.unpack_from(payload, offset)
        if length < _ATTRIBUTE.size:
            break
        if kind == INET_DIAG_INFO:
            info = payload[offset + _ATTRIBUTE.size : offset + length]
            spec, at = _BYTES_RECEIVED
            if len(info) < at + spec.size:
                return inode, sockid, None  # a kernel older than 4.1
            return inode, sockid, int(spec.unpack_from(info, at)[0])
        offset += (length + 3) & ~3
    return inode, sockid, None
