"""Plain TCP from this host to the target."""

from __future__ import annotations

import asyncio
import errno
import re
import socket

from tether.errors import TargetFailure, TargetUnreachableError, describe
from tether.relay import Conduit, End
from tether.spec import Endpoint
from tether.states import DIRECT
from tether.transports.base import LossCallback, PhaseCallback, RelayingTransport

_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT, errno.EADDRNOTAVAIL}
# asyncio joins the failures of a name's several addresses into one message without an errno.
_ERRNOS = re.compile(r"\[Errno (\d+)\]")


def failure_kind(exc: OSError) -> TargetFailure:
    """What a failed connect means to a SOCKS client: refused, unreachable, or other."""
    codes = {exc.errno} if exc.errno else {int(n) for n in _ERRNOS.findall(str(exc))}
    if codes == {errno.ECONNREFUSED}:
        return "refused"
    if codes and codes <= _UNREACHABLE | {errno.ECONNREFUSED}:
        return "unreachable"
    return "other"


class DirectTransport(RelayingTransport):
    """Each stream is a new TCP connection straight to the target."""

    label = DIRECT

    async def connect(
        self, on_phase: PhaseCallback | None = None, on_lost: LossCallback | None = None
    ) -> None:
        return None  # nothing shared, so nothing to lose

    async def open(self, target: Endpoint, end: End) -> Conduit:
        loop = asyncio.get_running_loop()
        try:
            conduit, _ = await loop.create_connection(lambda: end, target.host, target.port)
        except socket.gaierror as exc:
            raise TargetUnreachableError(
                f"cannot resolve {target.host}: {describe(exc)}", kind="unreachable"
            ) from exc
        except OSError as exc:
            raise TargetUnreachableError(
                f"cannot connect to {target}: {describe(exc)}", kind=failure_kind(exc)
            ) from exc
        except UnicodeError as exc:
            raise TargetUnreachableError(f"cannot connect to {target}: {describe(exc)}") from exc
        return conduit

    async def close(self) -> None:
        return None
