"""The direct transport: a TCP connection per stream, its failures as tether's own errors."""

from __future__ import annotations

import asyncio
import errno
import socket

import pytest

from tests.support.servers import EchoServer
from tether.errors import TargetUnreachableError
from tether.relay import Relay
from tether.stats import Counters
from tether.spec import Endpoint
from tether.transports.direct import DirectTransport, failure_kind


async def test_a_stream_reaches_the_target(echo_server: EchoServer) -> None:
    relay = Relay(Counters(), lambda _relay: None)
    conduit = await DirectTransport().open(Endpoint("127.0.0.1", echo_server.port), relay.remote)
    assert isinstance(conduit, asyncio.Transport)
    assert conduit.get_extra_info("peername")[1] == echo_server.port
    conduit.close()


async def test_a_refused_target() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        relay = Relay(Counters(), lambda _relay: None)
        with pytest.raises(TargetUnreachableError, match="Connection refused"):
            await DirectTransport().open(Endpoint("127.0.0.1", port), relay.remote)


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "refused"),
        (OSError(errno.EHOSTUNREACH, "no route"), "unreachable"),
        (OSError(errno.ENETUNREACH, "network"), "unreachable"),
        (TimeoutError(errno.ETIMEDOUT, "timed out"), "unreachable"),
        (OSError(errno.EMFILE, "too many files"), "other"),
        # asyncio's one error for a name's several addresses, with no errno of its own
        (
            OSError(
                "Multiple exceptions: [Errno 111] Connect call failed ('::1', 1, 0, 0), "
                "[Errno 111] Connect call failed ('127.0.0.1', 1)"
            ),
            "refused",
        ),
        (
            OSError(
                "Multiple exceptions: [Errno 111] Connect call failed ('::1', 1, 0, 0), "
                "[Errno 113] Connect call failed ('10.0.0.1', 1)"
            ),
            "unreachable",
        ),
        (OSError("something else"), "other"),
    ],
)
def test_failures_say_what_kind_they_are(exc: OSError, kind: str) -> None:
    assert failure_kind(exc) == kind
