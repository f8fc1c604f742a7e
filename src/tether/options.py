"""Tunnel options, each declared once: on its field of TunnelSpec or SshOptions, with its profile
key, flag, parser, default and help. Config validation and the command line's flags are derived
from the declarations, so adding an option is a change to one field."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import Field, dataclass, field, fields, replace
from typing import Any


@dataclass(frozen=True)
class Option:
    """One setting as profiles and flags name it."""

    key: str  # the profile key (and, with dashes, the flag) unless said otherwise
    parse: Callable[[Any], Any]  # the value from TOML or a flag -> the field's value
    help: str
    metavar: str = "VALUE"
    flag: str | None = None  # default: "--" + key with dashes; "" for no flag
    short: str | None = None
    toml: tuple[type, ...] = (str,)  # the TOML types a profile may give
    profile: bool = True  # whether a profile may set it
    multiple: bool = False  # a flag that may be repeated, its values joined in a tuple
    default_text: str | None = None  # the default as --help shows it; derived if None
    field: str = ""  # the field it sets, "ssh.x" for SshOptions; "" for the address options
    default: Any = None

    @property
    def cli_flag(self) -> str | None:
        if self.flag == "":
            return None
        return self.flag or "--" + self.key.replace("_", "-")

    @property
    def switch(self) -> bool:
        """A true/false option: --x/--no-x on the command line."""
        return self.toml == (bool,)

    @property
    def help_text(self) -> str:
        shown = self.default_text
        if shown is None:
            shown = f"{self.default:g}" if isinstance(self.default, float) else str(self.default)
            shown = {"None": "none", "()": "none", "True": "on", "False": "off"}.get(shown, shown)
        return f"{self.help} [default: {shown}]"


def option(default: Any, **declaration: Any) -> Any:
    """A dataclass field that is a tunnel option (see Option for what to declare)."""
    declaration.setdefault("key", "")  # the field's name, once declared() sees it
    return field(default=default, metadata={"option": Option(**declaration)})


def declared(cls: type, prefix: str = "") -> Iterator[Option]:
    """The options declared on the fields of dataclass ``cls``, in field order."""
    for item in fields(cls):
        declaration = item.metadata.get("option")
        if declaration is not None:
            yield _complete(declaration, item, prefix)


def _complete(declaration: Option, item: Field[Any], prefix: str) -> Option:
    return replace(
        declaration,
        key=declaration.key or item.name,
        field=prefix + item.name,
        default=item.default,
    )
