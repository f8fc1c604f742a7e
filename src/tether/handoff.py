"""A local connection handed to another process (the OpenSSH master) that moves its bytes.

tether keeps its own copy of the accepted socket: to count the bytes without reading them
(TCP_INFO), to end the connection (shutdown reaches every copy), and to close last, since the
client sees its EOF only once no process holds the socket any more.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable

from tether.stats import Counters

# struct tcp_info (linux/tcp.h): the byte counters tether reads, at their fixed offsets.
_TCP_INFO_SIZE = 216
_STATE = struct.Struct("=B"), 0
# States after the client's FIN, which bytes_received counts as one byte more.
_FIN_RECEIVED = {6, 8, 9, 11}  # TIME_WAIT, CLOSE_WAIT, LAST_ACK, CLOSING
_BYTES_RECEIVED = struct.Struct("=Q"), 128
_NOTSENT_BYTES = struct.Struct("=I"), 144
_BYTES_SENT = struct.Struct("=Q"), 200
_BYTES_RETRANS = struct.Struct("=Q"), 208
_RESET = struct.pack("ii", 1, 0)


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


class Forward:
    """One handed-off connection: counted while it lives, and ended from here when needed."""

    def __init__(
        self,
        counters: Counters,
        on_done: Callable[[Forward], None],
        sock: socket.socket,
        *,
        counting: bool = True,
    ) -> None:
        self.counters = counters
        self.on_done = on_done
        self.sock = sock
        self.linked = False  # the master has opened the forward
        self.done = False
        # The bytes each way that are not the target's (a SOCKS handshake), once known: until
        # then nothing is counted.
        self._counted: tuple[int, int] | None = (0, 0) if counting else None
        counters.connections_active += 1
        counters.connections_total += 1
        try:
            # ssh -L sets it on the sockets it accepts; the master, handed ours, does not.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def sync(self) -> None:
        """Bring the tunnel's byte counters up to date with this connection's."""
        if self.done or self._counted is None:
            return
        to_target, from_target = tcp_counts(self.sock)
        self.counters.bytes_out += to_target - self._counted[0]
        self.counters.bytes_in += from_target - self._counted[1]
        self._counted = (to_target, from_target)

    def count_from(self, received: int, sent: int) -> None:
        """Count the target's bytes from now: the first ``received`` and ``sent`` were the
        SOCKS handshake's."""
        self._counted = (received, sent)

    def limit(self, high: int) -> None:
        """Buffers are the master's business, not tether's."""

    def close(self) -> None:
        """The forward is over: count the last bytes, and close tether's copy so that the
        client sees the end."""
        self._finish(reset=False)

    def link(self) -> None:
        self.linked = True

    def abort(self, *, reset_peers: bool = True) -> None:
        """End the connection. The orderly way (the tunnel closing) shuts the socket down for
        every process that holds it: FIN to the client, EOF to the master. On a failure the
        master has let go of it already (a refused target, a lost master), so closing tether's
        copy, the last one, with SO_LINGER 0 sends the client a reset."""
        if self.done:
            return
        if not reset_peers:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # the client is gone already
        self._finish(reset=reset_peers)

    def _finish(self, *, reset: bool) -> None:
        if self.done:
            return
        self.sync()
        self.done = True
        if reset:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            except OSError:
                pass
        self.sock.close()
        self.counters.connections_active -= 1
        self.on_done(self)
