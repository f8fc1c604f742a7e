"""Rendering for people (banner, spinner) and for programs (JSON); rich is imported lazily."""

from __future__ import annotations

import json
import os
import sys
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, Self

import click

from tether.tunnel import Tunnel

PHASE_TEXT = {
    "binding": "binding the local port",
    "connecting": "connecting",
    "authenticating": "authenticating",
    "probing": "probing the target",
    "ready": "ready",
}


def ready_record(tunnel: Tunnel) -> dict[str, Any]:
    """The stable, machine-readable description of a ready tunnel."""
    address = tunnel.address
    assert address is not None
    via = tunnel.spec.via
    return {
        "name": tunnel.spec.name,
        "local_host": address.host,
        "local_port": address.port,
        "target": str(tunnel.spec.target),
        "via": str(via) if via else None,
        "pid": os.getpid(),
    }


def print_ready(tunnel: Tunnel, *, as_json: bool) -> None:
    """Announce readiness: JSON on stdout, or a banner on stderr."""
    record = ready_record(tunnel)
    if as_json:
        click.echo(json.dumps(record))
        sys.stdout.flush()
        return
    local = f"{record['local_host']}:{record['local_port']}"
    click.echo(
        f"tether: {record['name']} ready on {local} -> {record['target']} "
        f"via {record['via'] or 'direct'} (pid {record['pid']})",
        err=True,
    )
    if sys.stderr.isatty():
        click.echo("tether: press Ctrl-C to stop", err=True)


class Spinner(AbstractContextManager["Spinner"]):
    """Shows the current startup phase on a terminal; silent when stderr is not a TTY."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._status: Any = None

    def __enter__(self) -> Self:
        if sys.stderr.isatty():
            from rich.console import Console

            self._status = Console(stderr=True).status(f"{self.label}: starting")
            self._status.start()
        return self

    def phase(self, phase: str) -> None:
        if self._status is not None:
            self._status.update(f"{self.label}: {PHASE_TEXT.get(phase, phase)}")

    def stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
