"""What shell completion offers: profiles from the config, running tunnels from the registry.

These run on every TAB, so they import little, only read files (never ask a tunnel's control
socket) and fail silently: a broken config or an unsafe registry offers nothing, and says nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import click
from click.shell_completion import CompletionItem

if TYPE_CHECKING:
    from tether.config import Config
    from tether.entry import Entry

# Where `tether start` keeps the words after `--` (the command's own argv).
ARGV_META = "tether.argv"


def files(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """A path: the shell completes file names itself."""
    return [CompletionItem(incomplete, type="file")]


def directories(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    return [CompletionItem(incomplete, type="dir")]


def profiles(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The profiles of the config that the command would read: --config if it is already on
    the line, else $TETHER_CONFIG, else the default file. Those already named are left out."""
    if ARGV_META in ctx.meta:  # after `--`: a command and its arguments, not profiles
        return files(ctx, param, incomplete)
    config = _config(ctx.params.get("config_path"))
    if config is None:
        return []
    named = ctx.params.get(param.name or "")
    taken = set(named) if isinstance(named, tuple) else set()
    return [
        CompletionItem(name, help=_describe(config, name))
        for name in sorted(config.profiles)
        if name.startswith(incomplete) and name not in taken
    ]


def running(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Every running tunnel's name and id, but those already named on the line."""
    named = ctx.params.get(param.name or "")
    taken = set(named) if isinstance(named, tuple) else set()
    entries = [e for e in _entries() if not {e.id, e.name} & taken]
    return _items(entries, incomplete)


def logged(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The running tunnels that have a log: the background ones."""
    return _items([e for e in _entries() if e.log_file is not None], incomplete)


def _config(explicit: object) -> Config | None:
    try:
        from tether import paths
        from tether.config import load_config

        path, required = paths.config_file(explicit if isinstance(explicit, str) else None)
        return load_config(path, required=required)
    except Exception:  # a TAB shows nothing rather than an error: `tether start` will say it
        return None


def _describe(config: Config, name: str) -> str | None:
    """The profile's target and transport as written, for shells that show a description."""
    settings = config.settings(name)
    to, socks = settings.get("to"), settings.get("socks")
    target = "socks5" if socks is not None and socks.value is True else to and to.value
    if target is None:
        return None
    via = settings.get("via")
    from tether.errors import visible  # a profile's raw text: no escape reaches the shell

    return visible(f"{target}" + (f" via {via.value}" if via is not None else ""))


def _entries() -> list[Entry]:
    """The live registry entries, as `tether list` finds them, without asking the tunnels."""
    try:
        from tether.paths import runtime_directory
        from tether.registry import Registry

        directory = runtime_directory()
        if not directory.is_dir():  # nothing runs; and a TAB creates nothing
            return []
        return Registry(directory).entries()
    except Exception:  # an unsafe or unreadable registry: `tether stop` will say why
        return []


def _items(entries: Iterable[Entry], incomplete: str) -> list[CompletionItem]:
    """Names (each once), then ids, each sorted and described by the other and where it
    listens."""
    from tether.errors import visible
    from tether.values import host_port

    names: dict[str, CompletionItem] = {}
    ids: list[CompletionItem] = []
    for entry in entries:
        # Completion answers the shell line by line: a newline in an entry would add words.
        where = visible(f"{host_port(entry.local_host, entry.local_port)}, {entry.mode}")
        if entry.name and entry.name.isprintable() and entry.name.startswith(incomplete):
            names.setdefault(entry.name, CompletionItem(entry.name, help=f"{entry.id}, {where}"))
        if entry.id.startswith(incomplete):  # hex: the registry's file name
            ids.append(CompletionItem(entry.id, help=visible(f"{entry.name}, {where}")))
    return [*sorted(names.values(), key=_value), *sorted(ids, key=_value)]


def _value(item: CompletionItem) -> str:
    return str(item.value)
