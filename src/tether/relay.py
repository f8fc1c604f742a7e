"""The byte pump between a local connection and its stream to the target.

Both ends are driven by callbacks (asyncio protocols and asyncssh sessions share the shape), so
bytes move without a coroutine switch per chunk. Flow control: when one end's write buffer passes
its high mark, reading from the other end pauses, so memory per connection stays bounded.
Half-close: EOF from one end becomes a write_eof on the other, and the connection closes only
when both have ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from tether.stats import Counters
from tether.tcp import linger_zero

# Per direction, a connection holds at most this much unsent data (plus one read chunk) before
# reading from the sender pauses. Large enough to keep loopback and SSH windows full.
WRITE_HIGH_WATER = 1024 * 1024
# What all connections of one tunnel may hold in memory together: with many connections open,
# each one's share (its high-water mark, read size and SSH window) shrinks, down to a floor.
BUFFER_BUDGET = 64 * 1024 * 1024
MIN_HIGH_WATER = 16 * 1024
# The most one read takes (asyncio's own default is 256 KiB). Below glibc's 128 KiB mmap
# threshold, the buffer a read allocates comes from the heap, and shrinking it to the bytes
# read is free. At 256 KiB it was, in some environments (setting PYTHONPATH was enough), an
# mmap, mremap and munmap per message: 0.55x socat's round trips on one connection instead of
# 0.95x, and slower bulk transfers too.
MAX_READ = 127 * 1024


def high_water_for(active: int) -> int:
    """Each connection's high-water mark when ``active`` are open.

    Per direction a connection holds at most a mark plus one read of at most the same size, and
    an SSH channel's window is two marks: under eight marks per connection in all. A power of
    two, so that the mark, which is re-applied to every open connection when it changes, changes
    only when the count doubles or halves.
    """
    share = BUFFER_BUDGET // (8 * max(active, 1))
    return max(MIN_HIGH_WATER, min(WRITE_HIGH_WATER, 1 << (share.bit_length() - 1)))


def reset(conduit: Conduit) -> None:
    """Drop a TCP connection with a reset, so its peer cannot take the end for a clean EOF."""
    if isinstance(conduit, asyncio.Transport):
        sock = conduit.get_extra_info("socket")
        if sock is not None:
            linger_zero(sock)
    conduit.abort()


class Conduit(Protocol):
    """What the relay needs of either end: asyncio.Transport and asyncssh.SSHTCPChannel fit."""

    def write(self, data: bytes) -> None: ...
    def write_eof(self) -> None: ...
    def can_write_eof(self) -> bool: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def is_closing(self) -> bool: ...


class End(asyncio.Protocol):
    """One side of a relay; serves as an asyncio.Protocol and as an asyncssh session."""

    def __init__(self, relay: Relay, local: bool) -> None:
        self.relay = relay
        self.local = local
        self.conduit: Conduit | None = None
        self.eof = False
        self.lost = False
        # What came before link(): pause_reading() in connection_made does not stop the first
        # read on every Python (Debian's 3.11.2 delivers it anyway), and the bytes must wait.
        self.early: list[bytes] = []

    @property
    def peer(self) -> End:
        return self.relay.remote if self.local else self.relay.local

    # -- callbacks from asyncio / asyncssh --------------------------------------------------
    def connection_made(self, conduit: Any) -> None:
        self.conduit = conduit
        self.limit(self.relay.high_water)
        if (self.local or self.relay.hold) and not self.relay.linked:
            # Hold the client's bytes until the stream to the target exists (and with ``hold``
            # the target's, until the client has its SOCKS reply).
            conduit.pause_reading()

    def limit(self, high: int) -> None:
        """Bound what this end buffers for writing, and what one read of it may bring."""
        conduit = self.conduit
        if conduit is None or self.lost:
            return
        if hasattr(conduit, "set_write_buffer_limits"):
            conduit.set_write_buffer_limits(high=high)
        if hasattr(conduit, "max_size"):
            # asyncio's selector transports read up to max_size at once (an instance attribute
            # since 3.4); reads no larger than the mark keep the overshoot within the budget.
            conduit.max_size = min(high, MAX_READ)

    def session_started(self) -> None:
        """asyncssh calls this once the channel is open; nothing to do."""

    def held(self) -> bool:
        """Whether this end's bytes still wait for link()."""
        return (self.local or self.relay.hold) and not self.relay.linked

    def data_received(self, data: bytes, datatype: object = None) -> None:
        self.relay.counted(self.local, len(data))
        if self.held():
            self.early.append(data)
            if self.conduit is not None:
                self.conduit.pause_reading()
            return
        self.pass_on(data)

    def pass_on(self, data: bytes) -> None:
        """Write ``data`` to the other end."""
        peer = self.peer.conduit
        if peer is not None and not self.peer.lost:
            try:
                peer.write(data)
            except OSError:
                self.relay.abort()  # see eof_received

    def eof_received(self) -> bool:
        self.eof = True
        if self.held():
            return True  # link() passes it on, after the bytes that came before it
        peer = self.peer
        if peer.conduit is not None and not peer.lost and peer.conduit.can_write_eof():
            try:
                peer.conduit.write_eof()
            except OSError:
                # The peer is gone but its loss is not delivered yet (a client's reset waiting
                # in the same poll; a channel already closing). Raised from here, the error
                # would end the whole SSH connection, every client's stream with it.
                self.relay.abort()
                return True
        if peer.eof:
            self.relay.close()
        # True keeps the other direction open (half-close).
        return True

    def pause_writing(self) -> None:
        if self.peer.conduit is not None and not self.peer.lost:
            self.peer.conduit.pause_reading()

    def resume_writing(self) -> None:
        if self.peer.conduit is not None and not self.peer.lost:
            self.peer.conduit.resume_reading()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = True
        self.relay.end_lost(self, exc)


class Relay:
    """A local connection paired with its stream to the target."""

    def __init__(
        self,
        counters: Counters,
        on_done: Callable[[Relay], None],
        high_water: int = WRITE_HIGH_WATER,
        *,
        hold: bool = False,
    ) -> None:
        self.counters = counters
        self.on_done = on_done
        self.high_water = high_water
        self.hold = hold  # the remote end waits for link() too
        self.local = End(self, local=True)
        self.remote = End(self, local=False)
        self.linked = False
        self.done = False
        counters.connections_active += 1
        counters.connections_total += 1

    def counted(self, from_local: bool, size: int) -> None:
        if from_local:
            self.counters.bytes_out += size
        else:
            self.counters.bytes_in += size

    def link(self) -> None:
        """The remote end is connected: let the client's bytes flow (and the target's, if
        held)."""
        self.linked = True
        if self.local.lost:
            self.close()
            return
        for end in (self.local, self.remote) if self.hold else (self.local,):
            early, end.early = end.early, []
            for data in early:
                end.pass_on(data)
            if end.eof:
                end.eof_received()
            elif end.conduit is not None and not end.lost:
                end.conduit.resume_reading()

    def close(self) -> None:
        """Close both ends, flushing what each still has to write."""
        for end in (self.local, self.remote):
            if end.conduit is not None and not end.lost and not end.conduit.is_closing():
                end.conduit.close()
        self._maybe_done()

    def sync(self) -> None:
        """The counters are up to date already: every chunk is counted as it passes."""

    def limit(self, high: int) -> None:
        """Apply a new high-water mark to both ends."""
        self.high_water = high
        self.local.limit(high)
        self.remote.limit(high)

    def abort(self, *, reset_peers: bool = True) -> None:
        """Drop both ends at once, discarding buffered data. On a failure the peers get a
        reset, so a client cannot take a cut-off answer for a complete one; ``reset_peers=False``
        is the tunnel's own orderly end, which closes them as before."""
        for end in (self.local, self.remote):
            if end.conduit is not None and not end.lost:
                if reset_peers:
                    reset(end.conduit)
                else:
                    end.conduit.abort()
        self._maybe_done()

    def end_lost(self, end: End, exc: BaseException | None) -> None:
        peer = end.peer
        if peer.conduit is not None and not peer.lost:
            # A reset is passed on as a reset; a clean close lets the peer flush first.
            if exc is None:
                if not peer.conduit.is_closing():
                    peer.conduit.close()
            else:
                reset(peer.conduit)
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self.done:
            return
        ends = [e for e in (self.local, self.remote) if e.conduit is not None]
        if all(e.lost for e in ends):
            self.done = True
            self.counters.connections_active -= 1
            self.on_done(self)
