"""The Python API: open a tunnel by profile or by keywords, list and stop tunnels.

Tunnels opened here register with mode "api": `tether list` shows them and `tether stop` stops
them from any shell. Errors are tether's exception tree; nothing is printed, and what tether
logs goes to the ``logging`` module under the "tether" name.

A synchronous ``open`` whose block never ends (entered by hand, never exited) is closed at
interpreter exit, while its helper thread still runs; a forked child's copy is never closed
from the child, which has no such thread and does not own the tunnel.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from tether import paths
from tether.client import list_tunnels, select_entries, stop_tunnels
from tether.config import OPTIONS, Setting, Settings, load_config, spec_for
from tether.errors import StopFailedError, TetherError, TunnelClosedError, UsageError
from tether.modes.drain import Ending, bound_ending, drain_for
from tether.modes.hosted import HostedTunnel
from tether.modes.loopthread import UNWIND_LIMIT, LoopThread
from tether.record import EntryView, TunnelInfo
from tether.entry import Entry
from tether.registry import Registry
from tether.spec import TunnelSpec

KEYWORDS = {opt.key for opt in OPTIONS}
ENDED = {"ttl": "its ttl passed", "idle": "it was idle for its idle timeout"}
# Bounds on the synchronous API's calls into its helper thread: none may hang.
CLOSE_LIMIT = UNWIND_LIMIT
RECORD_LIMIT = 10.0

log = logging.getLogger(__name__)


class OpenTunnel(EntryView):
    """A ready tunnel opened from Python: where to connect (``host``, ``port``, ``address``),
    and its live record."""

    def __init__(self, hosted: HostedTunnel, record: TunnelInfo, thread: LoopThread | None) -> None:
        self._hosted = hosted
        self._thread = thread
        self.entry = record.entry
        #: Why the tunnel closed before its block ended, if it did.
        self.closed: TetherError | None = None

    def record(self) -> TunnelInfo:
        """The tunnel's record now, with live counters (the same as `tether list --json`)."""
        if self._thread is None:
            return self._hosted.record()
        return self._thread.call(_record(self._hosted), timeout=RECORD_LIMIT)

    def __repr__(self) -> str:
        return f"<OpenTunnel {self.id} {self.name} on {self.address} -> {self.target}>"


async def _record(hosted: HostedTunnel) -> TunnelInfo:
    return hosted.record()


def spec_of(
    profile: str | None, config: str | Path | None, options: dict[str, object]
) -> TunnelSpec:
    """The spec a profile and keywords describe, as `tether start PROFILE --flags` builds it."""
    unknown = sorted(set(options) - KEYWORDS)
    if unknown:
        raise UsageError(
            f"unknown option {unknown[0]!r}; known options: {', '.join(sorted(KEYWORDS))}"
        )
    path, required = paths.config_file(str(config) if config is not None else None)
    overrides: Settings = {
        key: Setting(value, f"{key}=") for key, value in options.items() if value is not None
    }
    return spec_for(load_config(path, required=required), profile, overrides)


def _registry(runtime_dir: str | Path | None) -> Registry:
    return Registry(Path(runtime_dir)) if runtime_dir is not None else Registry.default()


@asynccontextmanager
async def open_async(
    profile: str | None = None,
    /,
    *,
    config: str | Path | None = None,
    runtime_dir: str | Path | None = None,
    **options: object,
) -> AsyncIterator[OpenTunnel]:
    """Open a tunnel and yield it once ready; close it when the block ends.

    ``profile`` names a profile of the config file (``config``, else $TETHER_CONFIG, else
    ~/.config/tether/config.toml); every option of `tether start` is a keyword (``to``,
    ``via``, ``port``, ``timeout``, ``identity_file``...), overriding the profile.

    If the tunnel closes while the block runs (`tether stop` from another process, its ttl, its
    idle timeout, or a transport lost for good), the block is cancelled and this raises
    TunnelClosedError (TunnelLostError for a lost transport).
    """
    spec = spec_of(profile, config, options)
    async with _opened(spec, runtime_dir, thread=None) as tunnel:
        yield tunnel


@contextmanager
def open(
    profile: str | None = None,
    /,
    *,
    config: str | Path | None = None,
    runtime_dir: str | Path | None = None,
    **options: object,
) -> Iterator[OpenTunnel]:
    """``open_async`` for synchronous code: the tunnel runs in a helper thread.

    If the tunnel closes while the block runs, this raises TunnelClosedError (or
    TunnelLostError) when the block ends: a synchronous block cannot be cancelled.

    A tunnel still open when the interpreter exits is closed then. In a child forked inside the
    block, leaving the block does nothing: the tunnel is the parent's.
    """
    sync = _SyncOpen(spec_of(profile, config, options), runtime_dir)
    tunnel = sync.enter()
    try:
        yield tunnel
    except BaseException as exc:
        if not sync.exit(exc):
            raise
    else:
        sync.exit(None)


class _SyncOpen:
    """One synchronous ``open``: its helper thread and its tunnel, closed once, by the block's
    end or else at interpreter exit, and only ever by the process that opened them.

    At exit, ``atexit`` runs after the interpreter has joined the application's own threads
    (which may use the tunnel until then) and before it freezes daemon threads such as ours;
    the generator of a block never left is finalised later still, when a call into the
    thread could only hang. The pid tells a forked child's copy: that process has no helper
    thread, and the loop's descriptors it inherited (its epoll set) are the parent's.
    """

    def __init__(self, spec: TunnelSpec, runtime_dir: str | Path | None) -> None:
        self._spec = spec
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._done = False
        self._thread = LoopThread("tether-api")
        self._opened = _opened(spec, runtime_dir, thread=self._thread)

    def enter(self) -> OpenTunnel:
        atexit.register(self._at_exit)
        try:
            # The start is bounded by the spec's timeout already; this bound is a backstop.
            limit = self._spec.timeout + CLOSE_LIMIT
            return self._thread.call(self._opened.__aenter__(), timeout=limit)
        except BaseException:
            with self._lock:
                self._done = True
            self._finish()
            raise

    def exit(self, exc: BaseException | None) -> bool:
        """Close the tunnel as the block ends with ``exc``; whether to suppress ``exc``. Does
        nothing where the tunnel is not this process's to close (any more)."""
        if os.getpid() != self._pid:
            return False  # a forked child's copy: the parent's tunnel goes on
        with self._lock:
            if self._done:
                return False  # closed at interpreter exit already
            self._done = True
        try:
            args = (None, None, None) if exc is None else (type(exc), exc, exc.__traceback__)
            return bool(self._thread.call(self._opened.__aexit__(*args), timeout=CLOSE_LIMIT))
        finally:
            self._finish()

    def _finish(self) -> None:
        atexit.unregister(self._at_exit)
        self._thread.close()

    def _at_exit(self) -> None:
        if os.getpid() != self._pid:
            return  # atexit handlers are inherited by forked children too
        try:
            self.exit(None)
        except TetherError as exc:  # nobody is left to raise it to
            log.warning("closing tunnel %s at interpreter exit: %s", self._spec.name, exc)


@asynccontextmanager
async def _opened(
    spec: TunnelSpec, runtime_dir: str | Path | None, *, thread: LoopThread | None
) -> AsyncIterator[OpenTunnel]:
    body = asyncio.current_task() if thread is None else None
    tunnel: OpenTunnel | None = None
    cancelled = False

    def closed(reason: TetherError) -> None:
        nonlocal cancelled
        assert tunnel is not None
        if tunnel.closed is None:
            tunnel.closed = reason
        if body is not None and not body.done() and not cancelled:
            cancelled = True
            body.cancel()

    async def on_stop() -> None:  # `tether stop` from another process; it waits for the close
        assert tunnel is not None
        closed(TunnelClosedError(f"tunnel {tunnel.id} ({spec.name}) was stopped by tether stop"))
        await hosted.close(drain_for(spec, "api", "stop"))

    async def watch() -> None:
        assert tunnel is not None
        ending: Ending
        try:
            reason = await hosted.tunnel.wait_ended()
        except TetherError as exc:
            ending = "lost"
            closed(exc)
        else:
            ending = bound_ending(reason)
            why = ENDED.get(reason, "it was closed")
            closed(TunnelClosedError(f"tunnel {tunnel.id} ({spec.name}) closed: {why}"))
        await hosted.close(drain_for(spec, "api", ending))

    hosted = HostedTunnel(spec, _registry(runtime_dir), "api", on_stop=on_stop)
    await hosted.start()
    tunnel = OpenTunnel(hosted, hosted.record(), thread)
    watcher = asyncio.ensure_future(watch())
    try:
        yield tunnel
    except asyncio.CancelledError:
        if not cancelled or body is None or body.uncancel() > 0:
            raise  # a cancellation of the caller's own
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await hosted.close(drain_for(spec, "api", "closed"))
    if tunnel.closed is not None:
        raise tunnel.closed


def list_open(*, runtime_dir: str | Path | None = None) -> list[TunnelInfo]:
    """Every tunnel of this user, started from any process, with its live state."""
    return list_tunnels(_registry(runtime_dir))


def stop(
    *selectors: str,
    all: bool = False,
    missing_ok: bool = False,
    timeout: float = 10.0,
    runtime_dir: str | Path | None = None,
) -> list[Entry]:
    """Stop tunnels by id, name or local port (every tunnel with ``all`` and no selector) and
    return those stopped. NoSuchTunnelError if a selector names nothing (unless
    ``missing_ok``); StopFailedError naming those that did not stop."""
    registry = _registry(runtime_dir)
    entries = select_entries(registry, list(selectors), every=all, missing_ok=missing_ok)
    result = stop_tunnels(registry, entries, timeout=timeout)
    if result.failures:
        raise StopFailedError("; ".join(result.failures))
    return result.stopped
