"""The one exception tree of tether; every class carries the exit code the CLI returns for it.

Exit codes (also in the README):

====  =========================  ==================================================
code  class                      meaning
====  =========================  ==================================================
0     -                          success, or a graceful stop by signal
1     TetherError                unexpected internal failure
2     UsageError / ConfigError   bad flags, bad profile, malformed TOML
2     RegistryError              the registry directory is unsafe (owner, mode, symlink)
2     OutputError                stdout or stderr is closed or broken (nothing is left running)
2     InputError                 (tether shell) stdin cannot be read: the shell ends
3     PortInUseError             the local listen address is taken
4     TransportUnreachableError  the SSH server (or direct target) cannot be reached
4     RelayError                 (gateway) a relay's or a site's sshd refused its config, or
                                 stopped by itself
5     AuthenticationError        SSH login refused, or host key unknown / changed
5     HostKeyError               the host key is unknown or has changed (a kind of the above)
5     AccessRefused              (gateway) no live grant of the target for this user and key
5     AgentRefused               (gateway) the relays keep refusing the site's certificate
                                 (its site was removed, or its enrolment expired)
6     TargetUnreachableError     the transport is up but the target refuses
7     ReadinessTimeoutError      not ready within --timeout
8     NoSuchTunnelError          no running tunnel matches an id, name or port
9     StopFailedError            a tunnel did not exit in time, or could not be verified
10    TunnelLostError            the transport was lost for good (reconnecting gave up)
11    TunnelClosedError          (Python API) the tunnel closed before the with block ended
127   CommandError               the --run / -- command could not be started
128+N Interrupted                signal N before the tunnel was ready (130: SIGINT)
N     ChildFailed                a background tunnel failed before ready: its own code N
1     ControlError               a control socket did not answer as it should (list and stop
                                 catch it: the tunnel shows as unresponsive, or stop says why)
1     KeygenError                (gateway) ssh-keygen failed on a key or certificate tether made
====  =========================  ==================================================
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Literal


class TetherError(Exception):
    """Base class: a failure with a one-line message and an exit code."""

    exit_code: int = 1

    def __init__(
        self, message: str, *, hint: str | None = None, options: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        #: Options the hint names by their keys (as TunnelSpec and profiles spell them); the
        #: command line shows them as its flags.
        self.options = options

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class UsageError(TetherError):
    """Invalid flags or arguments; nothing was started."""

    exit_code = 2


class ConfigError(UsageError):
    """A profile file that cannot be read, parsed or validated."""


class OutputError(UsageError):
    """Standard output or error is closed or broken, so the result cannot be reported."""


class InputError(UsageError):
    """(tether shell) stdin cannot be read: the shell ends, as at the end of input."""


class PortInUseError(TetherError):
    """The local address the tunnel should listen on is already taken."""

    exit_code = 3


class TransportUnreachableError(TetherError):
    """The jump host (or, for direct tunnels, the network path) cannot be reached."""

    exit_code = 4


class AuthenticationError(TetherError):
    """The SSH server refused our credentials."""

    exit_code = 5
    #: The ProxyJump hop (user@host) whose login or host key failed, when it is not the
    #: server of --via itself.
    hop: str | None = None


class HostKeyError(AuthenticationError):
    """The SSH server's host key is unknown or does not match known_hosts."""


#: Why a target could not be reached, as far as the transport knows: what a SOCKS reply says.
TargetFailure = Literal["refused", "unreachable", "prohibited", "other"]


class RelayError(TetherError):
    """(gateway) A relay's or a site's sshd refused its generated config, or stopped."""

    exit_code = 4


class AccessRefused(AuthenticationError):
    """(gateway) No live grant of this target for this user and key: refused, or ended."""


class AgentRefused(AuthenticationError):
    """(gateway) The relays keep refusing the site's certificate, or the signers the relay's:
    revoked, or expired."""


class KeygenError(TetherError):
    """(gateway) ssh-keygen failed on a key or a certificate tether made (not the user's input)."""


class TargetUnreachableError(TetherError):
    """The transport is up, but the target host:port does not accept connections. ``kind``
    says why, where the transport can tell."""

    exit_code = 6

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        options: tuple[str, ...] = (),
        kind: TargetFailure = "other",
    ) -> None:
        super().__init__(message, hint=hint, options=options)
        self.kind: TargetFailure = kind


class ReadinessTimeoutError(TetherError):
    """The tunnel did not become ready within the timeout."""

    exit_code = 7


class TunnelLostError(TetherError):
    """The transport was lost and reconnecting gave up (or was off)."""

    exit_code = 10


class TunnelClosedError(TetherError):
    """(Python API) The tunnel closed while its ``with`` block still ran: `tether stop` from
    another process, or its ttl or idle timeout."""

    exit_code = 11


class RegistryError(TetherError):
    """The registry directory is unsafe or unusable."""

    exit_code = 2


class ControlError(TetherError):
    """A tunnel's control endpoint did not answer as expected."""


class ChildFailed(TetherError):
    """A background tunnel failed before it was ready; carries the child's own exit code (and
    message), which its parent exits with."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class NoSuchTunnelError(TetherError):
    """No running tunnel matches the given id, name or port."""

    exit_code = 8


class StopFailedError(TetherError):
    """A tunnel could not be stopped: it did not exit in time, or could not be verified."""

    exit_code = 9


class CommandError(TetherError):
    """The command given to --run or after -- could not be started."""

    exit_code = 127


class Interrupted(TetherError):
    """Stopped by a signal before the tunnel became ready; exit 128+N (130 for SIGINT)."""

    exit_code = 130

    def __init__(self, message: str = "interrupted", *, signum: int = 2) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


CLIP = 80


def clip(value: object) -> object:
    """A value to quote in a message, cut to a readable length (a 2,000-character host name or
    a 400-digit number must not become the error line)."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= CLIP:
        return value
    return text[:CLIP] + "..."


def visible(text: str) -> str:
    """``text`` with every character that is not printable (control characters, ESC, line
    and paragraph separators, invisible format characters) shown as its escape: ``\\x1b``,
    ``\\u2028``. What a value holds can then never move a terminal's cursor, clear its screen
    or start a new line of a table, a banner or a log."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def shown(value: object) -> str:
    """A value as an error message quotes it: strings in double quotes, on one line."""
    value = clip(value)
    # json.dumps escapes only C0 controls: DEL, C1 (CSI is U+009B) and U+2028 would pass.
    return visible(json.dumps(value, ensure_ascii=False)) if isinstance(value, str) else repr(value)


def describe(exc: BaseException) -> str:
    """A one-line reason for an OS or library error, without its type's noise."""
    if isinstance(exc, OSError) and exc.errno and exc.errno > 0:
        # asyncio's "Connect call failed ('h', p)" says less than the errno's own text.
        return os.strerror(exc.errno)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror  # name resolution errors (negative codes) carry their own text
    text = " ".join(str(exc).split())
    if not text and isinstance(exc, TimeoutError):
        return "timed out"  # a deadline of asyncio's, which says nothing more
    return text or type(exc).__name__


@contextmanager
def map_exceptions(
    mapping: Mapping[type[BaseException], type[TetherError]], what: str
) -> Iterator[None]:
    """Turn the OS or library errors named in ``mapping`` into tether's own, as ``what: reason``.

    Each module that touches the OS or a library declares here which errors it expects and what
    they mean, so that nothing untranslated reaches the command line. tether's own errors pass.
    """
    try:
        yield
    except TetherError:
        raise
    except tuple(mapping) as exc:
        target = next(cls for source, cls in mapping.items() if isinstance(exc, source))
        raise target(f"{what}: {describe(exc)}") from exc
