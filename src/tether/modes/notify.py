"""sd_notify without libsystemd: datagrams to $NOTIFY_SOCKET, and the watchdog's interval."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import MutableMapping

from tether.errors import clip, describe, visible

log = logging.getLogger("tether")

#: What a service manager gives its main process for sd_notify. They are tether's alone: taken
#: out of the environment when read (as sd_notify's unset_environment does), so that no child,
#: ssh or a ProxyCommand, could ever speak for the service.
NOTIFY_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def notify_address(value: str) -> str | None:
    """The socket address that $NOTIFY_SOCKET names: an absolute path, or ``@name`` for the
    abstract namespace (a leading NUL). None for anything else (vsock is not supported)."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    return None


def watchdog_interval(usec: str | None, watchdog_pid: str | None, pid: int) -> float | None:
    """Seconds between two WATCHDOG=1 pings: half of $WATCHDOG_USEC, as systemd advises.

    None when no watchdog is asked for, when the value is not a positive number, or when
    $WATCHDOG_PID names another process (the watchdog is then that process's to feed).
    """
    if not usec or not usec.isascii() or not usec.isdigit() or int(usec) == 0:
        return None
    if watchdog_pid and watchdog_pid != str(pid):
        return None
    return int(usec) / 2 / 1_000_000


class Notifier:
    """Sends sd_notify messages to the service manager.

    A message is one datagram of ``KEY=VALUE`` lines. Sending never blocks the event loop and
    never raises: a tunnel must not fail because its manager does not listen. The first failure
    is logged as a warning, the later ones only under --debug.
    """

    def __init__(self, address: str, watchdog: float | None = None) -> None:
        self.address = address
        #: Seconds between watchdog pings, or None when no watchdog is armed for this process.
        self.watchdog = watchdog
        self._sock: socket.socket | None = None
        self._failed = False

    @classmethod
    def from_environ(
        cls, environ: MutableMapping[str, str] | None = None, pid: int | None = None
    ) -> Notifier | None:
        """The notifier $NOTIFY_SOCKET asks for, or None; the variables leave ``environ``."""
        environ = os.environ if environ is None else environ
        values = {name: environ.pop(name, None) for name in NOTIFY_VARIABLES}
        target = values["NOTIFY_SOCKET"]
        if not target:
            return None
        address = notify_address(target)
        if address is None:
            log.warning(
                "ignoring NOTIFY_SOCKET=%s: not an absolute path or an @abstract name", clip(target)
            )
            return None
        pid = os.getpid() if pid is None else pid
        return cls(address, watchdog_interval(values["WATCHDOG_USEC"], values["WATCHDOG_PID"], pid))

    @property
    def shown(self) -> str:
        """The address as $NOTIFY_SOCKET spells it."""
        return "@" + self.address[1:] if self.address.startswith("\0") else self.address

    def send(self, *fields: str) -> bool:
        """Send ``fields`` (``KEY=VALUE`` each) as one message; whether it went out."""
        # One field a line is the protocol: a newline in a STATUS= text (an error's, a server's)
        # would add fields of its own (MAINPID=, READY=1), so each field is shown escaped.
        message = "\n".join(visible(f) for f in fields).encode("utf-8", errors="replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            # MSG_DONTWAIT: a manager whose queue is full must not freeze the tunnel.
            self._sock.sendto(message, socket.MSG_DONTWAIT, self.address)
        except OSError as exc:
            level = logging.DEBUG if self._failed else logging.WARNING
            self._failed = True
            log.log(
                level,
                "cannot notify the service manager at %s: %s%s",
                self.shown,
                describe(exc),
                "" if level == logging.DEBUG else " (further failures are not reported)",
            )
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
