"""A local connection handed to another process (the OpenSSH master) that moves its bytes.

tether keeps its own copy of the accepted socket: to count the bytes without reading them
(TCP_INFO), to end the connection (shutdown reaches every copy), and to close last, since the
client sees its EOF only once no process holds the socket any more.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from tether.stats import Counters
from tether.tcp import linger_zero, tcp_counts


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
            linger_zero(self.sock)
        self.sock.close()
        self.counters.connections_active -= 1
        self.on_done(self)
