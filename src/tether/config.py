"""TOML profiles and flag overrides turned into a validated TunnelSpec; errors name file and key."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether.errors import ConfigError, UsageError, clip, map_exceptions, shown
from tether.files import CONFIG_LIMIT, read_regular
from tether.options import Option, declared
from tether.spec import DEFAULT_LISTEN_HOST, Endpoint, SshOptions, TunnelSpec
from tether.values import UNLIMITED, parse_host, parse_port
from tether.values import path as parse_path
from tether.values import paths as parse_paths

# \Z, not $: '$' also matches before a final newline, and "db\n" is no name.
PROFILE_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.\-]*\Z")

# The keys that together make the target and the listen address (config.build_spec joins them);
# every other option is declared on its field of TunnelSpec or SshOptions.
ADDRESS_OPTIONS = (
    Option(
        "to",
        lambda text: Endpoint.parse_target(text, what="to"),
        "Target address, or SITE/TARGET behind a gateway (overrides the profile's)",
        metavar="HOST:PORT|SITE/TARGET",
        default_text="the profile's",
    ),
    Option(
        "target_host",
        lambda text: parse_host(text, what="target host"),
        "Override only the target host",
        metavar="HOST",
        default_text="the profile's",
    ),
    Option(
        "target_port",
        lambda text: parse_port(text, what="target port", allow_zero=False),
        "Override only the target port",
        metavar="PORT",
        toml=(int, str),
        default_text="the profile's",
    ),
    Option(
        "host",
        lambda text: parse_host(text, what="host"),
        "Local address to bind; localhost binds 127.0.0.1 and ::1",
        metavar="ADDR",
        short="-o",
        default=DEFAULT_LISTEN_HOST,
    ),
    Option(
        "port",
        lambda text: parse_port(text, what="port"),
        "Local port; 0 picks a free one",
        metavar="PORT",
        short="-p",
        toml=(int, str),
        default=0,
    ),
)
#: Every tunnel option: what profiles may set and what `tether start` takes as flags.
OPTIONS: tuple[Option, ...] = (
    *ADDRESS_OPTIONS,
    *declared(TunnelSpec),
    *declared(SshOptions, prefix="ssh."),
)
# Keys a profile (or [defaults]) may set, with the types TOML must give them.
PROFILE_KEYS: dict[str, tuple[type, ...]] = {o.key: o.toml for o in OPTIONS if o.profile}
# Keys whose values are file paths: relative ones are relative to the config file's directory.
PATH_KEYS = frozenset(o.key for o in OPTIONS if o.parse in (parse_path, parse_paths))


@dataclass(frozen=True)
class Setting:
    """One raw option value and where it came from, so errors can point at it."""

    value: object
    origin: str


Settings = dict[str, Setting]


@dataclass(frozen=True)
class Config:
    """A parsed config file: defaults plus named profiles, not yet validated per key."""

    path: Path | None = None
    defaults: Mapping[str, object] = field(default_factory=dict)
    profiles: Mapping[str, Mapping[str, object]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return str(self.path) if self.path else "config"

    def default_settings(self) -> Settings:
        """The [defaults] table alone: what an ad-hoc tunnel (no profile) starts from."""
        return {
            k: Setting(self._anchored(k, v), f"{self.label}: defaults.{k}")
            for k, v in self.defaults.items()
        }

    def _anchored(self, key: str, value: object) -> object:
        """A relative path of the file made relative to the file's own directory: it then names
        the same file from any working directory, a systemd unit's (/) among them."""
        if key not in PATH_KEYS or self.path is None:
            return value
        base = os.path.dirname(os.path.abspath(self.path))

        def anchor(item: object) -> object:
            if not isinstance(item, str) or not item or item.startswith("~"):
                return item  # the parser refuses what is not a path, and expands ~
            return os.path.join(base, item)  # an absolute item stays as it is

        return [anchor(i) for i in value] if isinstance(value, list) else anchor(value)

    def settings(self, name: str) -> Settings:
        """The raw settings of profile ``name`` with the defaults beneath them."""
        if name not in self.profiles:
            known = ", ".join(sorted(self.profiles)) or "none"
            where = f" in {self.path}" if self.path else " (no config file found)"
            raise ConfigError(f"unknown profile {clip(name)!r}{where}; known profiles: {known}")
        merged = self.default_settings()
        merged.update(
            {
                k: Setting(self._anchored(k, v), f"{self.label}: tunnels.{name}.{k}")
                for k, v in self.profiles[name].items()
            }
        )
        return merged


def load_config(path: Path, *, required: bool) -> Config:
    """Read and structurally check a config file; a missing optional file is an empty config."""
    try:
        data = read_regular(path, limit=CONFIG_LIMIT, what="config", error=ConfigError)
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{path}: config file not found") from None
        return Config()
    with map_exceptions({UnicodeDecodeError: ConfigError}, f"{path}: not UTF-8"):
        text = data.decode("utf-8")
    import tomllib  # here, not at the top: a start without a config file never needs it

    try:
        parsed = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid TOML: nested too deeply") from None
    return parse_config(parsed, path)


def parse_config(data: Mapping[str, object], path: Path | None = None) -> Config:
    """Check the shape of parsed TOML: top-level tables and the keys and types inside them."""
    label = str(path) if path else "config"
    for key in data:
        if key not in ("defaults", "tunnels"):
            raise ConfigError(f"{label}: {key}: unknown top-level key (expected defaults, tunnels)")
    defaults = _table(data.get("defaults", {}), f"{label}: defaults")
    _check_keys(defaults, f"{label}: defaults")
    tunnels = _table(data.get("tunnels", {}), f"{label}: tunnels")
    profiles: dict[str, Mapping[str, object]] = {}
    for name, body in tunnels.items():
        if not PROFILE_NAME.match(name):
            raise ConfigError(
                f"{label}: tunnels.{shown(name)}: "
                "a profile name uses letters, digits, '.', '_', '-'"
            )
        where = f"{label}: tunnels.{name}"
        profiles[name] = _table(body, where)
        _check_keys(profiles[name], where)
    return Config(path, defaults, profiles)


def _table(value: object, where: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a table, got {shown(value)}")
    return value


def _check_keys(table: Mapping[str, object], where: str) -> None:
    for key, value in table.items():
        if key not in PROFILE_KEYS:
            known = ", ".join(PROFILE_KEYS)
            raise ConfigError(f"{where}.{key}: unknown key (known keys: {known})")
        types = PROFILE_KEYS[key]
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            names = " or ".join(_TYPE_NAMES[t] for t in types)
            raise ConfigError(f"{where}.{key}: expected {names}, got {shown(value)}")


_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    list: "a list of strings",
}


def _target(settings: Settings, parsed: dict[str, Any]) -> Endpoint | None:
    """The target the address keys make, or None for a SOCKS tunnel (which must have none)."""
    given = [key for key in ("to", "target_host", "target_port") if key in parsed]
    if parsed.get("socks"):
        if given:
            raise UsageError(
                f"{settings[given[0]].origin}: a SOCKS tunnel has no target "
                f"(socks is set by {settings['socks'].origin})",
                hint="drop one of them",
                options=(given[0], "socks"),
            )
        return None
    target = parsed.get("to")
    if target is None and ("target_host" not in parsed or "target_port" not in parsed):
        raise UsageError(
            "no target",
            hint="give a PROFILE, to HOST:PORT, target_host and target_port, or socks",
            options=("to", "target_host", "target_port", "socks"),
        )
    return Endpoint(
        parsed.get("target_host", target.host if target else ""),
        parsed.get("target_port", target.port if target else 0),
    )


RUN_MAX_RETRIES = 5  # a command should fail, not wait forever, on a tunnel that stays down


def spec_for(
    config: Config, profile: str | None, overrides: Settings, *, run_mode: bool = False
) -> TunnelSpec:
    """Profile ``profile``'s settings (or the defaults alone) under ``overrides`` (flags, or
    the Python API's keywords), validated once by build_spec."""
    settings = config.settings(profile) if profile else config.default_settings()
    settings.update(overrides)
    return build_spec(settings, name=profile or "", run_mode=run_mode)


def build_spec(settings: Settings, *, name: str = "", run_mode: bool = False) -> TunnelSpec:
    """Validate raw settings (from a profile, flags or both) into a TunnelSpec.

    Each error names where the bad value came from: a file and key, or a flag. In run mode,
    reconnect attempts are bounded unless the settings say otherwise.
    """
    parsed: dict[str, Any] = {}
    for opt in OPTIONS:
        setting = settings.get(opt.key)
        if setting is None:
            continue
        try:
            parsed[opt.key] = opt.parse(setting.value)
        except UsageError as exc:
            problem = exc.message.split(": ", 1)[-1]
            raise ConfigError(
                f"{setting.origin}: {problem}", hint=exc.hint, options=exc.options
            ) from None
    fields: dict[str, Any] = {
        "target": _target(settings, parsed),
        "listen": Endpoint(parsed.get("host", DEFAULT_LISTEN_HOST), parsed.get("port", 0)),
        "name": parsed.get("name", name),
    }
    ssh: dict[str, Any] = {}
    for opt in OPTIONS:
        if opt.field and opt.field != "name" and opt.key in parsed:
            into, attribute = (
                (ssh, opt.field[4:])
                if opt.field.startswith("ssh.")
                else (
                    fields,
                    opt.field,
                )
            )
            into[attribute] = parsed[opt.key]
    if parsed.get("allow") and not parsed.get("socks"):
        raise UsageError(
            f"{settings['allow'].origin}: an allowlist is for a SOCKS tunnel (socks = true)",
            options=("allow", "socks"),
        )
    if fields.get("max_retries") == UNLIMITED:
        fields["max_retries"] = None
    elif "max_retries" not in fields and run_mode:
        fields["max_retries"] = RUN_MAX_RETRIES
    return TunnelSpec(ssh=SshOptions(**ssh), **fields)
