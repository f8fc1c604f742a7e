"""What tether sets and reads on an accepted TCP socket's kernel side: the reset that ends a
failed connection (SO_LINGER 0, on either data path), and the byte counts of TCP_INFO (the
handoff path's, whose bytes tether never reads)."""

from __future__ import annotations

import socket
import struct

# SO_LINGER on with a timeout of 0 s: close() sends RST, not FIN.
RESET = struct.pack("ii", 1, 0)
# struct tcp_info (linux/tcp.h): the byte counters tether reads, at their fixed offsets.
_TCP_INFO_SIZE = 216
_STATE = struct.Struct("=B"), 0
# States after the client's FIN, which bytes_received counts as one byte more.
_FIN_RECEIVED = {6, 8, 9, 11}  # TIME_WAIT, CLOSE_WAIT, LAST_ACK, CLOSING
_BYTES_RECEIVED = struct.Struct("=Q"), 128
_NOTSENT_BYTES = struct.Struct("=I"), 144
_BYTES_SENT = struct.Struct("=Q"), 200
_BYTES_RETRANS = struct.Struct("=Q"), 208


def linger_zero(sock: socket.socket) -> None:
    """Make closing ``sock`` (a TCP socket) send a reset (RST), not an orderly FIN: its peer
    gets ECONNRESET, never an EOF it could take for a complete answer."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
        except OSError:
            pass  # already gone: nothing left to reset


def tcp_counts(sock: socket.socket) -> tuple[int, int]:
    """(bytes from the client, bytes to the client) of a TCP socket, read from TCP_INFO.

    Sent counts what the kernel took to send, whether or not it is on the wire yet
    (bytes_sent - bytes_retrans + notsent_bytes); bytes_acked alone would miss the end.
    """
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    except OSError:
        return 0, 0
    if len(info) < _TCP_INFO_SIZE:
        return 0, 0  # an old kernel without these counters

    def field(spec: tuple[struct.Struct, int]) -> int:
        return int(spec[0].unpack_from(info, spec[1])[0])

    sent = field(_BYTES_SENT) - field(_BYTES_RETRANS) + field(_NOTSENT_BYTES)
    received = field(_BYTES_RECEIVED) - (field(_STATE) in _FIN_RECEIVED)
    return max(received, 0), sent
